"""Who may do what, against the real database: every route of the app for each role (and
for no token, an expired and a revoked one), department scoping (another department's clue,
case, evidence, export, command and device answer 404; lists are filtered), the live stream's
scope, tokens stored hashed, and the ledger naming the person who acted."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import websockets
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute

from offsite.access.people import ROLES
from offsite.api.app import create_app
from offsite.api.auth import Allow
from offsite.cli import main
from tests.fixtures.gateway import RunningGateway, red_gas_finding, start_gateway

QUIET = {"silent_sweep_s": 3600.0, "clue_deadline_sweep_s": 3600.0}
GAS_SUBJECT = "rest-hanjiang-noodle"  # gas-0001's subject; gas-safety: housing leads
OK = "ok"
"""Past authorization: 200/201 for a read or a first action, 409 for a step the clue's or
case's state no longer allows (the matrix runs every role through the same objects)."""

# Who is asked, as (role, department); "department" is the housing officer (the gas clue's
# lead department), "outsider" a transport officer (named by no gas matter).
CALLERS = ["admin", "duty", "department", "outsider", "auditor"]
UNAUTHENTICATED = ["none", "garbage", "expired", "revoked", "deactivated"]

READ_ALL = dict.fromkeys(CALLERS, OK)
READ_SCOPED = {**READ_ALL, "outsider": 404}
ACT_SCOPED = {**READ_SCOPED, "auditor": 403}
ADMIN = {**dict.fromkeys(CALLERS, 403), "admin": OK}
ADMIN_READ = {**ADMIN, "auditor": OK}
REPORT = {**ACT_SCOPED, "outsider": 403}  # a matter that does not name transport

EXPECTED: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/v1/departments"): READ_ALL,
    ("GET", "/api/v1/matters"): READ_ALL,
    ("GET", "/api/v1/subjects"): READ_ALL,
    ("GET", "/api/v1/devices"): READ_ALL,
    ("GET", "/api/v1/devices/{device_id}"): READ_SCOPED,
    ("GET", "/api/v1/telemetry/{device_id}"): READ_SCOPED,
    ("GET", "/api/v1/clues"): READ_ALL,
    ("GET", "/api/v1/deadlines"): READ_ALL,
    ("GET", "/api/v1/clues/{clue_id}"): READ_SCOPED,
    ("POST", "/api/v1/clues"): REPORT,
    ("POST", "/api/v1/clues/{clue_id}/triage"): ACT_SCOPED,
    ("POST", "/api/v1/clues/{clue_id}/assign"): ACT_SCOPED,
    ("POST", "/api/v1/clues/{clue_id}/transfer"): ACT_SCOPED,
    ("POST", "/api/v1/clues/{clue_id}/handle"): ACT_SCOPED,
    ("POST", "/api/v1/clues/{clue_id}/close"): ACT_SCOPED,
    ("POST", "/api/v1/clues/{clue_id}/escalate"): ACT_SCOPED,
    ("POST", "/api/v1/clues/{clue_id}/acknowledge"): ACT_SCOPED,
    ("GET", "/api/v1/cases"): READ_ALL,
    ("GET", "/api/v1/cases/{case_id}"): READ_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/investigate"): ACT_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/decide"): ACT_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/rectify"): ACT_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/close"): ACT_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/transfer"): ACT_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/hand-over"): ACT_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/tasks"): ACT_SCOPED,
    ("POST", "/api/v1/cases/{case_id}/tasks/{task_id}/complete"): ACT_SCOPED,
    ("GET", "/api/v1/evidence/{evidence_id}/frames/{index}"): READ_SCOPED,
    ("GET", "/api/v1/evidence/{evidence_id}"): READ_SCOPED,
    ("GET", "/api/v1/evidence/{evidence_id}/verify"): READ_SCOPED,
    ("GET", "/api/v1/evidence/{evidence_id}/export"): READ_SCOPED,
    ("GET", "/api/v1/quarantine"): READ_ALL,
    ("GET", "/api/v1/alerts"): READ_ALL,
    ("POST", "/api/v1/commands"): ACT_SCOPED,
    ("GET", "/api/v1/commands"): READ_ALL,
    ("GET", "/api/v1/commands/{command_id}"): READ_SCOPED,
    ("GET", "/api/v1/me"): READ_ALL,
    ("GET", "/api/v1/people"): ADMIN_READ,
    ("POST", "/api/v1/people"): ADMIN,
    ("PATCH", "/api/v1/people/{person_id}"): ADMIN,
    ("GET", "/api/v1/tokens"): ADMIN_READ,
    ("POST", "/api/v1/people/{person_id}/tokens"): ADMIN,
    ("DELETE", "/api/v1/tokens/{token_id}"): ADMIN,
    ("WS", "/api/v1/alerts/live"): READ_ALL,
}
"""Every route of the app and what each caller gets. A route missing here fails
`test_every_route_has_a_rule`: add it with its rule (see the top of `offsite.api.auth`)."""

