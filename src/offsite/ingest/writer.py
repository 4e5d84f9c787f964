"""Batched writes: one transaction per batch, COPY for readings, never a round trip each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import psycopg
from numpy.typing import NDArray

from offsite.gateway.columns import GasColumns, GasLike
from offsite.gateway.decode import Refusal
from offsite.gateway.equipment_payloads import (
    EQUIPMENT_FIELDS,
    EQUIPMENT_READINGS,
    EquipmentReading,
)
from offsite.gateway.payloads import DeviceStatus
from offsite.ingest.arrays import Float8Array, Int8Array, TextArray
from offsite.ingest.schema import Flavour

GAS_COLUMNS: Final = "time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at"
"""The columns of `GasColumns.copy_data`, in its order."""
_COLUMNS = GAS_COLUMNS
# The staging table lives as long as the connection and empties at each commit.
_CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_gas_stage"
    " (LIKE telemetry_gas INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY telemetry_gas_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_DIRECT = f"COPY telemetry_gas ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_INSERT = (
    f"INSERT INTO telemetry_gas ({_COLUMNS}) SELECT {_COLUMNS} FROM telemetry_gas_stage"  # noqa: S608 - constants
    " ON CONFLICT DO NOTHING"
)


# Plain PostgreSQL: the per-minute aggregates of what a batch inserted, appended to the
# rollup deltas in the same transaction (0006_rollup_deltas.postgres.sql says why).
_DELTA_COLUMNS = "device_id, bucket, readings, lel_sum, lel_min, lel_max, co_max"
_ROLLUP_STAGED = (
    f" rollup AS (INSERT INTO telemetry_gas_1m_delta ({_DELTA_COLUMNS})"  # noqa: S608 - constants
    " SELECT device_id, date_bin('1 minute', time, TIMESTAMPTZ '2000-01-01'), count(*),"
    " sum(lel_pct::float8), min(lel_pct), max(lel_pct), max(co_ppm) FROM inserted GROUP BY 1, 2)"
)
_INSERT_DELTAS = (
    f"INSERT INTO telemetry_gas_1m_delta ({_DELTA_COLUMNS})"  # noqa: S608 - constants
    " SELECT d, TIMESTAMPTZ 'epoch' + m * INTERVAL '1 minute', c, s, lo::float4, hi::float4,"
    " NULLIF(co, 'NaN')::float4 FROM unnest(%b::text[], %b::int8[], %b::int8[], %b::float8[],"
    " %b::float8[], %b::float8[], %b::float8[]) AS u(d, m, c, s, lo, hi, co)"
)
"""An INSERT, not a COPY: it goes in the same round trip as the rest (pipeline mode)."""


# TimescaleDB keeps its rollups itself (continuous aggregates).
_MERGE_TIMESCALEDB = _INSERT
_RETURNING = " RETURNING time, device_id, lel_pct, co_ppm"
_MERGE_POSTGRES = "".join(
    (
        "WITH inserted AS (",
        _INSERT,
        _RETURNING,
        "),",
        _ROLLUP_STAGED,
        " SELECT count(*) FROM inserted",
    )
)
_STATUS_UPSERT = (
    " ON CONFLICT (device_id) DO UPDATE SET"
    " last_reading_ts = greatest(s.last_reading_ts, excluded.last_reading_ts),"
    " last_seq = greatest(s.last_seq, excluded.last_seq),"
    " last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at)"
)
_STATUS_INTO = "INSERT INTO device_status AS s (device_id, last_reading_ts, last_seq, last_seen_at)"
# in device order, as every status write is: two batches committing at once then take
# their row locks in the same order and never deadlock
_STATUS = "".join(
    (
        _STATUS_INTO,
        " SELECT device_id, max(time), max(seq), max(received_at) FROM telemetry_gas_stage",
        " GROUP BY device_id ORDER BY device_id",
        _STATUS_UPSERT,
    )
)
_STATUS_ARRAYS = "".join(
    (
        _STATUS_INTO,
        " SELECT d, t, q, %b FROM unnest(%b::text[], %b::timestamptz[], %b::int8[]) AS u(d, t, q)",
        _STATUS_UPSERT,
    )
)
_STATUS_ARRAYS_US = "".join(
    (
        _STATUS_INTO,
        # event times as epoch microseconds: exact, and no datetime made per device
        " SELECT d, TIMESTAMPTZ 'epoch' + t * INTERVAL '1 microsecond', q, %b",
        " FROM unnest(%b::text[], %b::int8[], %b::int8[]) AS u(d, t, q)",
        _STATUS_UPSERT,
    )
)

_EQUIPMENT_COLUMNS = f"time, device_id, seq, kind, {', '.join(EQUIPMENT_FIELDS)}, received_at"
_EQUIPMENT_TYPES = [
    "timestamptz",
    "text",
    "int8",
    "text",
    *("float4", "float4", "int4", "text", "bool", "bool", "bool", "float4", "bool"),
    *("float4", "float4", "float4", "float4", "float4", "float4"),
    "timestamptz",
]
_EQUIPMENT_COPY = f"COPY telemetry_equipment ({_EQUIPMENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_EQUIPMENT_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_equipment_stage"
    " (LIKE telemetry_equipment INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_EQUIPMENT_COPY_STAGE = (
    f"COPY telemetry_equipment_stage ({_EQUIPMENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
)
_EQUIPMENT_MERGE = (
    f"INSERT INTO telemetry_equipment ({_EQUIPMENT_COLUMNS})"  # noqa: S608 - constants
    f" SELECT {_EQUIPMENT_COLUMNS} FROM telemetry_equipment_stage ON CONFLICT DO NOTHING"
)
_KIND_OF = {model: kind for kind, model in EQUIPMENT_READINGS.items()}


@dataclass(frozen=True, slots=True)
class BatchResult:
    stored: int
    duplicates: int
    quarantined: int
    stored_equipment: int = 0
    duplicates_equipment: int = 0


@dataclass(frozen=True, slots=True)
class StatusChange:
    device_id: str
    status: DeviceStatus
    at: datetime


async def write_batch(
    conn: psycopg.AsyncConnection[Any],
    flavour: Flavour,
    gas: Sequence[tuple[str, GasLike]] | GasColumns,
    received_at: datetime,
    refusals: Sequence[Refusal],
    statuses: Sequence[StatusChange],
    equipment: Sequence[tuple[str, EquipmentReading]] = (),
) -> BatchResult:
    """Store a batch atomically. Readings already stored (same device, time, seq) are
    skipped, so a message the broker redelivers after a crash is stored once.

    The usual batch holds no reading seen before, and goes straight into the table with one
    COPY; the unique index refuses it whole if it does hold one (a redelivery), and only then
    does the batch take the slower staged path that skips the duplicates. Staging every
    batch cost the database about four times the COPY alone."""
    cols = gas if isinstance(gas, GasColumns) else GasColumns.of(gas)
    data = cols.copy_data(received_at) if len(cols) else None
    batch = _Batch(cols, data, received_at, refusals, statuses, equipment)
    try:
        return await _write(conn, flavour, batch, staged=False)
    except psycopg.errors.UniqueViolation:
        # a reading stored before (a redelivery): the whole batch again, staged
        return await _write(conn, flavour, batch, staged=True)


@dataclass(frozen=True, slots=True)
class _Batch:
    cols: GasColumns
    data: bytes | None
    received_at: datetime
    refusals: Sequence[Refusal]
    statuses: Sequence[StatusChange]
    equipment: Sequence[tuple[str, EquipmentReading]]


async def _write(
    conn: psycopg.AsyncConnection[Any], flavour: Flavour, b: _Batch, *, staged: bool
) -> BatchResult:
    """One transaction: the readings by COPY, then everything else in one round trip
    (pipeline mode), then the commit."""
    stored = stored_equipment = 0
    async with conn.transaction():
        if b.equipment:
            stored_equipment = await _write_equipment(
                conn, b.equipment, b.received_at, staged=staged
            )
        if b.data is not None:
            if staged:
                stored = await _write_staged(conn, flavour, b.data)
            else:
                async with conn.cursor().copy(_COPY_DIRECT) as copy:
                    await copy.write(b.data)
                stored = len(b.cols)
        async with conn.pipeline():
            if b.data is not None and not staged:
                await _after_direct(conn, flavour, b.cols, b.received_at)
            if b.refusals:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO quarantine (received_at, topic, device_id, reason, payload)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        [
                            (b.received_at, r.topic, r.device_id, r.reason, r.payload)
                            for r in b.refusals
                        ],
                    )
            for change in b.statuses:
                await conn.execute(
                    "INSERT INTO device_status AS s (device_id, status, status_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET"
                    " status = excluded.status, status_at = excluded.status_at"
                    # batches commit in any order (several are written at once): a later
                    # change already stored is never undone by an earlier one
                    " WHERE s.status_at IS NULL OR s.status_at <= excluded.status_at",
                    (change.device_id, change.status, change.at),
                )
    return BatchResult(
        stored,
        len(b.cols) - stored,
        len(b.refusals),
        stored_equipment,
        len(b.equipment) - stored_equipment,
    )


async def _write_equipment(
    conn: psycopg.AsyncConnection[Any],
    equipment: Sequence[tuple[str, EquipmentReading]],
    received_at: datetime,
    *,
    staged: bool,
) -> int:
    """Equipment readings: the same direct COPY and staged path as gas (a reading stored
    before makes the direct COPY refuse the whole batch, which `write_batch` then redoes
    staged), at the far lower rates equipment reports at, so without the gas path's column
    tricks."""
    rows = [
        (
            r.ts,
            device_id,
            r.seq,
            _KIND_OF[type(r)],
            *(getattr(r, name, None) for name in EQUIPMENT_FIELDS),
            received_at,
        )
        for device_id, r in equipment
    ]
    if not staged:
        async with conn.cursor().copy(_EQUIPMENT_COPY) as copy:
            copy.set_types(_EQUIPMENT_TYPES)
            for row in rows:
                await copy.write_row(row)
        stored = len(rows)
    else:
        await conn.execute(_EQUIPMENT_STAGE)
        async with conn.cursor().copy(_EQUIPMENT_COPY_STAGE) as copy:
            copy.set_types(_EQUIPMENT_TYPES)
            for row in rows:
                await copy.write_row(row)
        cur = await conn.execute(_EQUIPMENT_MERGE)
        stored = cur.rowcount
    last: dict[str, tuple[datetime, int]] = {}
    for device_id, r in equipment:
        seen = last.get(device_id)
        last[device_id] = (
            (r.ts, r.seq) if seen is None else (max(seen[0], r.ts), max(seen[1], r.seq))
        )
    ids = sorted(last)  # device order: see _STATUS
    await conn.execute(
        _STATUS_ARRAYS, (received_at, ids, [last[d][0] for d in ids], [last[d][1] for d in ids])
    )
    return stored


async def _write_staged(conn: psycopg.AsyncConnection[Any], flavour: Flavour, data: bytes) -> int:
    """The batch holds readings stored before: insert what is new, skip the rest."""
    await conn.execute(_CREATE_STAGE)
    async with conn.cursor().copy(_COPY) as copy:
        await copy.write(data)
    if flavour == "timescaledb":
        cur = await conn.execute(_MERGE_TIMESCALEDB)
        stored = cur.rowcount
    else:
        cur = await conn.execute(_MERGE_POSTGRES)
        row = await cur.fetchone()
        stored = int(row[0]) if row else 0
    await conn.execute(_STATUS)
    return stored


async def _after_direct(
    conn: psycopg.AsyncConnection[Any], flavour: Flavour, cols: GasColumns, received_at: datetime
) -> None:
    """Device status, and on plain PostgreSQL the rollups, for a batch stored whole:
    aggregated here, so the database gets one row per device and bucket."""
    code = cols.code.astype(np.int64)
    # the newest reading of each device: last of its run when sorted by (device, time)
    order = np.lexsort((cols.ts_us, code))
    ends = order[np.flatnonzero(np.diff(code[order], append=len(cols.devices)))]
    last_seq = np.full(len(cols.devices), -1, np.int64)
    np.maximum.at(last_seq, code, cols.seq)
    by_id = np.array(sorted(range(len(cols.devices)), key=cols.devices.__getitem__), np.int64)
    names = [d.encode() for d in cols.devices]
    await conn.execute(
        _STATUS_ARRAYS_US,
        (
            received_at,
            TextArray(by_id, names),
            Int8Array(cols.ts_us[ends[by_id]]),
            Int8Array(last_seq[by_id]),
        ),
    )
    if flavour == "postgres":
        await _append_rollup_deltas(conn, cols, code, names)


async def _append_rollup_deltas(
    conn: psycopg.AsyncConnection[Any],
    cols: GasColumns,
    code: NDArray[np.int64],
    names: Sequence[bytes],
) -> None:
    """One delta row per device and minute of the batch."""
    # Sums run over the values as stored (real), so that a rollup equals the aggregate of the
    # raw table to the last bit.
    lel = cols.lel_pct.astype(np.float32).astype(np.float64)
    co = cols.co_ppm.astype(np.float32).astype(np.float64)
    minutes = np.floor_divide(cols.ts_ms, 60_000)
    first = int(minutes.min())
    keys, slot = np.unique(code * (1 << 32) + (minutes - first), return_inverse=True)
    n = len(keys)
    count = np.bincount(slot, minlength=n)
    total = np.bincount(slot, weights=lel, minlength=n)
    low = np.full(n, np.inf)
    np.minimum.at(low, slot, lel)
    high = np.full(n, -np.inf)
    np.maximum.at(high, slot, lel)
    co_max = np.full(n, np.nan)
    np.fmax.at(co_max, slot, co)  # fmax skips the NaN of readings without CO
    key_minute = (keys & 0xFFFFFFFF) + first
    await conn.execute(
        _INSERT_DELTAS,
        (
            TextArray(keys >> 32, names),
            Int8Array(key_minute),
            Int8Array(count),
            Float8Array(np.asarray(total, np.float64)),
            Float8Array(low),
            Float8Array(high),
            Float8Array(co_max),
        ),
    )
