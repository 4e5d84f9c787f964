"""The announcer commits without waiting for the log's flush, then flushes on the same
connection before it reports: after a connection lost in between, a group whose commit
survived is not announced twice, and its clue is still reported as opened."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from offsite.casework.directory import DeviceInfo
from offsite.casework.service import Casework, clue_id_for
from offsite.detectors.findings import Finding
from tests.fixtures.gateway import RunningGateway, red_gas_finding, start_gateway

QUIET = {"silent_sweep_s": 3600.0}


Findings = Sequence[tuple[Finding, DeviceInfo]]
Conn = psycopg.AsyncConnection[Any]


def _after_announcing(
    monkeypatch: pytest.MonkeyPatch, then: Callable[[Conn, Findings, list[bool]], Awaitable[None]]
) -> None:
    """Run `then(conn, findings, opened)` after each announcement on the announcer's own
    connection (between its commit and its flush)."""
    real = Casework.announce_many

    async def announce_many(
        self: Casework, findings: Findings, conn: Conn | None = None
    ) -> list[bool]:
        opened = await real(self, findings, conn)
        if conn is not None:  # the announcer's, not the pool's
            await then(conn, findings, opened)
        return opened

    monkeypatch.setattr(Casework, "announce_many", announce_many)


async def _cut(database_url: str, conn: Conn, *statements: sql.Composed) -> None:
    """Run `statements` from another connection, then end `conn`'s as a restart would."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        for statement in statements:
            await db.execute(statement)
        await db.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


async def _alert_types(gw: RunningGateway, finding: Finding) -> list[tuple[str]]:
    async with gw.runtime.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT type FROM alerts WHERE clue_id = %s", (clue_id_for(finding.key),)
        )
        return await cur.fetchall()


async def test_a_connection_lost_before_the_flush_announces_again_and_keeps_the_opening(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries: list[tuple[list[bool], str]] = []

    async def record_then_cut(conn: Conn, _: Findings, opened: list[bool]) -> None:
        row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
        tries.append((opened, row[0] if row else ""))
        if len(tries) == 1:
            # committed, not yet flushed: the connection goes, as in a database restart
            await _cut(database_url, conn)

    finding = red_gas_finding()
    async with start_gateway(database_url, None, **QUIET) as gw:
        _after_announcing(monkeypatch, record_then_cut)
        device = gw.runtime.directory["gas-0001"]
        assert await gw.runtime.announcer.announce([(finding, device)]) == [True]
        monkeypatch.undo()
        # the first try opened the clue and lost its connection at the flush; the second
        # found its clue recorded, did not announce it again, and reports it opened
        assert tries == [([True], "off")]
        assert await _alert_types(gw, finding) == [("clue.opened",)]


async def test_a_commit_lost_before_the_flush_is_announced_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if the database had restarted and lost the commit: the first try's rows are
    removed before its connection goes. The second try finds no clue and announces again."""
    tries: list[list[bool]] = []

    async def record_then_lose(conn: Conn, findings: Findings, opened: list[bool]) -> None:
        tries.append(opened)
        if len(tries) == 1:
            clue = sql.Literal(clue_id_for(findings[0][0].key))
            removed = [
                sql.SQL("DELETE FROM {} WHERE clue_id = {}").format(sql.Identifier(table), clue)
                for table in ("alerts", "clue_events", "clue_sources")
            ]
            removed.append(sql.SQL("DELETE FROM clues WHERE id = {}").format(clue))
            await _cut(database_url, conn, *removed)

    finding = red_gas_finding()
    async with start_gateway(database_url, None, **QUIET) as gw:
        _after_announcing(monkeypatch, record_then_lose)
        device = gw.runtime.directory["gas-0001"]
        assert await gw.runtime.announcer.announce([(finding, device)]) == [True]
        monkeypatch.undo()
        assert tries == [[True], [True]]
        assert await _alert_types(gw, finding) == [("clue.opened",)]


async def test_an_announcement_is_on_disk_when_reported(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed without the flush, reported after it: once `announce` returns, the log is
    on disk past the announcement's commit (without the flush, the log writer would get
    there within its 200 ms delay, after the report)."""
    committed: list[str] = []

    async def mark(conn: Conn, _: Findings, __: list[bool]) -> None:
        row = await (await conn.execute("SELECT pg_current_wal_insert_lsn()::text")).fetchone()
        assert row is not None
        committed.append(row[0])

    async with start_gateway(database_url, None, **QUIET) as gw:
        device = gw.runtime.directory["gas-0001"]
        _after_announcing(monkeypatch, mark)
        for n in range(5):
            finding = red_gas_finding()
            finding = dataclasses.replace(finding, episode_start=finding.at - timedelta(hours=n))
            assert await gw.runtime.announcer.announce([(finding, device)]) == [True]
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                cur = await conn.execute(
                    "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (committed[-1],)
                )
                assert await cur.fetchone() == (True,)
        assert len(committed) == 5
