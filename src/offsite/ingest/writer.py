"""Batched writes: one transaction per batch, COPY for readings, never a round trip each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from offsite.gateway.decode import Refusal
from offsite.gateway.payloads import DeviceStatus, GasReading

_STAGE = "telemetry_gas_stage"
_COLUMNS = "time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at"


@dataclass(frozen=True, slots=True)
class BatchResult:
    stored: int
    duplicates: int
    quarantined: int


@dataclass(frozen=True, slots=True)
class StatusChange:
    device_id: str
    status: DeviceStatus
    at: datetime


async def write_batch(
    conn: psycopg.AsyncConnection[Any],
    gas: Sequence[tuple[str, GasReading]],
    received_at: datetime,
    refusals: Sequence[Refusal],
    statuses: Sequence[StatusChange],
) -> BatchResult:
    """Store a batch atomically. Readings already stored (same device, time, seq) are
    skipped, so a message the broker redelivers after a crash is stored once."""
    stored = 0
    async with conn.transaction():
        if gas:
            # The staging table lives as long as the connection and empties at commit.
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE}"
                " (LIKE telemetry_gas INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            async with conn.cursor().copy(
                f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(
                    ["timestamptz", "text", "int8", "float4", "float4", "text", "text", "timestamptz"]
                )
                for device_id, r in gas:
                    await copy.write_row(
                        (r.ts, device_id, r.seq, r.lel_pct, r.co_ppm, r.valve, r.fault, received_at)
                    )
            cur = await conn.execute(
                f"INSERT INTO telemetry_gas ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGE}"
                " ON CONFLICT DO NOTHING"
            )
            stored = cur.rowcount
            await conn.execute(
                "INSERT INTO device_status AS s (device_id, last_reading_ts, last_seq, last_seen_at)"
                f" SELECT device_id, max(time), max(seq), max(received_at) FROM {_STAGE}"
                " GROUP BY device_id"
                " ON CONFLICT (device_id) DO UPDATE SET"
                " last_reading_ts = greatest(s.last_reading_ts, excluded.last_reading_ts),"
                " last_seq = greatest(s.last_seq, excluded.last_seq),"
                " last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at)"
            )
        if refusals:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO quarantine (received_at, topic, device_id, reason, payload)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [(received_at, r.topic, r.device_id, r.reason, r.payload) for r in refusals],
                )
        for change in statuses:
            await conn.execute(
                "INSERT INTO device_status AS s (device_id, status, status_at)"
                " VALUES (%s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET"
                " status = excluded.status, status_at = excluded.status_at",
                (change.device_id, change.status, change.at),
            )
    return BatchResult(stored, len(gas) - stored, len(refusals))
