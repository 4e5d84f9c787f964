"""The live alert stream's order: alerts go out in sequence, from the notification when it
carries the alert, and the stream waits (boundedly) at a gap left by a transaction that has
taken a sequence number but not yet committed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from offsite.casework.alerts import GAP_WAIT_S, Alert, AlertHub, Subscription, read_alerts
from offsite.casework.records import CluePublic
from offsite.casework.service import append_alert, clue_id_for, read_clue
from tests.fixtures.gateway import RunningGateway, red_gas_finding, start_gateway

QUIET = {"silent_sweep_s": 3600.0}


async def _clue(gw: RunningGateway, sub: Subscription) -> CluePublic:
    """A clue to write alerts for; its own alert taken off the stream."""
    finding = red_gas_finding()
    assert await gw.runtime.casework.announce(finding, gw.runtime.directory["gas-0001"])
    opened = await _next(sub, 5.0)
    assert opened is not None
    assert opened.type == "clue.opened"
    async with gw.runtime.pool.connection() as conn:
        return await read_clue(conn, clue_id_for(finding.key))


@asynccontextmanager
async def _hub(database_url: str) -> AsyncIterator[AlertHub]:
    """A hub of the test's own, on the test's loop (the API's runs on its own thread)."""
    hub = AlertHub(database_url)
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        yield hub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _next(sub: Subscription, timeout: float) -> Alert | None:  # noqa: ASYNC109
    try:
        return await asyncio.wait_for(sub.get(), timeout)
    except TimeoutError:
        return None


async def test_an_alert_is_sent_from_its_notification_as_the_table_has_it(
    database_url: str,
) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw, _hub(database_url) as hub:
        sub = hub.subscribe()
        clue = await _clue(gw, sub)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await append_alert(conn, "clue.noted", clue, {"note": "x" * 100})
            sent = await _next(sub, 5.0)
            assert sent is not None
            (stored,) = await read_alerts(conn, sent.seq - 1, limit=1)
        assert sent == stored  # same seq, type, instant and body as read back
        assert (sent.type, sent.body["clue"]["id"], sent.body["note"]) == (
            "clue.noted",
            clue.id,
            "x" * 100,
        )
        # too large for a notification: read from the table instead
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await append_alert(conn, "clue.large", clue, {"note": "y" * 10_000})
        large = await _next(sub, 5.0)
        assert large is not None
        assert (large.seq, large.type, len(large.body["note"])) == (
            sent.seq + 1,
            "clue.large",
            10_000,
        )


async def test_a_later_alert_waits_for_an_earlier_one_still_committing(
    database_url: str,
) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw, _hub(database_url) as hub:
        sub = hub.subscribe()
        clue = await _clue(gw, sub)
        async with (
            await psycopg.AsyncConnection.connect(database_url) as slow,
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as quick,
        ):
            await append_alert(slow, "clue.first", clue, {})  # seq N, not committed yet
            await append_alert(quick, "clue.second", clue, {})  # seq N + 1, committed
            assert await _next(sub, GAP_WAIT_S / 3) is None  # held at the gap
            await slow.commit()
            first = await _next(sub, 2.0)
            second = await _next(sub, 2.0)
        assert first is not None
        assert second is not None
        assert (first.type, second.type) == ("clue.first", "clue.second")
        assert second.seq == first.seq + 1


async def test_a_gap_left_by_a_rolled_back_alert_is_passed_over(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw, _hub(database_url) as hub:
        sub = hub.subscribe()
        clue = await _clue(gw, sub)
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await append_alert(conn, "clue.never", clue, {})
            await conn.rollback()
            await conn.set_autocommit(True)
            started = time.monotonic()
            await append_alert(conn, "clue.after", clue, {})
            after = await _next(sub, GAP_WAIT_S + 3.0)
        assert after is not None
        assert after.type == "clue.after"
        assert time.monotonic() - started >= GAP_WAIT_S * 0.9  # it did wait at the gap
        assert await _next(sub, 0.5) is None  # and nothing else came
