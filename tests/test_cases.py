"""The case lifecycle, judicial hand-over and tasks, through the HTTP API with a real
database; cases are filed by a red detector finding handed to casework as the runtime would."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
import websockets
from psycopg import sql

from offsite.casework import cases as case_lifecycle
from offsite.casework import ledger
from offsite.casework.service import clue_id_for
from tests.fixtures.gateway import RunningGateway, red_gas_finding, start_gateway

GAS_LEGAL_BASIS = [
    "城鎮燃氣管理條例 (State Council Decree No. 583)",
    "GB/T 50493-2019 Standard for design of detection and alarm for combustible and toxic gas"
    " in petrochemical industry",
    "GB 15322.2 Combustible gas detectors, part 2: household",
]
"""The gas-safety matter's legal basis in the demo registry: a decision's default."""
QUIET = {"silent_sweep_s": 3600.0}
"""No silence findings from the never-seen demo devices while a test runs."""


async def _entries(url: str) -> list[ledger.Entry]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT {} FROM ledger ORDER BY seq").format(ledger.ENTRY_COLUMNS)
        )
        return [ledger.entry_from_row(r) for r in await cur.fetchall()]


async def _red_case(gw: RunningGateway) -> tuple[str, str]:
    """A red gas clue on gas-0001 files a case with housing: (case id, clue id)."""
    finding = red_gas_finding()
    clue_id = await gw.runtime.casework.handle(finding, gw.runtime.directory["gas-0001"])
    clue = (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()
    return str(clue["case_id"]), clue_id


async def test_a_case_goes_through_its_whole_life(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        case_id, clue_id = await _red_case(gw)

        async def post(action: str, **body: Any) -> Any:
            return await gw.http.post(f"/api/v1/cases/{case_id}/{action}", json=body)

        filed = (await gw.http.get(f"/api/v1/cases/{case_id}")).json()
        assert (filed["status"], filed["department"], filed["clue_ids"]) == (
            "filed",
            "housing",
            [clue_id],
        )
        assert [e["action"] for e in filed["events"]] == ["filed"]
        assert (filed["tasks"], filed["handover"], filed["closed_at"]) == ([], None, None)

        # Out of order: refused with the reason.
        refused = await post("decide", kind="fine", amount_cny=5000, reason="fined")
        assert refused.status_code == 409
        assert "while it is filed" in refused.json()["detail"]
        assert (await post("close")).status_code == 409
        assert (await post("rectify")).status_code == 409

        assert (await post("investigate", reason="site visit booked")).json()[
            "status"
        ] == "investigating"
        assert (await post("investigate")).status_code == 409
        assert (await post("transfer", to_department="nowhere", reason="x")).status_code == 422
        assert (await post("transfer", to_department="market")).status_code == 422  # no reason
        same = await post("transfer", to_department="housing", reason="x")
        assert same.status_code == 409
        assert "already with housing" in same.json()["detail"]
        moved = (await post("transfer", to_department="market", reason="appliance defect")).json()
        assert (moved["status"], moved["department"]) == ("investigating", "market")
        decided = (
            await post(
                "decide",
                kind="fine",
                amount_cny="5000",
                reason="fined 5000 yuan, valve to replace",
            )
        ).json()
        assert decided["status"] == "decision"
        decision = decided["decision"]
        assert decision.pop("decided_at") is not None
        assert decision == {
            "kind": "fine",
            "amount_cny": 5000.0,
            "legal_basis": GAS_LEGAL_BASIS,
            "note": "fined 5000 yuan, valve to replace",
            "decided_by": "admin:bootstrap",
        }
        assert decided["events"][-1]["details"] == {
            "kind": "fine",
            "amount_cny": "5000.00",
            "legal_basis": GAS_LEGAL_BASIS,
        }
        assert (await post("decide", kind="warning")).status_code == 409
        assert (await post("rectify", reason="valve ordered")).json()["status"] == "rectification"
        assert (await post("close", reason="valve replaced", extra=1)).status_code == 422
        closed = (await post("close", reason="valve replaced, checked on site")).json()
        assert closed["status"] == "closed"
        assert closed["closed_at"] is not None
        for action, body in (
            ("investigate", {}),
            ("transfer", {"to_department": "fire", "reason": "late"}),
            ("hand-over", {"recipient": "police", "reason": "late"}),
        ):
            assert (await post(action, **body)).status_code == 409, action

        steps = [
            (e["action"], e["from_status"], e["to_status"], e["department"], e["reason"])
            for e in closed["events"]
        ]
        assert steps == [
            ("filed", None, "filed", "housing", None),
            ("investigating", "filed", "investigating", "housing", "site visit booked"),
            ("transferred", "investigating", "investigating", "market", "appliance defect"),
            (
                "decision",
                "investigating",
                "decision",
                "market",
                "fined 5000 yuan, valve to replace",
            ),
            ("rectification", "decision", "rectification", "market", "valve ordered"),
            ("closed", "rectification", "closed", "market", "valve replaced, checked on site"),
        ]
        assert closed["events"][2]["details"] == {"from_department": "housing"}
        assert {e["actor"] for e in closed["events"][1:]} == {"admin:bootstrap"}

        entries = await _entries(database_url)
        decision_entry = next(e for e in entries if e.action == "case.decision")
        assert json.loads(decision_entry.payload or "") == {
            "case_id": case_id,
            "from_status": "investigating",
            "to_status": "decision",
            "reason": "fined 5000 yuan, valve to replace",
            "decision": {
                "kind": "fine",
                "amount_cny": "5000.00",
                "legal_basis": GAS_LEGAL_BASIS,
            },
        }
        assert [e.action for e in entries if e.object_id == case_id] == [
            "case.filed",
            "case.clue_joined",
            "case.investigating",
            "case.transferred",
            "case.decision",
            "case.rectification",
            "case.closed",
        ]
        assert ledger.chain_problems(entries) == []
        alerts = (await gw.http.get("/api/v1/alerts")).json()
        case_alerts = [a for a in alerts if a["type"].startswith("case.")]
        assert [a["type"] for a in case_alerts][-1] == "case.closed"
        assert {a["clue"]["id"] for a in case_alerts} == {clue_id}
        assert case_alerts[-1]["case"]["id"] == case_id
        assert (await gw.http.post("/api/v1/cases/case_nope/investigate", json={})).status_code == (
            404
        )
        assert (await gw.http.get("/api/v1/cases/case_nope")).status_code == 404

        # A closed case is done with: the next red clue on the same facts files a new one.
        again, _ = await _red_case(gw)
        assert again != case_id


async def test_a_case_handed_to_the_judicial_authorities_ends_here(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        case_id, clue_id = await _red_case(gw)
        await gw.http.post(f"/api/v1/cases/{case_id}/investigate", json={})
        assert (
            await gw.http.post(f"/api/v1/cases/{case_id}/hand-over", json={"recipient": "police"})
        ).status_code == 422  # the reason is required
        before = (await _entries(database_url))[-1]
        handed = await gw.http.post(
            f"/api/v1/cases/{case_id}/hand-over",
            json={"recipient": "Hanzhong public security bureau", "reason": "suspected crime"},
        )
        assert handed.status_code == 200, handed.text
        case = handed.json()
        assert (case["status"], case["events"][-1]["action"]) == ("handed_over", "handed_over")
        assert case["closed_at"] is not None
        record = case["handover"]
        clue = (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()
        assert record["clue_ids"] == [clue_id]
        assert record["evidence_ids"] == [clue["evidence_id"]]
        assert record["recipient"] == "Hanzhong public security bureau"
        assert record["reason"] == "suspected crime"
        assert record["actor"] == "admin:bootstrap"
        assert (record["ledger_head_seq"], record["ledger_head_hash"]) == (before.seq, before.hash)
        entries = await _entries(database_url)
        entry = next(e for e in entries if e.seq == record["ledger_seq"])
        assert (entry.action, entry.object_id, entry.prev_hash) == (
            "case.handed_over",
            case_id,
            before.hash,
        )
        assert clue["evidence_id"] in (entry.payload or "")
        assert ledger.chain_problems(entries) == []

        for action, body in (
            ("decide", {"kind": "warning"}),
            ("close", {}),
            ("transfer", {"to_department": "fire", "reason": "x"}),
            ("hand-over", {"recipient": "procuratorate", "reason": "again"}),
            ("tasks", {"title": "t", "assignee": "a", "due_at": datetime.now(UTC).isoformat()}),
        ):
            refused = await gw.http.post(f"/api/v1/cases/{case_id}/{action}", json=body)
            assert refused.status_code == 409, action
        assert "handed_over" in refused.json()["detail"]


async def test_tasks_on_a_case(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        case_id, _ = await _red_case(gw)
        now = datetime.now(UTC)
        tasks = f"/api/v1/cases/{case_id}/tasks"
        late = await gw.http.post(
            tasks,
            json={
                "title": "collect the valve log",
                "assignee": "officer-li",
                "due_at": (now - timedelta(hours=1)).isoformat(),
            },
        )
        assert late.status_code == 201, late.text
        on_time = await gw.http.post(
            tasks,
            json={
                "title": "site visit",
                "assignee": "officer-wang",
                "due_at": (now + timedelta(days=2)).isoformat(),
            },
        )
        listed = on_time.json()["tasks"]
        assert [(t["title"], t["assignee"], t["overdue"]) for t in listed] == [
            ("collect the valve log", "officer-li", True),
            ("site visit", "officer-wang", False),
        ]
        assert (await gw.http.post(tasks, json={"title": "x", "assignee": "y"})).status_code == 422
        naive = {"title": "x", "assignee": "y", "due_at": "2026-01-01T00:00:00"}
        assert (await gw.http.post(tasks, json=naive)).status_code == 422

        first = listed[0]["id"]
        done = await gw.http.post(f"{tasks}/{first}/complete", json={"note": "log copied"})
        assert done.status_code == 200, done.text
        task = done.json()["tasks"][0]
        assert (task["completed_by"], task["note"], task["overdue"]) == (
            "admin:bootstrap",
            "log copied",
            False,
        )
        assert task["completed_at"] is not None
        assert (await gw.http.post(f"{tasks}/{first}/complete", json={})).status_code == 409
        assert (await gw.http.post(f"{tasks}/999999/complete", json={})).status_code == 404
        assert [e["action"] for e in done.json()["events"]] == [
            "filed",
            "task_created",
            "task_created",
            "task_completed",
        ]
        entries = await _entries(database_url)
        assert [e.action for e in entries if e.object_id == case_id][-3:] == [
            "case.task_created",
            "case.task_created",
            "case.task_completed",
        ]
        assert ledger.chain_problems(entries) == []


async def test_case_steps_need_a_valid_token(database_url: str) -> None:
    async with (
        start_gateway(database_url, None, **QUIET) as gw,
        httpx.AsyncClient(base_url=gw.base_url) as anonymous,
    ):
        case_id, _ = await _red_case(gw)
        for action in (
            "investigate",
            "decide",
            "rectify",
            "close",
            "transfer",
            "hand-over",
            "tasks",
            "tasks/1/complete",
        ):
            response = await anonymous.post(f"/api/v1/cases/{case_id}/{action}", json={})
            assert response.status_code == 401, action
        assert (await anonymous.get(f"/api/v1/cases/{case_id}")).status_code == 401
        case = (await gw.http.get(f"/api/v1/cases/{case_id}")).json()
        assert (case["status"], [e["action"] for e in case["events"]]) == ("filed", ["filed"])


async def test_a_red_clue_announced_before_a_crash_is_completed_at_restart(
    database_url: str,
) -> None:
    """The alert goes out in the clue's first transaction; evidence, case and ledger follow
    in a second. A gateway that dies in between finishes the clue when it starts again."""
    finding = red_gas_finding(confirm_s=15.0)
    clue_id = clue_id_for(finding.key)
    async with start_gateway(database_url, None, **QUIET) as gw:
        device = gw.runtime.directory["gas-0001"]
        # only the first transaction: the process "dies" before the second
        assert await gw.runtime.casework.announce(finding, device)
        announced = (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()
        assert (announced["status"], announced["evidence_id"], announced["case_id"]) == (
            "new",
            None,
            None,
        )
    assert [e.action for e in await _entries(database_url) if e.object_id == clue_id] == []
    async with start_gateway(database_url, None, **QUIET) as gw:
        clue = (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()
        assert clue["status"] == "escalated"
        assert clue["evidence_id"] is not None
        assert clue["case_id"] is not None
        verify = (await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}/verify")).json()
        assert (verify["valid"], verify["problems"]) == (True, [])
        alerts = (await gw.http.get("/api/v1/alerts")).json()
        assert [a["type"] for a in alerts if a["clue"]["id"] == clue_id] == [
            "clue.opened",
            "clue.escalated",
        ]
        # a second start finds nothing left to complete
        assert await gw.runtime.casework.complete_pending(gw.runtime.directory) == 0
    entries = await _entries(database_url)
    assert [e.action for e in entries if e.object_id == clue_id] == ["clue.opened"]
    assert ledger.chain_problems(entries) == []
    case_actions = [e.action for e in entries if e.object_id == clue["case_id"]]
    assert case_actions == ["case.filed", "case.clue_joined"]


async def test_an_overdue_task_raises_one_alert(database_url: str) -> None:
    async with start_gateway(database_url, None, clue_deadline_sweep_s=0.2, **QUIET) as gw:
        case_id, clue_id = await _red_case(gw)
        tasks = f"/api/v1/cases/{case_id}/tasks"
        now = datetime.now(UTC)
        # From the last alert on record: the hub may not have passed on the case's own yet.
        seen = max(a["seq"] for a in (await gw.http.get("/api/v1/alerts")).json())
        async with websockets.connect(gw.ws_url(after=seen)) as ws:
            assert (await _next(ws))["type"] == "hello"
            due = now + timedelta(seconds=3)  # time to create and complete the others first
            created = await gw.http.post(
                tasks,
                json={
                    "title": "collect the valve log",
                    "assignee": "officer-li",
                    "due_at": due.isoformat(),
                },
            )
            late_id = created.json()["tasks"][0]["id"]
            assert (await _next(ws))["type"] == "case.task_created"
            for title, due_at in (("site visit", now + timedelta(days=2)), ("done", due)):
                await gw.http.post(
                    tasks,
                    json={"title": title, "assignee": "officer-wang", "due_at": due_at.isoformat()},
                )
                assert (await _next(ws))["type"] == "case.task_created"
            done_id = (await gw.http.get(f"/api/v1/cases/{case_id}")).json()["tasks"][-1]["id"]
            await gw.http.post(f"{tasks}/{done_id}/complete", json={})
            assert (await _next(ws))["type"] == "case.task_completed"

            # The runtime's sweep finds it past due and says so on the live stream.
            alert = await _next(ws, timeout=10)
            assert alert["type"] == "case.task_overdue"
            assert (alert["clue"]["id"], alert["case"]["id"]) == (clue_id, case_id)
            assert (alert["task_id"], alert["title"], alert["assignee"]) == (
                late_id,
                "collect the valve log",
                "officer-li",
            )
            assert datetime.fromisoformat(alert["due_at"]) == due
            # Once: later sweeps, even far ahead, flag nothing more (the completed task and
            # the one not yet due at this instant neither).
            assert await gw.runtime.check_task_deadlines() == []
            with pytest.raises(TimeoutError):
                await _next(ws, timeout=1)

        case = (await gw.http.get(f"/api/v1/cases/{case_id}")).json()
        flagged = {t["id"]: (t["overdue"], t["overdue_at"] is not None) for t in case["tasks"]}
        assert flagged == {
            late_id: (True, True),
            late_id + 1: (False, False),
            done_id: (False, False),
        }
        event = case["events"][-1]
        assert (event["action"], event["actor"], event["from_status"], event["to_status"]) == (
            "task_overdue",
            "offsite:deadlines",
            "filed",
            "filed",
        )
        assert event["details"] == {
            "task_id": late_id,
            "title": "collect the valve log",
            "assignee": "officer-li",
            "due_at": event["details"]["due_at"],
        }
        assert datetime.fromisoformat(event["details"]["due_at"]) == due

        # A closed case's tasks are frozen: past due, they raise nothing.
        await gw.http.post(f"/api/v1/cases/{case_id}/investigate", json={})
        await gw.http.post(f"/api/v1/cases/{case_id}/close", json={"reason": "nothing to answer"})
        assert await gw.runtime.check_task_deadlines(now + timedelta(days=3)) == []

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT id, overdue_at IS NOT NULL FROM case_tasks WHERE case_id = %s ORDER BY id",
            (case_id,),
        )
        assert await cur.fetchall() == [(late_id, True), (late_id + 1, False), (done_id, False)]
    entries = await _entries(database_url)
    overdue = [e for e in entries if e.action == "case.task_overdue"]
    assert [(e.actor, e.object_id) for e in overdue] == [("offsite:deadlines", case_id)]
    payload = json.loads(overdue[0].payload or "")
    assert datetime.fromisoformat(payload.pop("due_at")) == due
    assert payload == {
        "case_id": case_id,
        "task_id": late_id,
        "title": "collect the valve log",
        "assignee": "officer-li",
    }
    assert ledger.chain_problems(entries) == []


async def _next(ws: websockets.ClientConnection, timeout: float = 5) -> dict[str, Any]:  # noqa: ASYNC109
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def test_a_decision_is_typed_and_checked(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        case_id, _ = await _red_case(gw)

        async def post(action: str, **body: Any) -> Any:
            return await gw.http.post(f"/api/v1/cases/{case_id}/{action}", json=body)

        await post("investigate")
        bad: dict[str, Any]
        for bad, expected in (
            ({}, "kind"),
            ({"reason": "fined"}, "kind"),  # free text alone is no longer a decision
            ({"kind": "detention"}, "kind"),
            ({"kind": "fine"}, "a fine needs amount_cny"),
            ({"kind": "fine", "amount_cny": 0}, "greater than 0"),
            ({"kind": "fine", "amount_cny": -50}, "greater than 0"),
            ({"kind": "fine", "amount_cny": "12.345"}, "decimal places"),
            ({"kind": "fine", "amount_cny": "1e15"}, "digits"),
            ({"kind": "fine", "amount_cny": "abc"}, "decimal"),
            ({"kind": "warning", "amount_cny": 100}, "amount_cny is for a fine, not for warning"),
            ({"kind": "warning", "legal_basis": []}, "legal_basis"),
            ({"kind": "warning", "legal_basis": [""]}, "legal_basis"),
            ({"kind": "warning", "note": "x"}, "note"),  # unknown field
        ):
            refused = await post("decide", **bad)
            assert refused.status_code == 422, bad
            assert expected in refused.text, (bad, refused.text)
        case = (await gw.http.get(f"/api/v1/cases/{case_id}")).json()
        assert (case["status"], case["decision"]) == ("investigating", None)

        basis = ["中华人民共和国安全生产法 第九十九条"]
        decided = await post(
            "decide", kind="no_violation", legal_basis=basis, reason="valve log shows a test"
        )
        assert decided.status_code == 200, decided.text
        decision = decided.json()["decision"]
        assert (decision["kind"], decision["amount_cny"], decision["legal_basis"]) == (
            "no_violation",
            None,
            basis,
        )
        # Nothing to rectify after no violation: straight to closed.
        refused = await post("rectify")
        assert refused.status_code == 409
        assert "nothing to rectify" in refused.json()["detail"]
        assert (await post("close", reason="no violation")).json()["status"] == "closed"

        # A warning takes the matter's legal basis; a fine keeps its fen exactly.
        for kind, amount, expected_amount in (("warning", None, None), ("fine", 1234.56, 1234.56)):
            case_id, _ = await _red_case(gw)
            await post("investigate")
            body: dict[str, Any] = {"kind": kind}
            if amount is not None:
                body["amount_cny"] = amount
            decided = (await post("decide", **body)).json()
            assert decided["decision"]["amount_cny"] == expected_amount
            assert decided["decision"]["legal_basis"] == GAS_LEGAL_BASIS
            assert decided["decision"]["note"] is None
            assert (await post("rectify")).json()["status"] == "rectification"
            await post("close")

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT kind, amount_cny, legal_basis, note, decided_by FROM case_decisions"
            " ORDER BY decided_at"
        )
        assert await cur.fetchall() == [
            ("no_violation", None, basis, "valve log shows a test", "admin:bootstrap"),
            ("warning", None, GAS_LEGAL_BASIS, None, "admin:bootstrap"),
            ("fine", Decimal("1234.56"), GAS_LEGAL_BASIS, None, "admin:bootstrap"),
        ]
        # The database holds the rule too, for any writer: a fine without an amount.
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("UPDATE case_decisions SET amount_cny = NULL WHERE kind = 'fine'")
    entries = await _entries(database_url)
    decisions = [
        json.loads(e.payload or "")["decision"] for e in entries if e.action == "case.decision"
    ]
    assert decisions == [
        {"kind": "no_violation", "amount_cny": None, "legal_basis": basis},
        {"kind": "warning", "amount_cny": None, "legal_basis": GAS_LEGAL_BASIS},
        {"kind": "fine", "amount_cny": "1234.56", "legal_basis": GAS_LEGAL_BASIS},
    ]
    assert ledger.chain_problems(entries) == []


def test_a_decision_checks_itself_for_callers_other_than_the_api() -> None:
    fine = case_lifecycle.Decision
    assert fine("fine", Decimal("5000")).problems() is None
    assert fine("fine").problems() == "a fine needs amount_cny above zero"
    assert fine("fine", Decimal("-1")).problems() == "a fine needs amount_cny above zero"
    assert fine("fine", Decimal("0.001")).problems() == (
        "amount_cny has at most two decimal places (fen)"
    )
    assert (
        fine("revocation", Decimal(1)).problems() == "amount_cny is for a fine, not for revocation"
    )
    assert fine("warning", legal_basis=(" ",)).problems() == "legal_basis names no empty provision"
    assert fine("suspension", legal_basis=("安全生产法 第六十五条",)).problems() is None


async def test_findings_raised_together_are_announced_together_and_one_refused_alone(
    database_url: str,
) -> None:
    """Findings taken together share one transaction: an opening, the same episode going on
    and another device's opening come out as their alerts, in order. A finding the database
    refuses (text with a NUL) would sink the whole group: the group is then announced one
    finding at a time, and only the refused one is left out."""
    opened = red_gas_finding()
    goes_on = dataclasses.replace(opened, phase="updated", value=57.0, peak=57.0)
    other = dataclasses.replace(red_gas_finding(), device_id="gas-0002")
    refused = dataclasses.replace(red_gas_finding(), device_id="gas-0003", title="bad\x00title")
    async with start_gateway(database_url, None, **QUIET) as gw:
        runtime = gw.runtime
        directory = runtime.directory
        group = [(opened, directory["gas-0001"]), (goes_on, directory["gas-0001"])]
        assert await runtime.casework.announce_many(group) == [True, False]
        items = [(f, directory[f.device_id]) for f in (refused, other, goes_on)]
        assert await runtime.announcer.announce(items) == [False, True, False]
        alerts = (await gw.http.get("/api/v1/alerts")).json()
        seen = [(a["type"], a["clue"]["device_id"], a["clue"]["updates"]) for a in alerts]
        assert seen == [
            ("clue.opened", "gas-0001", 0),
            ("clue.updated", "gas-0001", 1),
            ("clue.opened", "gas-0002", 0),
            ("clue.updated", "gas-0001", 2),
        ]
        clues = (await gw.http.get("/api/v1/clues")).json()
        assert sorted(c["device_id"] for c in clues) == ["gas-0001", "gas-0002"]
