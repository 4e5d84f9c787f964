"""A clue is announced before the readings that fired it are committed; its evidence is
fixed only after that commit (`Runtime._ingest_loop`, `_complete_loop`).

The telemetry writer is held behind a real lock on `telemetry_gas` while a message whose
readings fire a gas clue arrives. With the lock held, the clue row, its `clue.opened`
alert and the live push already exist, while the readings are not stored, the message is
not acknowledged to the broker and the clue has no evidence. Once the lock goes, the
readings are committed and acknowledged, then the evidence is fixed, its window ending at
the firing reading, as stored."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import websockets

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import RunningGateway, eventually, gas_reading, publish, start_gateway

DEVICE = "gas-0003"
TOPIC = f"offsite/v1/gas/{DEVICE}/telemetry"
CONFIRM_S = 10
"""Level 1 held this long (device time) fires the clue: at the reading of seq CONFIRM_S."""
READINGS = 20
"""One message, so one batch: the firing reading and those after it, all at 30 %LEL."""
LEL = 30.0
"""Above level 1 (25), below level 2 (50): one orange clue, no case."""
TIMEOUT_S = 10.0
WITHIN_S = 1234.5
"""The department's own limit for orange clues in the first test."""


async def _next_alert(ws: websockets.ClientConnection) -> dict[str, Any]:
    try:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
    except TimeoutError:
        raise AssertionError(f"no alert pushed within {TIMEOUT_S} s") from None
    message: dict[str, Any] = json.loads(raw)
    return message


async def _one(conn: psycopg.AsyncConnection[Any], query: str, *params: Any) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def _writers_waiting(
    conn: psycopg.AsyncConnection[Any], table: str = "telemetry_gas"
) -> list[str]:
    """The lock modes requested on `table`, in this database, and not granted."""
    cur = await conn.execute(
        "SELECT mode FROM pg_locks WHERE locktype = 'relation' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND relation = %s::regclass",
        (table,),
    )
    return [str(row[0]) for row in await cur.fetchall()]


def _acked(gw: RunningGateway) -> float | None:
    """Messages acknowledged to the broker (after their commit)."""
    return gw.runtime.metrics.registry.get_sample_value("offsite_mqtt_acked_total")


async def _acked_once(gw: RunningGateway) -> bool:
    return _acked(gw) == 1.0


def _message(base: datetime) -> str:
    return json.dumps(
        [
            json.loads(gas_reading(int((base + timedelta(seconds=i)).timestamp() * 1000), i, LEL))
            for i in range(READINGS)
        ]
    )


