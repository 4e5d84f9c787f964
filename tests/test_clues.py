"""The clue lifecycle, outside reports and their merging, escalation and deadlines, through
the HTTP API with a real database (no broker: clues come from the API or from findings
handed to casework as the runtime would)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg import sql

from offsite.casework import ledger
from offsite.detectors.findings import Finding
from tests.fixtures.gateway import RunningGateway, eventually, start_gateway

SUBJECT = "rest-hanjiang-noodle"  # gas-0001's subject
OTHER_SUBJECT = "rest-qinba-hotpot"
MATTER = "gas-safety"  # lead: housing; cooperating: market, emergency, fire
QUIET = {"silent_sweep_s": 3600.0}
"""No silence findings from the never-seen demo devices while a test runs."""


async def _entries(url: str) -> list[ledger.Entry]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT {} FROM ledger ORDER BY seq").format(ledger.ENTRY_COLUMNS)
        )
        return [ledger.entry_from_row(r) for r in await cur.fetchall()]


async def _actions(url: str, object_id: str) -> list[str]:
    return [e.action for e in await _entries(url) if e.object_id == object_id]


async def _report(gw: RunningGateway, **fields: Any) -> Any:
    body = {
        "channel": "hotline_12345",
        "subject_id": SUBJECT,
        "matter_id": MATTER,
        "description": "smell of gas in the kitchen at lunchtime",
        "reported_at": datetime.now(UTC).isoformat(),
        **fields,
    }
    return await gw.http.post("/api/v1/clues", json=body)


async def _detector_clue(gw: RunningGateway, severity: str = "yellow") -> str:
    now = datetime.now(UTC)
    finding = Finding(
        rule="gas.lel_level1",
        device_id="gas-0001",
        severity=severity,  # type: ignore[arg-type]
        phase="opened",
        episode_start=now - timedelta(seconds=20),
        at=now,
        title="Combustible gas above level 1",
        value=30.0,
        peak=31.0,
        threshold=25.0,
    )
    return await gw.runtime.casework.handle(finding, gw.runtime.directory["gas-0001"])


async def test_a_clue_goes_through_its_whole_life(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        created = await _report(gw, channel="complaint", reference="C-2026-0042")
        assert created.status_code == 201, created.text
        clue = created.json()["clue"]
        clue_id = clue["id"]
        assert created.json()["merged"] is False
        assert clue["status"] == "new"
        assert clue["source"] == "complaint"
        # Routed by the matters list.
        assert clue["department"] == "housing"
        assert clue["cooperating_departments"] == ["market", "emergency", "fire"]
        assert clue["deadline_at"] is not None

        async def post(action: str, **body: Any) -> Any:
            return await gw.http.post(f"/api/v1/clues/{clue_id}/{action}", json=body)

        # Out of order: refused with the reason, nothing recorded.
        refused = await post("handle", note="inspected")
        assert refused.status_code == 409
        assert "while it is new" in refused.json()["detail"]
        assert (await post("assign", department="emergency")).status_code == 409
        assert (await post("close", disposition="rectified")).status_code == 409

        assert (await post("triage", reason="credible, same premises as last year")).json()[
            "status"
        ] == "triaged"
        assert (await post("assign", department="nowhere")).status_code == 422
        assigned = (await post("assign", department="emergency")).json()
        assert (assigned["status"], assigned["department"]) == ("assigned", "emergency")
        assert (await post("triage")).status_code == 409
        same = await post("transfer", to_department="emergency", reason="x")
        assert same.status_code == 409
        assert "already with emergency" in same.json()["detail"]
        assert (await post("transfer", to_department="market")).status_code == 422  # no reason
        transferred = (
            await post("transfer", to_department="market", reason="a gas appliance defect")
        ).json()
        assert (transferred["status"], transferred["department"]) == ("transferred", "market")
        assert (await post("handle", note="appliance sealed, owner ordered to replace")).json()[
            "status"
        ] == "handled"
        assert (await post("close", disposition="fined")).status_code == 422
        assert (await post("close", disposition="rectified", extra=1)).status_code == 422
        closed = (await post("close", disposition="rectified")).json()
        assert (closed["status"], closed["disposition"]) == ("closed", "rectified")
        assert closed["closed_at"] is not None
        assert (await post("escalate")).status_code == 409
        assert (await post("transfer", to_department="fire", reason="late")).status_code == 409

        history = (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()
        steps = [
            (e["action"], e["from_status"], e["to_status"], e["department"], e["reason"])
            for e in history["events"]
        ]
        assert steps == [
            ("opened", None, "new", "housing", None),
            ("triaged", "new", "triaged", "housing", "credible, same premises as last year"),
            ("assigned", "triaged", "assigned", "emergency", None),
            ("transferred", "assigned", "transferred", "market", "a gas appliance defect"),
            (
                "handled",
                "transferred",
                "handled",
                "market",
                "appliance sealed, owner ordered to replace",
            ),
            ("closed", "handled", "closed", "market", None),
        ]
        assert {e["actor"] for e in history["events"]} == {"admin:bootstrap"}
        assert history["events"][-1]["details"] == {"disposition": "rectified"}
        assert [(s["channel"], s["reference"]) for s in history["sources"]] == [
            ("complaint", "C-2026-0042")
        ]

        assert await _actions(database_url, clue_id) == [
            "clue.opened",
            "clue.triaged",
            "clue.assigned",
            "clue.transferred",
            "clue.handled",
            "clue.closed",
        ]
        entries = await _entries(database_url)
        assert ledger.chain_problems(entries) == []
        transfer = next(e for e in entries if e.action == "clue.transferred")
        assert transfer.actor == "admin:bootstrap"
        assert '"from_department":"emergency"' in (transfer.payload or "")
        alerts = (await gw.http.get("/api/v1/alerts")).json()
        assert [a["type"] for a in alerts if a["clue"]["id"] == clue_id][-1] == "clue.closed"
        assert (await gw.http.post("/api/v1/clues/clu_nope/triage", json={})).status_code == 404


async def test_a_false_alarm_is_closed_at_triage(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        clue_id = (await _report(gw)).json()["clue"]["id"]
        await gw.http.post(f"/api/v1/clues/{clue_id}/triage", json={})
        closed = await gw.http.post(
            f"/api/v1/clues/{clue_id}/close",
            json={"disposition": "false_alarm", "reason": "caller confused the smell"},
        )
        assert closed.json()["status"] == "closed", closed.text


async def test_reports_of_the_same_facts_merge_into_one_clue(database_url: str) -> None:
    async with start_gateway(database_url, None, clue_merge_window_s=3600.0, **QUIET) as gw:
        now = datetime.now(UTC)
        first = await _report(gw, reported_at=(now - timedelta(minutes=30)).isoformat())
        assert first.status_code == 201
        clue_id = first.json()["clue"]["id"]
        second = await _report(
            gw, channel="department", reference="market-referral-17", description="same place"
        )
        assert second.status_code == 200, second.text
        joined = second.json()
        assert (joined["merged"], joined["joined_clue_id"]) == (True, clue_id)
        assert [(s["channel"], s["reference"]) for s in joined["clue"]["sources"]] == [
            ("hotline_12345", None),
            ("department", "market-referral-17"),
        ]
        assert await _actions(database_url, clue_id) == ["clue.opened", "clue.source_added"]
        assert len((await gw.http.get("/api/v1/clues")).json()) == 1

        # Another subject, or a report later than the window after the clue's last report,
        # is other facts.
        other = await _report(gw, subject_id=OTHER_SUBJECT)
        assert other.status_code == 201
        late = await _report(gw, reported_at=(now + timedelta(hours=2)).isoformat())
        assert late.status_code == 201
        assert late.json()["clue"]["id"] != clue_id

        # A closed clue takes no more reports.
        for action, body in (("triage", {}), ("close", {"disposition": "merged"})):
            await gw.http.post(f"/api/v1/clues/{other.json()['clue']['id']}/{action}", json=body)
        again = await _report(gw, subject_id=OTHER_SUBJECT)
        assert again.status_code == 201
        assert again.json()["clue"]["id"] != other.json()["clue"]["id"]

        assert (await _report(gw, subject_id="nobody")).status_code == 422
        assert (await _report(gw, matter_id="nothing")).status_code == 422
        assert (await _report(gw, reported_at="2026-01-01T10:00:00")).status_code == 422
        ahead = (now + timedelta(days=2)).isoformat()
        refused = await _report(gw, reported_at=ahead)
        assert refused.status_code == 422
        assert "ahead" in refused.text
        assert (await _report(gw, channel="twitter")).status_code == 422
        assert ledger.chain_problems(await _entries(database_url)) == []


async def test_a_report_joins_the_open_detector_clue(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        detector_clue = await _detector_clue(gw)
        joined = await _report(gw, reference="12345-778899")
        assert joined.status_code == 200, joined.text
        assert joined.json()["joined_clue_id"] == detector_clue
        clue = joined.json()["clue"]
        assert clue["source"] == "detector"
        assert [s["channel"] for s in clue["sources"]] == ["detector", "hotline_12345"]
        assert [e["action"] for e in clue["events"]] == ["opened", "source_added"]
        assert await _actions(database_url, detector_clue) == [
            "clue.opened",
            "clue.source_added",
        ]


async def test_a_detector_clue_joins_the_open_reported_clue(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        reported = (await _report(gw)).json()["clue"]["id"]
        await gw.http.post(f"/api/v1/clues/{reported}/triage", json={})
        detected = await _detector_clue(gw)
        assert detected != reported
        merged = (await gw.http.get(f"/api/v1/clues/{detected}")).json()
        assert (merged["status"], merged["disposition"]) == ("closed", "merged")
        assert merged["evidence_id"] is not None  # its evidence stays fixed, with it
        assert merged["events"][-1]["details"] == {
            "disposition": "merged",
            "merged_into": reported,
        }
        target = (await gw.http.get(f"/api/v1/clues/{reported}")).json()
        assert target["status"] == "triaged"
        assert [(s["channel"], s["reference"]) for s in target["sources"]] == [
            ("hotline_12345", None),
            ("detector", detected),
        ]
        assert await _actions(database_url, reported) == [
            "clue.opened",
            "clue.triaged",
            "clue.source_added",
        ]
        assert await _actions(database_url, detected) == ["clue.opened", "clue.closed"]
        assert ledger.chain_problems(await _entries(database_url)) == []


async def test_a_red_detector_clue_is_escalated_on_opening(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        red = await _detector_clue(gw, "red")
        clue = (await gw.http.get(f"/api/v1/clues/{red}")).json()
        assert clue["status"] == "escalated"
        assert clue["case_id"] is not None
        assert [(e["action"], e["actor"]) for e in clue["events"]] == [
            ("opened", "offsite:detector"),
            ("escalated", "offsite:detector"),
        ]
        refused = await gw.http.post(f"/api/v1/clues/{red}/triage", json={})
        assert refused.status_code == 409
        # Still open: a report of the same facts joins it, and so its case.
        assert (await _report(gw)).json()["joined_clue_id"] == red
        assert await gw.runtime.check_deadlines(datetime.now(UTC) + timedelta(days=30)) == []


async def test_escalation_files_a_case_or_joins_the_open_one(database_url: str) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        reported = (await _report(gw)).json()["clue"]["id"]
        await gw.http.post(f"/api/v1/clues/{reported}/triage", json={})
        escalated = await gw.http.post(
            f"/api/v1/clues/{reported}/escalate", json={"reason": "repeated leaks"}
        )
        assert escalated.status_code == 200, escalated.text
        case_id = escalated.json()["case_id"]
        assert escalated.json()["status"] == "escalated"
        case = (await gw.http.get(f"/api/v1/cases/{case_id}")).json()
        assert (case["subject_id"], case["matter_id"], case["department"]) == (
            SUBJECT,
            MATTER,
            "housing",
        )
        assert case["opened_by"] == "admin:bootstrap"
        assert case["legal_basis"]

        # A detector clue on the same subject and matter joins that case, not a new one.
        detected = await _detector_clue(gw)
        joined = await gw.http.post(f"/api/v1/clues/{detected}/escalate", json={})
        assert joined.json()["case_id"] == case_id
        case = (await gw.http.get(f"/api/v1/cases/{case_id}")).json()
        assert case["clue_ids"] == sorted([reported, detected])
        assert len((await gw.http.get("/api/v1/cases")).json()) == 1
        again = await gw.http.post(f"/api/v1/clues/{detected}/escalate", json={})
        assert again.status_code == 409

        entries = await _entries(database_url)
        assert [e.action for e in entries if e.object_id == case_id] == [
            "case.filed",
            "case.clue_joined",
            "case.clue_joined",
        ]
        assert await _actions(database_url, reported) == [
            "clue.opened",
            "clue.triaged",
            "clue.escalated",
        ]
        assert ledger.chain_problems(entries) == []


async def test_a_clue_past_its_deadline_is_flagged_overdue_and_alerted(
    database_url: str,
) -> None:
    async with start_gateway(database_url, None, clue_deadline_sweep_s=0.2, **QUIET) as gw:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            # housing's own limit for blue clues overrides the settings' 7 days
            await conn.execute(
                "INSERT INTO clue_deadlines (department, severity, within_s)"
                " VALUES ('housing', 'blue', 0.5)"
            )
            await conn.commit()
        late = (await _report(gw, severity="blue")).json()["clue"]["id"]
        on_time = (await _report(gw, subject_id=OTHER_SUBJECT)).json()["clue"]["id"]

        async def overdue() -> dict[str, Any] | None:
            clue: dict[str, Any] = (await gw.http.get(f"/api/v1/clues/{late}")).json()
            return clue if clue["overdue"] else None

        clue = await eventually(overdue, timeout=10)
        assert clue["status"] == "new"  # a flag: the clue still waits for its next step
        event = clue["events"][-1]
        assert (event["action"], event["actor"]) == ("overdue", "offsite:deadlines")
        alerts = (await gw.http.get("/api/v1/alerts")).json()
        assert [a["clue"]["id"] for a in alerts if a["type"] == "clue.overdue"] == [late]
        assert await _actions(database_url, late) == ["clue.opened", "clue.overdue"]
        assert not (await gw.http.get(f"/api/v1/clues/{on_time}")).json()["overdue"]

        # Flagged once; a closed clue is never overdue, whatever the time.
        await gw.http.post(f"/api/v1/clues/{on_time}/triage", json={})
        await gw.http.post(f"/api/v1/clues/{on_time}/close", json={"disposition": "no_violation"})
        assert await gw.runtime.check_deadlines(datetime.now(UTC) + timedelta(days=30)) == []
        assert ledger.chain_problems(await _entries(database_url)) == []


async def test_clue_steps_need_a_valid_token(database_url: str) -> None:
    async with (
        start_gateway(database_url, None, **QUIET) as gw,
        httpx.AsyncClient(base_url=gw.base_url) as anonymous,
    ):
        clue_id = (await _report(gw)).json()["clue"]["id"]
        for action in ("triage", "assign", "transfer", "handle", "close", "escalate"):
            response = await anonymous.post(f"/api/v1/clues/{clue_id}/{action}", json={})
            assert response.status_code == 401, action
        assert (await anonymous.post("/api/v1/clues", json={})).status_code == 401
        assert (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()["events"][-1][
            "action"
        ] == "opened"


async def test_a_transfer_starts_a_new_deadline_and_clears_the_overdue_flag(
    database_url: str,
) -> None:
    async with start_gateway(database_url, None, clue_deadline_sweep_s=3600.0, **QUIET) as gw:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute(
                "INSERT INTO clue_deadlines (department, severity, within_s)"
                " VALUES ('housing', 'blue', 0.5), ('market', 'blue', 3600)"
            )
            await conn.commit()
        clue = (await _report(gw, severity="blue")).json()["clue"]
        clue_id, opened_at = clue["id"], datetime.fromisoformat(clue["opened_at"])
        assert datetime.fromisoformat(clue["deadline_at"]) == opened_at + timedelta(seconds=0.5)

        async def post(action: str, **body: Any) -> Any:
            response = await gw.http.post(f"/api/v1/clues/{clue_id}/{action}", json=body)
            assert response.status_code == 200, response.text
            return response.json()

        await post("triage")
        assigned = await post("assign", department="housing")
        # Assigned: still the clock from the opening.
        assert datetime.fromisoformat(assigned["deadline_at"]) == opened_at + timedelta(seconds=0.5)
        details = assigned["events"][-1]["details"]
        assert datetime.fromisoformat(details.pop("deadline_at")) == opened_at + timedelta(
            seconds=0.5
        )
        assert details == {}
        late = datetime.now(UTC) + timedelta(seconds=1)
        assert await gw.runtime.check_deadlines(late) == [clue_id]

        before = datetime.now(UTC)
        moved = await post("transfer", to_department="market", reason="an appliance defect")
        after = datetime.now(UTC)
        assert (moved["department"], moved["overdue"], moved["status"]) == (
            "market",
            False,
            "transferred",
        )
        deadline = datetime.fromisoformat(moved["deadline_at"])
        assert before + timedelta(hours=1) <= deadline <= after + timedelta(hours=1)
        details = moved["events"][-1]["details"]
        assert datetime.fromisoformat(details.pop("deadline_at")) == deadline
        assert details == {"overdue_cleared": True}
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "SELECT department, overdue, deadline_at FROM clues WHERE id = %s", (clue_id,)
            )
            assert await cur.fetchone() == ("market", False, deadline)

        # Not overdue again before market's own hour is up; flagged once when it is.
        assert await gw.runtime.check_deadlines(late) == []
        assert await gw.runtime.check_deadlines(deadline + timedelta(seconds=1)) == [clue_id]
        assert await gw.runtime.check_deadlines(deadline + timedelta(days=1)) == []
        history = (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()
        assert history["overdue"] is True
        assert [(e["action"], e["department"]) for e in history["events"]] == [
            ("opened", "housing"),
            ("triaged", "housing"),
            ("assigned", "housing"),
            ("overdue", "housing"),
            ("transferred", "market"),
            ("overdue", "market"),
        ]
        alerts = (await gw.http.get("/api/v1/alerts")).json()
        assert [a["clue"]["department"] for a in alerts if a["type"] == "clue.overdue"] == [
            "housing",
            "market",
        ]

    entries = await _entries(database_url)
    assert [e.action for e in entries if e.object_id == clue_id] == [
        "clue.opened",
        "clue.triaged",
        "clue.assigned",
        "clue.overdue",
        "clue.transferred",
        "clue.overdue",
    ]
    transfer = next(e for e in entries if e.action == "clue.transferred")
    payload = json.loads(transfer.payload or "")
    assert datetime.fromisoformat(payload.pop("deadline_at")) == deadline
    assert payload == {
        "clue_id": clue_id,
        "from_status": "assigned",
        "to_status": "transferred",
        "reason": "an appliance defect",
        "from_department": "housing",
        "department": "market",
        "overdue_cleared": True,
    }
    assert ledger.chain_problems(entries) == []


async def test_the_deadline_table_in_force_is_readable(database_url: str) -> None:
    async with (
        start_gateway(database_url, None, clue_deadline_red_s=3600.0, **QUIET) as gw,
        httpx.AsyncClient(base_url=gw.base_url) as anonymous,
    ):
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute(
                "INSERT INTO clue_deadlines (department, severity, within_s)"
                " VALUES ('market', 'orange', 43200), ('market', 'red', 1800)"
            )
            await conn.commit()
        table = (await gw.http.get("/api/v1/deadlines")).json()
        assert table["defaults"] == {
            "red": 3600.0,
            "orange": 86400.0,
            "yellow": 259200.0,
            "blue": 604800.0,
        }
        rows = {d["department"]: d for d in table["departments"]}
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute("SELECT id FROM departments ORDER BY id")
            assert list(rows) == [r[0] for r in await cur.fetchall()]
        assert rows["market"]["within_s"] == {
            "red": 1800.0,
            "orange": 43200.0,
            "yellow": 259200.0,
            "blue": 604800.0,
        }
        assert rows["market"]["overridden"] == ["red", "orange"]
        assert rows["housing"]["within_s"] == table["defaults"]
        assert rows["housing"]["overridden"] == []
        assert (await anonymous.get("/api/v1/deadlines")).status_code == 401
