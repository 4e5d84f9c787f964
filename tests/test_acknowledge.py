"""Acknowledging an alert (签收) from the duty console, the clue list's domain filter and
the commands of a case, through the HTTP API and the live stream with a real database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import websockets
from psycopg import sql

from offsite.casework import ledger
from tests.fixtures.gateway import RunningGateway, start_gateway

QUIET = {"silent_sweep_s": 3600.0}
"""No silence findings from the never-seen demo devices while a test runs."""


async def _report(gw: RunningGateway, subject_id: str, matter_id: str, severity: str) -> Any:
    created = await gw.http.post(
        "/api/v1/clues",
        json={
            "channel": "hotline_12345",
            "subject_id": subject_id,
            "matter_id": matter_id,
            "description": "reported by a resident",
            "reported_at": datetime.now(UTC).isoformat(),
            "severity": severity,
        },
    )
    assert created.status_code == 201, created.text
    return created.json()["clue"]


async def _ledger(url: str, object_id: str) -> list[ledger.Entry]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT {} FROM ledger WHERE object_id = %s ORDER BY seq").format(
                ledger.ENTRY_COLUMNS
            ),
            (object_id,),
        )
        return [ledger.entry_from_row(r) for r in await cur.fetchall()]


async def _next(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return message


async def test_an_acknowledgement_is_kept_once_ledgered_and_broadcast(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        clue = await _report(gw, "rest-hanjiang-noodle", "gas-safety", "red")
        assert clue["acknowledged_at"] is None
        assert clue["acknowledged_by"] is None
        async with websockets.connect(gw.ws_url()) as ws:
            hello = await _next(ws)
            first = await gw.http.post(f"/api/v1/clues/{clue['id']}/acknowledge")
            assert first.status_code == 200, first.text
            acked = first.json()
            assert acked["acknowledged_by"] == "admin:bootstrap"
            assert acked["acknowledged_at"] is not None
            # every open console hears of it, as the next alert in the sequence
            live = await _next(ws)
            assert live["type"] == "clue.acknowledged"
            assert live["seq"] == hello["last_seq"] + 1
            assert live["clue"]["id"] == clue["id"]
            assert live["clue"]["acknowledged_at"] == acked["acknowledged_at"]
            assert live["actor"] == "admin:bootstrap"

            # a second acknowledgement (another console) keeps the first who and when
            second = await gw.http.post(f"/api/v1/clues/{clue['id']}/acknowledge")
            assert second.status_code == 200, second.text
            assert second.json()["acknowledged_at"] == acked["acknowledged_at"]
            assert second.json()["acknowledged_by"] == "admin:bootstrap"
            # ...and is not announced again
            quiet = await gw.http.get("/api/v1/alerts", params={"after": live["seq"]})
            assert quiet.json() == []

        # the status is untouched; the step history says who acknowledged it, once
        assert acked["status"] == "new"
        steps = [e for e in acked["events"] if e["action"] == "acknowledged"]
        assert len(steps) == 1
        assert steps[0]["actor"] == "admin:bootstrap"
        assert (steps[0]["from_status"], steps[0]["to_status"]) == ("new", "new")
        entries = [e for e in await _ledger(database_url, clue["id"]) if "acknowledged" in e.action]
        assert [e.action for e in entries] == ["clue.acknowledged"]
        assert entries[0].actor == "admin:bootstrap"
        assert entries[0].payload is not None
        assert json.loads(entries[0].payload)["status"] == "new"
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                sql.SQL("SELECT {} FROM ledger ORDER BY seq").format(ledger.ENTRY_COLUMNS)
            )
            chain = [ledger.entry_from_row(r) for r in await cur.fetchall()]
        assert ledger.chain_problems(chain) == []  # the chain still holds with the new entry

        # a reconnecting console resumes and learns the acknowledgement from the sequence
        async with websockets.connect(gw.ws_url(after=hello["last_seq"])) as ws:
            assert (await _next(ws))["type"] == "hello"
            resumed = await _next(ws)
            assert resumed["type"] == "clue.acknowledged"
            assert resumed["clue"]["acknowledged_by"] == "admin:bootstrap"

        # the lifecycle goes on as before, and the acknowledgement stays
        triaged = await gw.http.post(f"/api/v1/clues/{clue['id']}/triage", json={})
        assert triaged.status_code == 200, triaged.text
        assert triaged.json()["acknowledged_at"] == acked["acknowledged_at"]


async def test_acknowledging_an_unknown_clue_is_404(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        before = (await gw.http.get("/api/v1/alerts")).json()
        answer = await gw.http.post("/api/v1/clues/clue_doesnotexist/acknowledge")
        assert answer.status_code == 404
        assert "clue_doesnotexist" in answer.json()["detail"]
        assert (await gw.http.get("/api/v1/alerts")).json() == before
        refused = await gw.http.post(
            "/api/v1/clues/clue_doesnotexist/acknowledge",
            headers={"Authorization": "Bearer wrong"},
        )
        assert refused.status_code == 401


async def test_clues_filter_by_domain(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        gas = await _report(gw, "rest-hanjiang-noodle", "gas-safety", "orange")
        lift = await _report(gw, "elev-jinhui-garden-3", "special-equipment", "yellow")
        assert (gas["domain"], lift["domain"]) == ("gas", "equipment")

        async def ids(**params: str) -> list[str]:
            found = await gw.http.get("/api/v1/clues", params=params)
            assert found.status_code == 200, found.text
            return [c["id"] for c in found.json()]

        assert await ids(domain="gas") == [gas["id"]]
        assert await ids(domain="equipment") == [lift["id"]]
        assert await ids(domain="video") == []
        assert sorted(await ids()) == sorted([gas["id"], lift["id"]])
        assert await ids(domain="equipment", severity="orange") == []


async def test_the_commands_of_a_case_are_listed(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        clue = await _report(gw, "rest-hanjiang-noodle", "gas-safety", "red")
        escalated = await gw.http.post(f"/api/v1/clues/{clue['id']}/escalate", json={})
        assert escalated.status_code == 200, escalated.text
        case_id = escalated.json()["case_id"]
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            # as `POST /api/v1/commands` records one (no broker in this test to send it)
            await conn.execute(
                "INSERT INTO device_commands (id, device_id, case_id, command, params, reason,"
                " issued_by, issued_at, deadline_at, status) VALUES"
                " ('cmd_test1', 'gas-0001', %s, 'close_valve', '{}', 'leak', 'admin:bootstrap',"
                " now(), now() + interval '1 minute', 'sent'),"
                " ('cmd_test2', 'gas-0002', NULL, 'close_valve', '{}', NULL, 'admin:bootstrap',"
                " now(), now() + interval '1 minute', 'sent')",
                (case_id,),
            )
        of_case = (await gw.http.get("/api/v1/commands", params={"case_id": case_id})).json()
        assert [(c["id"], c["command"], c["reason"]) for c in of_case] == [
            ("cmd_test1", "close_valve", "leak")
        ]
        of_device = await gw.http.get("/api/v1/commands", params={"device_id": "gas-0002"})
        assert [c["id"] for c in of_device.json()] == ["cmd_test2"]
        assert len((await gw.http.get("/api/v1/commands")).json()) == 2
