"""Remote enforcement through the real broker: a command reaches the device on its `cmd`
topic, the device's acknowledgement closes it, a silent device lets it time out; every
command and outcome is in the ledger."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from offsite.casework import ledger
from offsite.simulators.equipment import run_equipment
from offsite.simulators.gas import LeakScript, run_gas
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import RunningGateway, eventually, publish, start_gateway


def _device(
    port: int, device: str, received: list[dict[str, Any]], ready: threading.Event
) -> paho.Client:
    """A gas detector that closes its valve when told, and says so."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}")

    def on_connect(c: paho.Client, *_: object) -> None:
        c.subscribe(f"offsite/v1/gas/{device}/cmd", qos=1)

    def on_subscribe(*_: object) -> None:
        ready.set()

    def on_message(c: paho.Client, _: object, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        received.append(body)
        ack = {"command_id": body["command_id"], "ok": True, "detail": "valve closed"}
        c.publish(f"offsite/v1/gas/{device}/cmd/ack", json.dumps(ack), qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


async def _entries(url: str) -> list[ledger.Entry]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT * FROM ledger ORDER BY seq")
        return [ledger.entry_from_row(r) for r in await cur.fetchall()]


async def test_a_command_is_acknowledged_by_the_device_and_one_unanswered_times_out(
    database_url: str, broker: BrokerProcess
) -> None:
    received: list[dict[str, Any]] = []
    ready = threading.Event()
    device = _device(broker.port, "gas-0001", received, ready)
    try:
        assert ready.wait(10)
        async with start_gateway(database_url, broker.url, silent_sweep_s=0.2) as gw:
            sent = await gw.http.post(
                "/api/v1/commands",
                json={"device_id": "gas-0001", "command": "close_valve", "reason": "leak"},
            )
            assert sent.status_code == 201, sent.text
            command = sent.json()
            assert command["status"] == "sent"

            async def answered() -> dict[str, Any] | None:
                got: dict[str, Any] = (
                    await gw.http.get(f"/api/v1/commands/{command['id']}")
                ).json()
                return got if got["status"] != "sent" else None

            done = await eventually(answered)
            assert done["status"] == "acked"
            assert done["answer"] == {"ok": True, "detail": "valve closed"}
            assert received[0]["command"] == "close_valve"
            assert received[0]["command_id"] == command["id"]

            # gas-0002 has nobody listening: its command times out
            silent = (
                await gw.http.post(
                    "/api/v1/commands",
                    json={"device_id": "gas-0002", "command": "close_valve", "allowed_s": 0.5},
                )
            ).json()

            async def timed_out() -> dict[str, Any] | None:
                got: dict[str, Any] = (await gw.http.get(f"/api/v1/commands/{silent['id']}")).json()
                return got if got["status"] == "timed_out" else None

            await eventually(timed_out)

            refused = await gw.http.post(
                "/api/v1/commands", json={"device_id": "gas-0001", "command": "out_of_service"}
            )
            assert refused.status_code == 422
            assert "not a command for a gas_detector" in refused.text
    finally:
        device.loop_stop()
        device.disconnect()
    entries = await _entries(database_url)
    actions = [(e.action, e.object_id) for e in entries if e.object_kind == "command"]
    assert actions == [
        ("command.issued", command["id"]),
        ("command.acked", command["id"]),
        ("command.issued", silent["id"]),
        ("command.timed_out", silent["id"]),
    ]
    assert ledger.chain_problems(entries) == []


def _answers(
    port: int, device: str, received: list[dict[str, Any]], ready: threading.Event
) -> paho.Client:
    """An onlooker on a device's `cmd/ack`: what the device answers to commands sent to it
    by hand (the API refuses unknown commands before they reach the broker)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"obs-{uuid.uuid4().hex[:6]}")
    client.on_connect = lambda c, *_: c.subscribe(f"offsite/v1/gas/{device}/cmd/ack", qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda _c, _u, msg: received.append(json.loads(msg.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


async def _gas_points(gw: RunningGateway, device: str) -> list[dict[str, Any]]:
    page = await gw.http.get(
        f"/api/v1/telemetry/{device}", params={"bucket": "raw", "limit": 10_000}
    )
    points: list[dict[str, Any]] = page.json()["points"]
    return points


async def test_a_simulated_gas_detector_closes_its_valve_and_the_leak_clears(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, silent_sweep_s=0.2) as gw:
        stop = threading.Event()
        sim = asyncio.create_task(
            asyncio.to_thread(
                run_gas,
                "127.0.0.1",
                broker.port,
                devices=2,
                rate_hz=5.0,
                scenario="leak",
                duration_s=120.0,
                protocol="5",
                stop=stop,
                script=LeakScript(start_s=0.0),
            )
        )
        acks: list[dict[str, Any]] = []
        ready = threading.Event()
        onlooker = _answers(broker.port, "gas-0002", acks, ready)
        try:
            # The leak on gas-0001 is rising towards the first level when the valve closes.
            async def rising() -> list[dict[str, Any]] | None:
                points = await _gas_points(gw, "gas-0001")
                return points if points and points[-1]["lel_pct"] >= 18 else None

            await eventually(rising, timeout=30)
            sent = await gw.http.post(
                "/api/v1/commands",
                json={"device_id": "gas-0001", "command": "close_valve", "reason": "leak"},
            )
            assert sent.status_code == 201, sent.text
            command_id = sent.json()["id"]

            async def answered() -> dict[str, Any] | None:
                got: dict[str, Any] = (await gw.http.get(f"/api/v1/commands/{command_id}")).json()
                return got if got["status"] != "sent" else None

            done = await eventually(answered)
            assert done["status"] == "acked"
            detail = done["answer"]["detail"]
            assert done["answer"]["ok"] is True
            assert detail.startswith("valve closed at ")
            assert float(detail.split()[3]) >= 15.0  # the level it closed on, %LEL

            # The room clears: from the first reading with the valve closed, the gas only
            # falls, to near the baseline, while the script alone would have gone past 60.
            async def cleared() -> list[dict[str, Any]] | None:
                points = await _gas_points(gw, "gas-0001")
                closed = [p for p in points if p["valve"] == "closed"]
                return points if closed and closed[-1]["lel_pct"] < 5.0 else None

            points = await eventually(cleared, timeout=40)
            valves = [p["valve"] for p in points]
            first_closed = valves.index("closed")
            assert set(valves[:first_closed]) == {"open"}
            assert set(valves[first_closed:]) == {"closed"}
            closed = [p["lel_pct"] for p in points[first_closed:]]
            assert closed[0] >= 12.0
            assert max(closed) <= closed[0] + 1.5  # noise only, never the leak again

            # A second close is idempotent; opening brings the (still leaking) gas back.
            again = (
                await gw.http.post(
                    "/api/v1/commands", json={"device_id": "gas-0001", "command": "close_valve"}
                )
            ).json()
            command_id = again["id"]
            assert (await eventually(answered))["answer"] == {
                "ok": True,
                "detail": "valve already closed",
            }
            opened = (
                await gw.http.post(
                    "/api/v1/commands", json={"device_id": "gas-0001", "command": "open_valve"}
                )
            ).json()
            command_id = opened["id"]
            assert (await eventually(answered))["answer"] == {"ok": True, "detail": "valve opened"}

            async def reopened() -> bool:
                points = await _gas_points(gw, "gas-0001")
                return bool(points[-1]["valve"] == "open")

            await eventually(reopened)

            # Commands the API would refuse, sent by hand: the device refuses them with the
            # reason, and the gateway records nothing for ids it never issued.
            assert ready.wait(10)
            late = datetime.now(UTC) - timedelta(seconds=5)
            for body in (
                {"command_id": "by-hand-1", "command": "self_destruct", "params": {}},
                {"command_id": "by-hand-2", "command": "close_valve", "deadline": late.isoformat()},
                {"command_id": "by-hand-3", "command": "close_valve", "params": [1]},
                {"command": "close_valve"},  # nothing to answer to: ignored
            ):
                publish(broker.port, "offsite/v1/gas/gas-0002/cmd", [json.dumps(body)])

            async def three() -> list[dict[str, Any]] | None:
                return acks if len(acks) >= 3 else None

            await eventually(three)
            await asyncio.sleep(0.5)  # nothing more comes
            by_id = {a["command_id"]: a for a in acks}
            assert len(acks) == 3
            assert by_id["by-hand-1"] == {
                "command_id": "by-hand-1",
                "ok": False,
                "detail": "unknown command 'self_destruct'; a gas detector takes close_valve,"
                " open_valve",
            }
            assert by_id["by-hand-2"]["ok"] is False
            assert by_id["by-hand-2"]["detail"] == (
                f"arrived after its deadline {late.isoformat()}; not carried out"
            )
            assert by_id["by-hand-3"]["ok"] is False
            assert by_id["by-hand-3"]["detail"].startswith("malformed command: params: ")
            # gas-0002 never closed its valve
            assert {p["valve"] for p in await _gas_points(gw, "gas-0002")} == {"open"}
        finally:
            stop.set()
            onlooker.loop_stop()
            onlooker.disconnect()
            await sim

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT id, device_id, command, params, case_id, status, reason, issued_by,"
            " answer, answered_at > issued_at FROM device_commands ORDER BY issued_at"
        )
        rows = await cur.fetchall()
    first = rows[0]
    assert first[1:] == (
        "gas-0001",
        "close_valve",
        {},
        None,
        "acked",
        "leak",
        "admin:bootstrap",
        {"ok": True, "detail": detail},
        True,
    )
    assert [(r[2], r[5], r[8]) for r in rows[1:]] == [
        ("close_valve", "acked", {"ok": True, "detail": "valve already closed"}),
        ("open_valve", "acked", {"ok": True, "detail": "valve opened"}),
    ]
    entries = await _entries(database_url)
    commands = [e for e in entries if e.object_kind == "command"]
    assert [(e.action, e.actor, e.object_id) for e in commands[:2]] == [
        ("command.issued", "admin:bootstrap", first[0]),
        ("command.acked", "device:gas-0001", first[0]),
    ]
    assert json.loads(commands[0].payload or "") == {
        "device_id": "gas-0001",
        "command": "close_valve",
        "params": {},
        "case_id": None,
        "reason": "leak",
    }
    assert json.loads(commands[1].payload or "") == {"ok": True, "detail": detail}
    assert [e.action for e in commands] == ["command.issued", "command.acked"] * 3
    assert ledger.chain_problems(entries) == []


async def test_a_simulated_elevator_taken_out_of_service_stops(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, silent_sweep_s=0.2) as gw:
        stop = threading.Event()
        sim = asyncio.create_task(
            asyncio.to_thread(
                run_equipment,
                "127.0.0.1",
                broker.port,
                scenario="normal",
                rate_hz=5.0,
                duration_s=120.0,
                stop=stop,
            )
        )
        try:

            async def points() -> list[dict[str, Any]]:
                page = await gw.http.get(
                    "/api/v1/telemetry/elev-0001", params={"bucket": "raw", "limit": 10_000}
                )
                found: list[dict[str, Any]] = page.json()["points"]
                return found

            async def moving() -> bool:
                return any(p["moving"] for p in await points())

            await eventually(moving, timeout=20)  # in service, travelling between floors
            sent = (
                await gw.http.post(
                    "/api/v1/commands",
                    json={"device_id": "elev-0001", "command": "out_of_service"},
                )
            ).json()

            async def answered() -> dict[str, Any] | None:
                got: dict[str, Any] = (await gw.http.get(f"/api/v1/commands/{sent['id']}")).json()
                return got if got["status"] != "sent" else None

            done = await eventually(answered)
            assert done["status"] == "acked"
            detail = done["answer"]["detail"]
            assert detail.startswith("out of service: stopped at floor ")
            floor = int(detail.split()[6].rstrip(","))
            answered_at = datetime.fromisoformat(done["answered_at"])

            # The readings stamped after the answer (device and gateway share this clock).
            async def stopped() -> list[dict[str, Any]] | None:
                found = await points()
                after = [p for p in found if datetime.fromisoformat(p["ts"]) > answered_at]
                return after if len(after) >= 10 else None

            after = await eventually(stopped, timeout=20)
            assert {
                (p["speed_mps"], p["moving"], p["in_door_zone"], p["door"], p["floor"])
                for p in after
            } == {(0.0, False, True, "open", floor)}

            refused = await gw.http.post(
                "/api/v1/commands", json={"device_id": "elev-0001", "command": "close_valve"}
            )
            assert refused.status_code == 422
        finally:
            stop.set()
            await sim
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT command, status, answer FROM device_commands")
        assert await cur.fetchall() == [("out_of_service", "acked", {"ok": True, "detail": detail})]
    actions = [
        (e.action, e.actor) for e in await _entries(database_url) if e.object_kind == "command"
    ]
    assert actions == [("command.issued", "admin:bootstrap"), ("command.acked", "device:elev-0001")]