async def test_a_clue_is_announced_before_its_readings_commit_and_evidenced_after(
    database_url: str, broker: BrokerProcess
) -> None:
    base = datetime.fromtimestamp(int(time.time()) - 60, UTC)
    body = _message(base)
    firing_at = base + timedelta(seconds=CONFIRM_S)

    async with (
        start_gateway(database_url, broker.url, gas_confirm_s=CONFIRM_S) as gw,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe,
        await psycopg.AsyncConnection.connect(database_url) as blocker,
        websockets.connect(gw.ws_url()) as ws,
    ):
        assert (await _next_alert(ws))["type"] == "hello"
        # Partitions made now, not by the gateway's maintenance behind the lock: its ACCESS
        # EXCLUSIVE request would queue there, and every read (the probe's too) behind it.
        await probe.execute(
            "SELECT offsite_ensure_partitions('telemetry_gas', current_date - 1, current_date + 3)"
        )
        # The department's own limit, with a fraction of a second: the alert's deadline is
        # the database's, written as the API writes it.
        await probe.execute(
            "INSERT INTO clue_deadlines (department, severity, within_s)"
            " SELECT id, 'orange', %s FROM departments",
            (WITHIN_S,),
        )
        # SHARE: no INSERT or COPY into the table until the rollback; SELECT goes on.
        await blocker.execute("LOCK TABLE telemetry_gas IN SHARE MODE")
        await asyncio.to_thread(publish, broker.port, TOPIC, [body])

        opened = await _next_alert(ws)
        assert opened["type"] == "clue.opened"
        clue = opened["clue"]
        assert (clue["device_id"], clue["rule"], clue["severity"]) == (
            DEVICE,
            "gas.lel.level1",
            "orange",
        )
        assert clue["evidence_id"] is None
        assert datetime.fromisoformat(clue["opened_at"]) == firing_at
        deadline = firing_at + timedelta(seconds=WITHIN_S)
        assert datetime.fromisoformat(clue["deadline_at"]) == deadline
        # The alert's clue (built with the INSERT, not read back) is the clue as stored.
        stored = (await gw.http.get(f"/api/v1/clues/{clue['id']}")).json()
        assert {k: stored[k] for k in clue} == clue

        # The batch is at the writer, which waits for the lock: it has not committed.
        assert await eventually(lambda: _writers_waiting(probe), TIMEOUT_S) == ["RowExclusiveLock"]
        count = "SELECT count(*) FROM telemetry_gas WHERE device_id = %s"
        assert await _one(probe, count, DEVICE) == 0
        assert _acked(gw) == 0.0
        assert await _one(probe, "SELECT count(*) FROM clues WHERE device_id = %s", DEVICE) == 1
        assert await _one(probe, "SELECT evidence_id FROM clues WHERE id = %s", clue["id"]) is None
        assert await _one(probe, "SELECT count(*) FROM evidence") == 0
        cur = await probe.execute(
            "SELECT type FROM alerts WHERE clue_id = %s ORDER BY seq", (clue["id"],)
        )
        assert [row[0] for row in await cur.fetchall()] == ["clue.opened"]

        await blocker.rollback()  # the lock goes; the batch commits

        updated = await _next_alert(ws)
        assert updated["type"] == "clue.updated"
        assert updated["clue"]["id"] == clue["id"]
        evidence_id = updated["evidence_id"]
        assert evidence_id is not None
        assert updated["clue"]["evidence_id"] == evidence_id
        # The evidence came after the commit: every reading is stored, the message acked.
        assert await _one(probe, count, DEVICE) == READINGS
        await eventually(lambda: _acked_once(gw), TIMEOUT_S)
        assert await _one(probe, "SELECT evidence_id FROM clues WHERE id = %s", clue["id"]) == (
            evidence_id
        )
        cur = await probe.execute(
            "SELECT type FROM alerts WHERE clue_id = %s ORDER BY seq", (clue["id"],)
        )
        assert [row[0] for row in await cur.fetchall()] == ["clue.opened", "clue.updated"]

        cur = await probe.execute(
            "SELECT clue_id, item_count, content FROM evidence WHERE id = %s", (evidence_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        clue_id, item_count, content = row
        assert clue_id == clue["id"]
        readings = json.loads(content)["readings"]
        # From before the trigger (seq 0) to the firing reading (seq CONFIRM_S), as stored.
        assert item_count == len(readings) == CONFIRM_S + 1
        assert [r[1] for r in readings] == list(range(CONFIRM_S + 1))
        firing = readings[-1]
        assert (datetime.fromisoformat(firing[0]), firing[1], firing[2]) == (
            firing_at,
            CONFIRM_S,
            LEL,
        )
        verify = (await gw.http.get(f"/api/v1/evidence/{evidence_id}/verify")).json()
        assert (verify["valid"], verify["source_intact"]) == (True, True)


async def test_readings_are_acknowledged_and_checkpointed_only_once_their_clue_is_announced(
    database_url: str, broker: BrokerProcess
) -> None:
    """The other way round: `clues` is held behind the lock, so the readings commit while
    the clue they raised cannot be announced. Until it is, the message is not acknowledged
    and the device's detector state is not checkpointed: a gateway killed there gets the
    readings again from the broker and judges them again from the last checkpoint, so the
    clue is raised once more instead of lost."""
    base = datetime.fromtimestamp(int(time.time()) - 60, UTC)
    state = "SELECT count(*) FROM detector_state WHERE device_id = %s"
    async with (
        start_gateway(database_url, broker.url, gas_confirm_s=CONFIRM_S) as gw,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe,
        await psycopg.AsyncConnection.connect(database_url) as blocker,
        websockets.connect(gw.ws_url()) as ws,
    ):
        assert (await _next_alert(ws))["type"] == "hello"
        await blocker.execute("LOCK TABLE clues IN SHARE MODE")
        await asyncio.to_thread(publish, broker.port, TOPIC, [_message(base)])

        count = "SELECT count(*) FROM telemetry_gas WHERE device_id = %s"
        assert await eventually(lambda: _one(probe, count, DEVICE), TIMEOUT_S) == READINGS
        assert await eventually(lambda: _writers_waiting(probe, "clues"), TIMEOUT_S) == [
            "RowExclusiveLock"
        ]
        await asyncio.sleep(0.3)  # room for a wrong acknowledgement to happen
        assert _acked(gw) == 0.0
        assert await gw.runtime.checkpoint() == 0
        assert await _one(probe, state, DEVICE) == 0

        await blocker.rollback()  # the clue is announced

        opened = await _next_alert(ws)
        assert (opened["type"], opened["clue"]["device_id"]) == ("clue.opened", DEVICE)
        await eventually(lambda: _acked_once(gw), TIMEOUT_S)
        assert await gw.runtime.checkpoint() == 1
        assert await _one(probe, state, DEVICE) == 1