ROLE_OF = {"department": "department", "outsider": "department"}


def _walk(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes, through included routers (FastAPI keeps those as one entry of `app.routes`)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes)
        else:
            yield route


def _app_routes() -> dict[tuple[str, str], APIRoute | APIWebSocketRoute]:
    app = create_app(None)  # type: ignore[arg-type]  # routes only, nothing is served
    found: dict[tuple[str, str], APIRoute | APIWebSocketRoute] = {}
    for route in _walk(app.routes):
        if isinstance(route, APIRoute) and route.path.startswith("/api/"):
            for method in route.methods or ():
                found[(method, route.path)] = route
        elif isinstance(route, APIWebSocketRoute):
            found[("WS", route.path)] = route
    # the walk sees what the OpenAPI schema publishes, no fewer
    published = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/")
        for method in operations
    }
    assert published == {key for key in found if key[0] != "WS"}
    return found


def test_every_route_has_a_rule() -> None:
    """Each API route is in the matrix, and its `allow(...)` roles are those the matrix lets
    past authorization: a new endpoint without a rule, or a rule changed by accident, fails."""
    routes = _app_routes()
    assert set(routes) == set(EXPECTED), (
        f"routes without a rule: {sorted(set(routes) - set(EXPECTED))};"
        f" rules without a route: {sorted(set(EXPECTED) - set(routes))}"
    )
    for key, route in routes.items():
        if isinstance(route, APIWebSocketRoute):
            continue  # checks its token itself (a browser cannot send headers); tested below
        allows = [d.call for d in route.dependant.dependencies if isinstance(d.call, Allow)]
        assert len(allows) == 1, f"{key}: one allow(...) dependency, found {len(allows)}"
        expected = EXPECTED[key]
        allowed = {ROLE_OF.get(caller, caller) for caller in CALLERS if expected[caller] != 403}
        assert allows[0].roles == allowed, key
        assert allows[0].roles <= set(ROLES)


@dataclass
class World:
    gw: RunningGateway
    tokens: dict[str, str]
    ids: dict[str, Any]
    people: dict[str, int]


