"""A device that floods is throttled before decoding, counted, sampled and flagged once;
another device's readings and alert go through meanwhile (issue 6). Real broker and
database; the identity check of payloads too."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from offsite.gateway.flooding import FloodGuard, Verdict
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import RunningGateway, eventually, gas_reading, publish, start_gateway

FLOODED = 20_000


def test_token_bucket_refuses_beyond_burst_and_rate_and_flags_once() -> None:
    guard = FloodGuard(factor=10, burst=5, min_rate_per_s=0.5, quiet_s=2)
    guard.set_devices({"a": 10.0, "slow": 3600.0})
    assert guard.allowed_rate(10.0) == 1.0
    assert guard.allowed_rate(3600.0) == 0.5  # the floor
    verdicts = [guard.admit("a", 100.0) for _ in range(8)]
    assert verdicts == [Verdict.ADMITTED] * 5 + [Verdict.REFUSED_FIRST] + [Verdict.REFUSED] * 2
    [opened] = guard.take_opened()
    assert (opened.rule, opened.device_id, opened.phase) == ("device.flooding", "a", "opened")
    assert guard.take_opened() == []
    assert guard.admit("a", 101.0) is Verdict.ADMITTED  # one second refills one message
    assert guard.admit("a", 101.0) is Verdict.REFUSED  # same episode: no new flag
    assert guard.admit("unregistered", 101.0) is Verdict.ADMITTED  # not tracked
    assert guard.sweep(102.0) == []  # refused a second ago
    [cleared] = guard.sweep(103.5)
    assert (cleared.phase, cleared.value) == ("cleared", 4.0)
    assert cleared.episode_start == opened.episode_start
    assert guard.flooding() == []
    guard.set_devices({"a": 10.0})  # a registry reload keeps the bucket's state
    assert guard.admit("a", 103.5) is Verdict.ADMITTED


async def _refused(gw: RunningGateway, reason: str, device_id: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "offsite_refused_messages_total", {"reason": reason, "device_id": device_id}
    )
    return value or 0.0


async def _stored(database_url: str, device_id: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM telemetry_gas WHERE device_id = %s", (device_id,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def test_flooding_device_is_throttled_while_another_alerts(
    database_url: str, broker: BrokerProcess
) -> None:
    base = int((datetime.now(UTC) - timedelta(minutes=30)).timestamp() * 1000)
    flood = [gas_reading(base + i * 10, i, 1.0) for i in range(FLOODED)]
    # The normal device: 40 readings over 40 s of device time at 60 %LEL (alarm, level 2),
    # published one message each while the flood runs.
    normal = [gas_reading(base + i * 1000, i, 60.0) for i in range(40)]
    async with start_gateway(
        database_url,
        broker.url,
        gas_confirm_s=10,
        flood_factor=10,
        flood_burst_messages=100,
        flood_min_rate_per_s=1.0,
        flood_quiet_s=2.0,
        silent_sweep_s=0.5,
    ) as gw:
        assert gw.runtime.flood is not None
        # gas-0001 declares one reading every 10 s: 1 msg/s allowed, 100 at once
        # The flood comes from another process (mosquitto_pub, one message per line), as
        # from another device: a publisher thread in this process would hold the GIL
        # against the gateway under test.
        t0 = time.monotonic()
        flooder = await asyncio.create_subprocess_exec(
            "mosquitto_pub",
            *("-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-i", "flooder"),
            *("-t", "offsite/v1/gas/gas-0001/telemetry", "-l"),
            stdin=asyncio.subprocess.PIPE,
        )
        assert flooder.stdin is not None
        stdin = flooder.stdin
        lines = [line.encode() + b"\n" for line in flood]
        normal_done = asyncio.Event()

        async def feed() -> None:
            # in pieces, the last only once the normal device has published: the flood
            # overlaps its publishing however fast this machine sends it
            for start in range(0, FLOODED - 500, 500):
                stdin.write(b"".join(lines[start : start + 500]))
                await stdin.drain()
                await asyncio.sleep(0.01)
            await normal_done.wait()
            stdin.write(b"".join(lines[FLOODED - 500 :]))
            await stdin.drain()
            stdin.close()

        feeder = asyncio.create_task(feed())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(publish, broker.port, "offsite/v1/gas/gas-0002/telemetry", normal)
        normal_sent = time.monotonic()
        assert flooder.returncode is None, "the normal device must publish during the flood"
        normal_done.set()
        await feeder
        assert await flooder.wait() == 0
        flood_s = time.monotonic() - t0

        async def alert() -> list[dict[str, Any]] | None:
            found = (await gw.http.get("/api/v1/clues", params={"device_id": "gas-0002"})).json()
            return found if any(c["rule"] == "gas.lel.level2" for c in found) else None

        await eventually(alert, timeout=20)
        alert_s = time.monotonic() - normal_sent

        async def accounted() -> bool:
            stored = await _stored(database_url, "gas-0001")
            return stored + await _refused(gw, "rate_limited", "gas-0001") == FLOODED

        await eventually(accounted, timeout=30)
        stored = await _stored(database_url, "gas-0001")
        refused = await _refused(gw, "rate_limited", "gas-0001")
        # the burst, plus about one a second while the flood lasted
        assert 100 <= stored <= 100 + flood_s + 3, (stored, flood_s)
        assert stored + refused == FLOODED
        assert await _stored(database_url, "gas-0002") == len(normal)  # none of its refused
        assert await _refused(gw, "rate_limited", "gas-0002") == 0
        assert alert_s < 10, f"the other device's alert took {alert_s:.1f} s"
        print(  # the figures, with -s
            f"flood: {FLOODED} messages in {flood_s:.2f} s, stored {stored}, refused"
            f" {refused:g}; other device's alert {alert_s:.2f} s after its last publish"
        )

        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "SELECT device_id, reason FROM quarantine WHERE reason LIKE 'rate_limited%'"
            )
            samples = await cur.fetchall()
        assert [d for d, _ in samples] == ["gas-0001"]  # one sample for the episode

        async def flagged() -> list[dict[str, Any]] | None:
            found = (await gw.http.get("/api/v1/clues", params={"device_id": "gas-0001"})).json()
            flood_clues = [c for c in found if c["rule"] == "device.flooding"]
            return flood_clues or None

        [clue] = await eventually(flagged)
        assert clue["severity"] == "yellow"
        # the flood stopped: the episode ends after flood_quiet_s and the clue is not reopened
        await eventually(lambda: _no_flooders(gw), timeout=10)
        assert len((await flagged()) or []) == 1
        metrics = (await gw.http.get("/metrics")).text
        assert 'offsite_refused_messages_total{device_id="gas-0001",reason="rate_limited"}' in (
            metrics
        )


async def _no_flooders(gw: RunningGateway) -> bool:
    assert gw.runtime.flood is not None
    return gw.runtime.flood.flooding() == []


async def test_payload_claiming_another_device_is_quarantined(
    database_url: str, broker: BrokerProcess
) -> None:
    base = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp() * 1000)
    topic = "offsite/v1/gas/gas-0001/telemetry"
    own = json.dumps({"ts": base, "seq": 1, "lel_pct": 2.0, "device_id": "gas-0001"})
    forged = json.dumps({"ts": base + 1000, "seq": 2, "lel_pct": 2.0, "device_id": "gas-0002"})
    mixed = json.dumps(
        [
            {"ts": base + 2000, "seq": 3, "lel_pct": 2.0},
            {"ts": base + 3000, "seq": 4, "lel_pct": 2.0, "device_id": "gas-0003"},
        ]
    )
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("device_id", "gas-0002")
    async with start_gateway(database_url, broker.url) as gw:
        publish(broker.port, topic, [own, forged, mixed])
        # MQTT 5: the identity in a user property
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="prop-forger", protocol=paho.MQTTv5
        )
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        body = gas_reading(base + 4000, 5, 2.0)
        client.publish(topic, body, qos=1, properties=props).wait_for_publish(5)
        # a camera frame claiming another camera (frames take their own path, QoS 0)
        frame_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        frame_props.UserProperty = [("ts", str(base)), ("device_id", "cam-0002")]
        frame = b"\xff\xd8\xff\xe0" + bytes(100)
        client.publish(
            "offsite/v1/video/cam-0001/frame", frame, qos=1, properties=frame_props
        ).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

        async def mismatches() -> bool:
            return await _refused(gw, "identity_mismatch", "gas-0001") == 3

        await eventually(mismatches)

        async def frame_refused() -> bool:
            value = gw.runtime.metrics.registry.get_sample_value(
                "offsite_video_frames_refused_total", {"reason": "identity_mismatch"}
            )
            return value == 1.0

        await eventually(frame_refused)
        await eventually(lambda: _count(database_url, "gas-0001", 2))
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "SELECT reason FROM quarantine WHERE device_id = 'gas-0001' ORDER BY id"
            )
            reasons = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT seq FROM telemetry_gas WHERE device_id = 'gas-0001' ORDER BY seq"
            )
            seqs = [r[0] for r in await cur.fetchall()]
        assert len(reasons) == 3
        assert all(r.startswith("identity_mismatch: ") for r in reasons)
        assert "'gas-0002'" in reasons[0]
        assert "'gas-0003'" in reasons[1]
        assert seqs == [1, 3]  # its own id is accepted; the good item of the array kept


async def _count(database_url: str, device_id: str, n: int) -> bool:
    return await _stored(database_url, device_id) == n
