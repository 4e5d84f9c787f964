"""Issue 2, item 3: an outside MQTT client publishes readings for a registered device; they
are stored, readable over the API, and a level held past the confirmation delay produces
exactly one clue, pushed live as it happens, with evidence and (for red) a case."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import websockets

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import (
    RunningGateway,
    eventually,
    gas_reading,
    mosquitto_pub,
    publish,
    start_gateway,
)

TOPIC = "offsite/v1/gas/gas-0003/telemetry"


async def clues_of(gw: RunningGateway, **params: str) -> list[dict[str, Any]]:
    response = await gw.http.get("/api/v1/clues", params=params)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


async def next_alert(ws: websockets.ClientConnection, timeout: float = 10) -> dict[str, Any]:  # noqa: ASYNC109
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto-clients")
async def test_mosquitto_pub_readings_are_stored_and_one_clue_is_pushed_live(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, gas_confirm_s=15) as gw:
        async with websockets.connect(gw.ws_url()) as ws:
            hello = await next_alert(ws)
            assert hello["type"] == "hello"
            start_ms = int((datetime.now(UTC) - timedelta(seconds=60)).timestamp() * 1000)
            # 40 readings one second apart (event time), 30 %LEL: above the first level.
            for i in range(40):
                await asyncio.to_thread(
                    mosquitto_pub, broker.port, TOPIC, gas_reading(start_ms + i * 1000, i, 30.0)
                )
            alert = await next_alert(ws)
            assert alert["type"] == "clue.opened"
            clue = alert["clue"]
            assert (clue["rule"], clue["severity"], clue["device_id"]) == (
                "gas.lel.level1",
                "orange",
                "gas-0003",
            )
            assert clue["department"] == "housing"
            assert clue["subject_id"] == "rest-liangpi-corner"

            async def stored() -> list[dict[str, Any]] | None:
                response = await gw.http.get(
                    "/api/v1/telemetry/gas-0003",
                    params={"from": datetime.fromtimestamp(start_ms / 1000 - 1, UTC).isoformat()},
                )
                points: list[dict[str, Any]] = response.json()["points"]
                return points if len(points) == 40 else None

            points = await eventually(stored)
            assert [p["seq"] for p in points] == list(range(40))
            assert all(p["lel_pct"] == 30.0 for p in points)

            async def complete() -> list[dict[str, Any]] | None:
                found = await clues_of(gw, device_id="gas-0003")
                return found if found and found[0]["evidence_id"] else None

            [listed] = await eventually(complete)
            assert listed["id"] == clue["id"]
            assert listed["opened_at"] == clue["opened_at"]
            opened_at = datetime.fromisoformat(listed["opened_at"])
            triggered_at = datetime.fromisoformat(listed["triggered_at"])
            assert opened_at - triggered_at == timedelta(seconds=15)
            assert listed["evidence_id"] is not None
            assert listed["case_id"] is None  # orange: no case by itself

            verify = (await gw.http.get(f"/api/v1/evidence/{listed['evidence_id']}/verify")).json()
            assert verify["valid"]
            assert verify["source_intact"]
            evidence = (await gw.http.get(f"/api/v1/evidence/{listed['evidence_id']}")).json()
            assert evidence["content"]["readings"][0][1] == 0  # from before the trigger on
            assert evidence["item_count"] == 16  # trigger at seq 0, fired at seq 15


async def test_sustained_leak_gives_one_clue_per_level_and_red_opens_one_case(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, gas_confirm_s=10) as gw:
        start_ms = int((datetime.now(UTC) - timedelta(minutes=20)).timestamp() * 1000)
        # Ten minutes at 60 %LEL, one reading a second, in 20-reading messages.
        readings = [json.loads(gas_reading(start_ms + i * 1000, i, 60.0)) for i in range(600)]
        batches = [json.dumps(readings[i : i + 20]) for i in range(0, 600, 20)]
        publish(broker.port, "offsite/v1/gas/gas-0002/telemetry", batches)

        async def two_clues() -> list[dict[str, Any]] | None:
            found = await clues_of(gw, device_id="gas-0002")
            return found if len(found) == 2 and all(c["evidence_id"] for c in found) else None

        found = await eventually(two_clues)
        await asyncio.sleep(0.5)  # anything still in flight would show up now
        found = await clues_of(gw, device_id="gas-0002")
        assert sorted(c["rule"] for c in found) == ["gas.lel.level1", "gas.lel.level2"]
        red = next(c for c in found if c["severity"] == "red")
        assert red["case_id"] is not None
        case = (await gw.http.get(f"/api/v1/cases/{red['case_id']}")).json()
        assert case["department"] == "housing"
        assert case["cooperating_departments"] == ["market", "emergency", "fire"]
        assert case["clue_ids"] == [red["id"]]
        assert case["status"] == "filed"
        assert any("50493" in law for law in case["legal_basis"])
        assert len((await gw.http.get("/api/v1/cases")).json()) == 1

        # The same readings again (a device that re-sends its buffer): stored once, no clue.
        publish(broker.port, "offsite/v1/gas/gas-0002/telemetry", batches[:5])
        await eventually(lambda: _metric(gw, "offsite_readings_duplicate_total", 100.0), timeout=10)
        assert len(await clues_of(gw, device_id="gas-0002")) == 2
        response = await gw.http.get(
            "/api/v1/telemetry/gas-0002",
            params={
                "from": datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
                "limit": "10000",
            },
        )
        assert len(response.json()["points"]) == 600


async def _metric(gw: RunningGateway, name: str, expected: float) -> bool:
    text = (await gw.http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name) and line.split()[-1] == str(expected):
            return True
    return False


async def test_live_stream_resumes_after_a_reconnect_losing_nothing(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, gas_confirm_s=1) as gw:
        base = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp() * 1000)
        async with websockets.connect(gw.ws_url()) as ws:
            last_seq = (await next_alert(ws))["last_seq"]
        # While no console is connected, three devices leak.
        for n, device in enumerate(("gas-0004", "gas-0005", "gas-0006")):
            body = json.dumps(
                [json.loads(gas_reading(base + n * 10 + i * 1000, i, 30.0)) for i in range(3)]
            )
            publish(broker.port, f"offsite/v1/gas/{device}/telemetry", [body])
        await eventually(lambda: _count_clues(gw, 3))
        async with websockets.connect(gw.ws_url(after=last_seq)) as ws:
            assert (await next_alert(ws))["type"] == "hello"
            # each clue: announced first, then again once its evidence is fixed
            missed = [await next_alert(ws) for _ in range(6)]
            opened = [a for a in missed if a["type"] == "clue.opened"]
            assert sorted(a["clue"]["device_id"] for a in opened) == [
                "gas-0004",
                "gas-0005",
                "gas-0006",
            ]
            assert all(a["clue"]["evidence_id"] is None for a in opened)
            completed = [a for a in missed if a["type"] == "clue.updated"]
            assert sorted(a["clue"]["device_id"] for a in completed) == [
                "gas-0004",
                "gas-0005",
                "gas-0006",
            ]
            assert all(a["clue"]["evidence_id"] == a["evidence_id"] for a in completed)
            seqs = [a["seq"] for a in missed]
            assert seqs == list(range(last_seq + 1, last_seq + 7))
            # ...and the stream goes on live after the replay
            publish(
                broker.port,
                "offsite/v1/gas/gas-0007/telemetry",
                [json.dumps([json.loads(gas_reading(base + i * 1000, i, 30.0)) for i in range(3)])],
            )
            live = await next_alert(ws)
            assert live["clue"]["device_id"] == "gas-0007"
            assert live["seq"] == seqs[-1] + 1


async def _count_clues(gw: RunningGateway, n: int) -> bool:
    return len(await clues_of(gw)) == n


async def test_live_stream_refuses_a_bad_token(database_url: str, broker: BrokerProcess) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        async with websockets.connect(gw.ws_url(token="wrong")) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008


async def test_push_latency_is_under_a_second(database_url: str, broker: BrokerProcess) -> None:
    """Not a benchmark: a generous bound that only a broken push path would exceed."""
    async with start_gateway(database_url, broker.url, gas_confirm_s=0) as gw:
        async with websockets.connect(gw.ws_url()) as ws:
            await next_alert(ws)
            now_ms = int(time.time() * 1000)
            started = time.monotonic()
            publish(broker.port, TOPIC, [gas_reading(now_ms, 1, 30.0)])
            alert = await next_alert(ws)
            assert alert["type"] == "clue.opened"
            assert time.monotonic() - started < 1.0
