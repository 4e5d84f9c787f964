"""Remote enforcement through the real broker: a command reaches the device on its `cmd`
topic, the device's acknowledgement closes it, a silent device lets it time out; every
command and outcome is in the ledger."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from offsite.casework import ledger
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, start_gateway


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
