"""The gateway writes several batches at once, on several connections: whatever order
their commits land in, every reading is stored once and a device's latest state wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from offsite.gateway.columns import GasColumns
from offsite.gateway.equipment_payloads import BoilerReading, EquipmentReading
from offsite.gateway.payloads import GasWire
from offsite.ingest.writer import StatusChange, write_batch

NOW = datetime.now(UTC).replace(microsecond=0)
NOW_MS = int(NOW.timestamp() * 1000)


def _readings(seqs: range, devices: int = 50) -> GasColumns:
    return GasColumns.of(
        [
            (f"gas-{seq % devices:04d}", GasWire(ts=NOW_MS + seq, seq=seq, lel_pct=2.0))
            for seq in seqs
        ]
    )


async def test_overlapping_batches_written_at_once_store_each_reading_once(
    database_url: str,
) -> None:
    """Two batches sharing readings (a redelivery racing the original), committed at once
    on two connections: the second waits on the first's rows, then skips them."""
    first, second = _readings(range(0, 3000)), _readings(range(2000, 5000))
    async with (
        await psycopg.AsyncConnection.connect(database_url) as one,
        await psycopg.AsyncConnection.connect(database_url) as two,
    ):
        results = await asyncio.gather(
            write_batch(one, "postgres", first, NOW, [], []),
            write_batch(two, "postgres", second, NOW, [], []),
        )
    assert sorted((r.stored, r.duplicates) for r in results) == [(2000, 1000), (3000, 0)]
    with psycopg.connect(database_url) as conn:
        row: Any = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq)), min(seq), max(seq)"
            " FROM telemetry_gas"
        ).fetchone()
        assert tuple(row) == (5000, 5000, 0, 4999)
        status = conn.execute(
            "SELECT last_seq FROM device_status WHERE device_id = 'gas-0049'"
        ).fetchone()
        assert status == (4999,)


async def test_an_earlier_status_committed_later_does_not_undo_a_later_one(
    database_url: str,
) -> None:
    earlier, later = NOW, NOW + timedelta(seconds=1)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        online = [StatusChange("gas-0001", "online", later)]
        await write_batch(conn, "postgres", (), later, [], online)
        await write_batch(
            conn, "postgres", (), earlier, [], [StatusChange("gas-0001", "offline", earlier)]
        )
        cur = await conn.execute(
            "SELECT status, status_at FROM device_status WHERE device_id = 'gas-0001'"
        )
        assert await cur.fetchone() == ("online", later)


async def test_a_redelivered_equipment_reading_sends_the_whole_batch_the_staged_way(
    database_url: str,
) -> None:
    """A batch of gas and equipment readings, one equipment reading stored before: the
    direct COPY refuses the batch, which is redone staged; each reading is stored once,
    the gas readings of the same batch included."""

    def boilers(seqs: range) -> list[tuple[str, EquipmentReading]]:
        return [
            (
                "boiler-0001",
                BoilerReading(ts=NOW + timedelta(milliseconds=seq), seq=seq, pressure_mpa=1.0),
            )
            for seq in seqs
        ]

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        first = await write_batch(
            conn, "postgres", _readings(range(0, 100)), NOW, [], [], boilers(range(0, 10))
        )
        second = await write_batch(
            conn, "postgres", _readings(range(100, 200)), NOW, [], [], boilers(range(5, 15))
        )
        assert (first.stored, first.stored_equipment) == (100, 10)
        assert (second.stored, second.duplicates) == (100, 0)
        assert (second.stored_equipment, second.duplicates_equipment) == (5, 5)
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT seq), max(seq) FROM telemetry_equipment"
        )
        assert await cur.fetchone() == (15, 15, 14)
        cur = await conn.execute("SELECT count(*) FROM telemetry_gas")
        assert await cur.fetchone() == (200,)