async def _person(gw: RunningGateway, name: str, role: str, department: str | None) -> int:
    response = await gw.http.post(
        "/api/v1/people", json={"name": name, "role": role, "department": department}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _token(gw: RunningGateway, person_id: int, ttl_s: int = 3600) -> dict[str, Any]:
    response = await gw.http.post(
        f"/api/v1/people/{person_id}/tokens", json={"name": "test", "ttl_s": ttl_s}
    )
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def _red_gas_clue(gw: RunningGateway) -> dict[str, Any]:
    finding = red_gas_finding()
    clue_id = await gw.runtime.casework.handle(finding, gw.runtime.directory["gas-0001"])
    clue: dict[str, Any] = (await gw.http.get(f"/api/v1/clues/{clue_id}")).json()
    return clue


def _report_body(matter: str = "gas-safety", subject: str = GAS_SUBJECT) -> dict[str, Any]:
    return {
        "channel": "hotline_12345",
        "subject_id": subject,
        "matter_id": matter,
        "description": "smell of gas in the kitchen",
        "reported_at": datetime.now(UTC).isoformat(),
    }


@asynccontextmanager
async def world(database_url: str, **overrides: Any) -> AsyncIterator[World]:
    """People of every role with tokens (and spoilt ones), a red gas clue with its evidence
    (one camera frame added), case, task and command, all routed to housing."""
    async with start_gateway(database_url, None, **{**QUIET, **overrides}) as gw:
        people = {
            "admin": await _person(gw, "Ada Admin", "admin", None),
            "duty": await _person(gw, "Du Duty", "duty", None),
            "department": await _person(gw, "Hou Housing", "department", "housing"),
            "outsider": await _person(gw, "Tra Transport", "department", "transport"),
            "auditor": await _person(gw, "Aud Auditor", "auditor", None),
            "gone": await _person(gw, "Gone Person", "duty", None),
        }
        tokens = {who: (await _token(gw, pid))["token"] for who, pid in people.items()}
        expired = await _token(gw, people["duty"])
        revoked = await _token(gw, people["duty"])
        spare = await _token(gw, people["duty"])
        assert (await gw.http.delete(f"/api/v1/tokens/{revoked['id']}")).status_code == 200
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute(
                "UPDATE api_tokens SET created_at = now() - interval '2 days',"
                " expires_at = now() - interval '1 day' WHERE id = %s",
                (expired["id"],),
            )
            await conn.execute("UPDATE people SET active = false WHERE id = %s", (people["gone"],))
        tokens |= {
            "expired": expired["token"],
            "revoked": revoked["token"],
            "deactivated": tokens.pop("gone"),
            "garbage": "ofs_1_" + "A" * 43,
        }
        red = await _red_gas_clue(gw)
        # on another restaurant: a clue of its own, not joined to the red one
        reported = await gw.http.post(
            "/api/v1/clues", json=_report_body(subject="rest-qinba-hotpot")
        )
        assert reported.status_code == 201, reported.text
        case_id = red["case_id"]
        task = await gw.http.post(
            f"/api/v1/cases/{case_id}/tasks",
            json={
                "title": "inspect",
                "assignee": "team 1",
                "due_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            },
        )
        assert task.status_code == 201, task.text
        command = await gw.http.post(
            "/api/v1/commands",
            json={"device_id": "gas-0001", "command": "close_valve", "case_id": case_id},
        )
        assert command.status_code == 201, command.text
        jpeg = b"\xff\xd8\xff\xe0 not really a picture \xff\xd9"
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute(
                "INSERT INTO evidence_frames (evidence_id, idx, ts, sha256, jpeg)"
                " VALUES (%s, 0, now(), %s, %s)",
                (red["evidence_id"], hashlib.sha256(jpeg).hexdigest(), jpeg),
            )
        ids = {
            "clue_id": reported.json()["clue"]["id"],
            "case_id": case_id,
            "evidence_id": red["evidence_id"],
            "index": 0,
            "task_id": task.json()["tasks"][0]["id"],
            "command_id": command.json()["id"],
            "device_id": "gas-0001",
            "person_id": people["duty"],
            "token_id": spare["id"],
            "red_clue_id": red["id"],
        }
        yield World(gw, tokens, ids, people)


def _bodies(ids: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    reason = {"reason": "checked"}
    return {
        ("POST", "/api/v1/clues"): _report_body(),
        ("POST", "/api/v1/clues/{clue_id}/triage"): reason,
        ("POST", "/api/v1/clues/{clue_id}/assign"): {"department": "housing"},
        ("POST", "/api/v1/clues/{clue_id}/transfer"): {
            "to_department": "market",
            "reason": "a market matter",
        },
        ("POST", "/api/v1/clues/{clue_id}/handle"): {"note": "valve replaced"},
        ("POST", "/api/v1/clues/{clue_id}/close"): {"disposition": "rectified"},
        ("POST", "/api/v1/clues/{clue_id}/escalate"): reason,
        ("POST", "/api/v1/cases/{case_id}/investigate"): reason,
        ("POST", "/api/v1/cases/{case_id}/decide"): {"kind": "warning", "reason": "checked"},
        ("POST", "/api/v1/cases/{case_id}/rectify"): reason,
        ("POST", "/api/v1/cases/{case_id}/close"): reason,
        ("POST", "/api/v1/cases/{case_id}/transfer"): {
            "to_department": "market",
            "reason": "a market matter",
        },
        ("POST", "/api/v1/cases/{case_id}/hand-over"): {
            "recipient": "public security bureau",
            "reason": "a crime",
        },
        ("POST", "/api/v1/cases/{case_id}/tasks"): {
            "title": "visit",
            "assignee": "team 2",
            "due_at": soon,
        },
        ("POST", "/api/v1/cases/{case_id}/tasks/{task_id}/complete"): {"note": "done"},
        ("POST", "/api/v1/commands"): {
            "device_id": "gas-0001",
            "command": "close_valve",
            "case_id": ids["case_id"],
        },
        ("POST", "/api/v1/people"): {"name": "Nova", "role": "auditor"},
        ("PATCH", "/api/v1/people/{person_id}"): {"active": True},
        ("POST", "/api/v1/people/{person_id}/tokens"): {"ttl_s": 60},
    }


async def _restore_routing(database_url: str, ids: dict[str, Any]) -> None:
    """Transfers in the matrix move the clue and case away from housing; put them back, so
    that every caller is asked about the same routing."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(
            "UPDATE clues SET department = 'housing' WHERE id = ANY(%s)",
            ([ids["clue_id"], ids["red_clue_id"]],),
        )
        await conn.execute(
            "UPDATE cases SET department = 'housing' WHERE id = %s", (ids["case_id"],)
        )


async def _ws_outcome(w: World, token: str) -> int | str:
    url = w.gw.base_url.replace("http://", "ws://") + f"/api/v1/alerts/live?token={token}"
    async with websockets.connect(url) as ws:
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 0
            return 401 if code == 1008 else code
    return OK if hello["type"] == "hello" else 0


async def test_each_role_against_each_route(database_url: str) -> None:
    async with world(database_url) as w:
        bodies = _bodies(w.ids)
        results: dict[tuple[str, str, str], int | str] = {}
        for (method, path), expected in EXPECTED.items():
            url = path.format(**w.ids)
            for caller in [*CALLERS, *UNAUTHENTICATED]:
                want = expected.get(caller, 401)
                token = w.tokens.get(caller)
                if method == "WS":
                    got: int | str = await _ws_outcome(w, token or "")
                else:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with httpx.AsyncClient(base_url=w.gw.base_url, timeout=10) as client:
                        response = await client.request(
                            method, url, headers=headers, json=bodies.get((method, path))
                        )
                    status = response.status_code
                    assert status < 500, (method, url, caller, response.text)
                    passed = status in (200, 201) or (status == 409 and method != "GET")
                    got = OK if passed else status
                    if want == 401 and status == 401:
                        assert response.headers["www-authenticate"] == "Bearer"
                    if method != "GET":
                        await _restore_routing(database_url, w.ids)
                results[(method, path, caller)] = got
        wrong = {
            key: (got, EXPECTED[key[:2]].get(key[2], 401))
            for key, got in results.items()
            if got != EXPECTED[key[:2]].get(key[2], 401)
        }
        assert not wrong, wrong


async def _as(w: World, who: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=w.gw.base_url, headers={"Authorization": f"Bearer {w.tokens[who]}"}, timeout=10
    )


async def test_another_departments_records_answer_404_and_lists_are_filtered(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        # a clue of a matter transport cooperates on, not housing
        chem = await w.gw.http.post(
            "/api/v1/clues", json=_report_body("hazardous-chemicals", "chem-warehouse-east")
        )
        assert chem.status_code == 201, chem.text
        chem_id = chem.json()["clue"]["id"]
        async with await _as(w, "outsider") as transport, await _as(w, "department") as housing:
            for path in (
                f"/api/v1/clues/{w.ids['red_clue_id']}",
                f"/api/v1/cases/{w.ids['case_id']}",
                f"/api/v1/evidence/{w.ids['evidence_id']}",
                f"/api/v1/evidence/{w.ids['evidence_id']}/export",
                f"/api/v1/commands/{w.ids['command_id']}",
            ):
                hidden = await transport.get(path)
                assert hidden.status_code == 404, path
                # the same answer as for something that does not exist
                absent = await w.gw.http.get(path.replace(path.split("/")[4], "nope"))
                assert absent.status_code == 404
                assert (
                    hidden.json()["detail"].replace(path.split("/")[4], "nope")
                    == (absent.json()["detail"])
                ), path
                assert (await housing.get(path)).status_code == 200, path
            assert (await transport.get(f"/api/v1/clues/{chem_id}")).status_code == 200
            assert (await housing.get(f"/api/v1/clues/{chem_id}")).status_code == 404
            seen_by_transport = {c["id"] for c in (await transport.get("/api/v1/clues")).json()}
            seen_by_housing = {c["id"] for c in (await housing.get("/api/v1/clues")).json()}
            everything = {c["id"] for c in (await w.gw.http.get("/api/v1/clues")).json()}
            assert seen_by_transport == {chem_id}
            assert seen_by_housing == everything - {chem_id}
            assert w.ids["red_clue_id"] in seen_by_housing
            assert (await transport.get("/api/v1/cases")).json() == []
            assert (await transport.get("/api/v1/commands")).json() == []
            commands = (await housing.get("/api/v1/commands")).json()
            assert w.ids["command_id"] in [c["id"] for c in commands]
            assert [c["id"] for c in (await housing.get("/api/v1/cases")).json()] == [
                w.ids["case_id"]
            ]
            devices = {d["id"] for d in (await transport.get("/api/v1/devices")).json()}
            assert devices == set()  # transport cooperates on no matter with devices
            gas = {d["id"] for d in (await housing.get("/api/v1/devices")).json()}
            assert "gas-0001" in gas
            assert "elev-0001" in gas  # special equipment: housing cooperates
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                await conn.execute(
                    "INSERT INTO quarantine (topic, device_id, reason, payload) VALUES"
                    " ('offsite/v1/gas/gas-0001/telemetry', 'gas-0001', 'bad json', 'x'),"
                    " ('offsite/v1/gas/nope/telemetry', 'nope', 'unknown device', 'y')"
                )
            everyone = {q["device_id"] for q in (await w.gw.http.get("/api/v1/quarantine")).json()}
            assert everyone == {"gas-0001", "nope"}
            mine = {q["device_id"] for q in (await housing.get("/api/v1/quarantine")).json()}
            assert mine == {"gas-0001"}
            assert (await transport.get("/api/v1/quarantine")).json() == []
            alerts = (await transport.get("/api/v1/alerts")).json()
            assert alerts
            assert all(a["clue"]["id"] == chem_id for a in alerts)
            # acting on another department's clue is the same 404, and nothing changes
            step = await transport.post(
                f"/api/v1/clues/{w.ids['clue_id']}/triage", json={"reason": "mine?"}
            )
            assert step.status_code == 404
            ack = await transport.post(f"/api/v1/clues/{w.ids['clue_id']}/acknowledge")
            assert ack.status_code == 404
            clue = (await housing.get(f"/api/v1/clues/{w.ids['clue_id']}")).json()
            assert clue["status"] == "new"
            assert clue["acknowledged_at"] is None
            # a clue on gas-0001 routed to transport brings the device into its scope
            assert (await transport.get("/api/v1/telemetry/gas-0001")).status_code == 404
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                await conn.execute(
                    "UPDATE clues SET department = 'transport' WHERE id = %s",
                    (w.ids["red_clue_id"],),
                )
            assert (await transport.get("/api/v1/telemetry/gas-0001")).status_code == 200
            devices = {d["id"] for d in (await transport.get("/api/v1/devices")).json()}
            assert devices == {"gas-0001"}


async def test_the_live_stream_carries_only_the_departments_alerts(database_url: str) -> None:
    async with world(database_url) as w:
        base = w.gw.base_url.replace("http://", "ws://") + "/api/v1/alerts/live?after=0&token="
        streams = {
            who: await websockets.connect(base + w.tokens[who])
            for who in ("admin", "department", "outsider")
        }
        try:
            chem = await w.gw.http.post(
                "/api/v1/clues", json=_report_body("hazardous-chemicals", "chem-warehouse-east")
            )
            chem_id = chem.json()["clue"]["id"]
            marker = await w.gw.http.post(  # a live housing alert after the chemicals one
                f"/api/v1/clues/{w.ids['clue_id']}/triage", json={"reason": "looked at"}
            )
            assert marker.status_code == 200
            seen: dict[str, list[str]] = {}
            for who, ws in streams.items():
                clues: list[str] = []
                while True:
                    try:
                        message = json.loads(await asyncio.wait_for(ws.recv(), 2))
                    except TimeoutError:
                        break
                    if "clue" in message:
                        clues.append(message["clue"]["id"])
                seen[who] = clues
        finally:
            for ws in streams.values():
                await ws.close()
        assert chem_id in seen["admin"]
        assert w.ids["clue_id"] in seen["admin"]
        assert set(seen["outsider"]) == {chem_id}
        assert chem_id not in seen["department"]
        assert w.ids["clue_id"] in seen["department"]
        assert w.ids["red_clue_id"] in seen["department"]


async def test_actions_are_recorded_with_the_person(database_url: str) -> None:
    async with world(database_url) as w:
        async with await _as(w, "department") as housing:
            me = (await housing.get("/api/v1/me")).json()
            assert me["actor"] == f"person:{w.people['department']}:Hou Housing"
            assert (me["role"], me["department"]) == ("department", "housing")
            for action, body in (
                ("triage", {"reason": "a real smell"}),
                ("assign", {"department": "housing"}),
                ("handle", {"note": "pipe fixed"}),
            ):
                response = await housing.post(
                    f"/api/v1/clues/{w.ids['clue_id']}/{action}", json=body
                )
                assert response.status_code == 200, response.text
            history = (await housing.get(f"/api/v1/clues/{w.ids['clue_id']}")).json()["events"]
        assert [e["actor"] for e in history[-3:]] == [me["actor"]] * 3
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "SELECT actor, action FROM ledger WHERE object_id = %s ORDER BY seq",
                (w.ids["clue_id"],),
            )
            entries = await cur.fetchall()
            cur = await conn.execute(
                "SELECT actor, action, object_id FROM ledger WHERE object_kind IN"
                " ('person', 'token') ORDER BY seq"
            )
            management = await cur.fetchall()
        assert (me["actor"], "clue.handled") in entries
        assert [a for a, action in entries if action in ("clue.triaged", "clue.assigned")] == [
            me["actor"]
        ] * 2
        assert ("admin:bootstrap", "person.added", str(w.people["department"])) in management
        assert any(action == "token.revoked" for _, action, _ in management)


async def test_tokens_are_stored_hashed_and_work_until_revoked(database_url: str) -> None:
    async with world(database_url) as w:
        token = w.tokens["department"]
        async with await _as(w, "department") as housing:
            assert (await housing.get("/api/v1/me")).status_code == 200
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute("SELECT id, sha256, last_used_at FROM api_tokens")
            rows = await cur.fetchall()
            dump = await conn.execute("SELECT string_agg(t::text, ' ') FROM api_tokens t")
            as_text = (await dump.fetchone())[0]  # type: ignore[index]
        secrets = [t for t in w.tokens.values() if t.startswith("ofs_")]
        for secret in secrets:
            assert secret not in as_text
            assert secret.split("_", 2)[2] not in as_text
        hashes = {bytes(r[1]) for r in rows}
        assert hashlib.sha256(token.encode()).digest() in hashes
        token_id = int(token.split("_")[1])
        assert next(r for r in rows if r[0] == token_id)[2] is not None  # last use recorded
        async with await _as(w, "department") as housing:
            # a token with one character changed is refused
            forged = token[:-1] + ("A" if token[-1] != "A" else "B")
            assert (
                await housing.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})
            ).status_code == 401
            assert (await w.gw.http.delete(f"/api/v1/tokens/{token_id}")).status_code == 200
            refused = await housing.get("/api/v1/me")
            assert refused.status_code == 401
            assert refused.json()["detail"] == "token revoked"
            again = await w.gw.http.delete(f"/api/v1/tokens/{token_id}")
            assert again.status_code == 409
        listed = (
            await w.gw.http.get("/api/v1/tokens", params={"person_id": w.people["department"]})
        ).json()
        assert [t["id"] for t in listed] == [token_id]
        assert "token" not in listed[0]
        assert (await w.gw.http.delete("/api/v1/tokens/999999")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "No Dept", "role": "department"}, 422),
        ({"name": "Bad Dept", "role": "department", "department": "nope"}, 422),
        ({"name": "Bad Role", "role": "superuser"}, 422),
        ({"name": "a:b", "role": "duty"}, 422),
        ({"name": "Extra", "role": "duty", "admin": True}, 422),
        ({"name": "Nul\u0000", "role": "duty"}, 422),
        ({"name": "Nul", "role": "department", "department": "hou\u0000sing"}, 422),
    ],
)
async def test_people_are_refused_with_a_reason(
    database_url: str, body: dict[str, Any], status: int
) -> None:
    async with start_gateway(database_url, None, **QUIET) as gw:
        response = await gw.http.post("/api/v1/people", json=body)
        assert response.status_code == status, response.text
        assert (await gw.http.get("/api/v1/people")).json() == []


async def test_a_deactivated_person_is_refused_until_reactivated(database_url: str) -> None:
    async with world(database_url) as w:
        person = w.people["duty"]
        async with await _as(w, "duty") as duty:
            assert (await duty.get("/api/v1/me")).status_code == 200
            off = await w.gw.http.patch(f"/api/v1/people/{person}", json={"active": False})
            assert (off.status_code, off.json()["active"]) == (200, False)
            refused = await duty.get("/api/v1/me")
            assert (refused.status_code, refused.json()["detail"]) == (401, "person deactivated")
            issue = await w.gw.http.post(f"/api/v1/people/{person}/tokens", json={})
            assert issue.status_code == 409  # no new token for an inactive person either
            on = await w.gw.http.patch(f"/api/v1/people/{person}", json={"active": True})
            assert on.status_code == 200
            assert (await duty.get("/api/v1/me")).status_code == 200
        missing = await w.gw.http.patch("/api/v1/people/999999", json={"active": False})
        assert missing.status_code == 404


async def _read_until_closed(ws: websockets.ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 5)


async def test_a_live_stream_ends_when_its_token_is_revoked(database_url: str) -> None:
    async with world(database_url, live_token_recheck_s=0.2) as w:
        token = w.tokens["department"]
        url = w.gw.base_url.replace("http://", "ws://") + f"/api/v1/alerts/live?token={token}"
        async with websockets.connect(url) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "hello"
            await asyncio.sleep(0.5)  # rechecked and still valid: the stream stays
            revoked = await w.gw.http.delete(f"/api/v1/tokens/{token.split('_')[1]}")
            assert revoked.status_code == 200
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await _read_until_closed(ws)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token revoked")


def test_the_cli_adds_people_and_issues_and_revokes_tokens(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OFFSITE_DATABASE_URL", database_url)
    assert main(["people", "add", "--name", "Wang Fang", "--role", "department"]) == 1
    assert "needs a department" in capsys.readouterr().err
    args = ["people", "add", "--name", "Wang Fang", "--role", "department"]
    assert main([*args, "--department", "housing"]) == 0
    person = json.loads(capsys.readouterr().out)
    assert (person["role"], person["department"]) == ("department", "housing")
    assert main(["tokens", "issue", "Wang Fang", "--ttl", "2h", "--name", "laptop"]) == 0
    printed = capsys.readouterr()
    token = printed.out.strip()
    assert token.startswith("ofs_")
    assert "shown once" in printed.err
    assert main(["tokens", "list", "--person", "Wang Fang"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert token not in json.dumps(listed)
    (row,) = listed
    lifetime = datetime.fromisoformat(row["expires_at"]) - datetime.fromisoformat(row["created_at"])
    assert lifetime == timedelta(hours=2)
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT sha256 FROM api_tokens WHERE id = %s", (row["id"],))
        assert bytes(stored.fetchone()[0]) == hashlib.sha256(token.encode()).digest()  # type: ignore[index]
        ledger = conn.execute("SELECT actor, action FROM ledger ORDER BY seq").fetchall()
    assert [a for _, a in ledger] == ["person.added", "token.issued"]
    assert all(actor.startswith("cli:") for actor, _ in ledger)
    assert main(["tokens", "revoke", str(row["id"])]) == 0
    assert main(["tokens", "revoke", str(row["id"])]) == 1
    assert "already revoked" in capsys.readouterr().err
    assert main(["tokens", "issue", "nobody"]) == 1
    with pytest.raises(SystemExit):
        main(["tokens", "issue", "Wang Fang", "--ttl", "soon"])
