"""Batched writes: one transaction per batch, COPY for readings, never a round trip each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from offsite.gateway.decode import Refusal
from offsite.gateway.payloads import DeviceStatus, GasReading

_COLUMNS = "time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at"
# The staging table lives as long as the connection and empties at each commit.
_CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_gas_stage"
    " (LIKE telemetry_gas INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY telemetry_gas_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_TYPES = ["timestamptz", "text", "int8", "float4", "float4", "text", "text", "timestamptz"]
_MERGE = (
    f"INSERT INTO telemetry_gas ({_COLUMNS}) SELECT {_COLUMNS} FROM telemetry_gas_stage"  # noqa: S608 - constants
    " ON CONFLICT DO NOTHING"
)
_STATUS = (
    "INSERT INTO device_status AS s (device_id, last_reading_ts, last_seq, last_seen_at)"
    " SELECT device_id, max(time), max(seq), max(received_at) FROM telemetry_gas_stage"
    " GROUP BY device_id ON CONFLICT (device_id) DO UPDATE SET"
    " last_reading_ts = greatest(s.last_reading_ts, excluded.last_reading_ts),"
    " last_seq = greatest(s.last_seq, excluded.last_seq),"
    " last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at)"
)


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
            await conn.execute(_CREATE_STAGE)
            async with conn.cursor().copy(_COPY) as copy:
                copy.set_types(_TYPES)
                for device_id, r in gas:
                    await copy.write_row(
                        (r.ts, device_id, r.seq, r.lel_pct, r.co_ppm, r.valve, r.fault, received_at)
                    )
            cur = await conn.execute(_MERGE)
            stored = cur.rowcount
            await conn.execute(_STATUS)
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
