"""Under light load the writers wait a little for more before a transaction: readings that
trickle in are written together, not one transaction each (each costs the gateway about a
millisecond however small), and none waits longer than the linger."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import psycopg
import pytest

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, gas_reading, publish, start_gateway

MESSAGES = 12


async def _all_stored(url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM telemetry_gas")).fetchone()
    return row == (MESSAGES,)


async def _trickle(port: int) -> None:
    """One message every 20 ms, from one device."""
    base = int(datetime.now(UTC).timestamp() * 1000) - 60_000
    for seq in range(MESSAGES):
        await asyncio.to_thread(
            publish, port, "offsite/v1/gas/gas-0001/telemetry", [gas_reading(base + seq, seq, 1.0)]
        )
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("linger_s", "most", "least"), [(1.0, 3, 1), (0.0, None, 6)])
async def test_a_trickle_is_written_in_as_few_transactions_as_the_linger_allows(
    database_url: str,
    broker: BrokerProcess,
    linger_s: float,
    most: int | None,
    least: int,
) -> None:
    async with start_gateway(database_url, broker.url, ingest_write_linger_s=linger_s) as gw:
        registry = gw.runtime.metrics.registry

        def batches() -> float:
            return registry.get_sample_value("offsite_ingest_batches_total") or 0.0

        before = batches()
        started = time.monotonic()
        await _trickle(broker.port)
        await eventually(lambda: _all_stored(database_url), timeout=10)
        took = time.monotonic() - started
        written = batches() - before
    assert written >= least
    if most is not None:
        assert written <= most
        # the first reading waited for the linger, not for ever
        assert took < linger_s + 5
