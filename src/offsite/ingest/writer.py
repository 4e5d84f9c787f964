"""Batched writes: one transaction per batch, COPY for readings, never a round trip each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from offsite.gateway.decode import Refusal
from offsite.gateway.payloads import DeviceStatus, GasReading
from offsite.ingest.schema import Flavour

_COLUMNS = "time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at"
# The staging table lives as long as the connection and empties at each commit.
_CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_gas_stage"
    " (LIKE telemetry_gas INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY telemetry_gas_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_TYPES = ["timestamptz", "text", "int8", "float4", "float4", "text", "text", "timestamptz"]
_INSERT = (
    f"INSERT INTO telemetry_gas ({_COLUMNS}) SELECT {_COLUMNS} FROM telemetry_gas_stage"  # noqa: S608 - constants
    " ON CONFLICT DO NOTHING"
)


def _rollup(name: str, width: str) -> str:
    """Add the readings a batch inserted to one accumulator table (plain PostgreSQL).
    Rows go in key order so that concurrent workers cannot deadlock on them."""
    return (
        f" rollup_{name} AS (INSERT INTO telemetry_gas_{name}_acc AS a"  # noqa: S608 - constants
        " (device_id, bucket, readings, lel_sum, lel_min, lel_max, co_max)"
        f" SELECT device_id, date_bin('{width}', time, TIMESTAMPTZ '2000-01-01'), count(*),"
        " sum(lel_pct), min(lel_pct), max(lel_pct), max(co_ppm) FROM inserted"
        " GROUP BY 1, 2 ORDER BY 1, 2"
        " ON CONFLICT (device_id, bucket) DO UPDATE SET readings = a.readings + excluded.readings,"
        " lel_sum = a.lel_sum + excluded.lel_sum, lel_min = least(a.lel_min, excluded.lel_min),"
        " lel_max = greatest(a.lel_max, excluded.lel_max),"
        " co_max = greatest(a.co_max, excluded.co_max))"
    )


# TimescaleDB keeps its rollups itself (continuous aggregates).
_MERGE_TIMESCALEDB = _INSERT
_RETURNING = " RETURNING time, device_id, lel_pct, co_ppm"
_MERGE_POSTGRES = "".join(
    (
        "WITH inserted AS (",
        _INSERT,
        _RETURNING,
        "),",
        _rollup("1m", "1 minute"),
        ",",
        _rollup("1h", "1 hour"),
        " SELECT count(*) FROM inserted",
    )
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
    flavour: Flavour,
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
            if flavour == "timescaledb":
                cur = await conn.execute(_MERGE_TIMESCALEDB)
                stored = cur.rowcount
            else:
                cur = await conn.execute(_MERGE_POSTGRES)
                row = await cur.fetchone()
                stored = int(row[0]) if row else 0
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
