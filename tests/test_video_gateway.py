"""Camera frames through the real broker into `offsite run`: judged off the event loop, a
tamper clue with the frames from before its trigger fixed as evidence, and under overload
frames shed and counted while telemetry is all stored."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from offsite.simulators.camera import Injection, SimFrame, simulated_frames
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, gas_reading, publish, start_gateway
from tests.fixtures.video import clip

TOPIC = "offsite/v1/video/cam-0001/frame"


def _send_frames(port: int, frames: list[SimFrame], pace_s: float) -> None:
    """Like a camera: MQTT 5, `ts` and `seq` as user properties."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"cam-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for frame in frames:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [
                ("ts", str(int(frame.ts.timestamp() * 1000))),
                ("seq", str(frame.seq)),
            ]
            client.publish(TOPIC, frame.jpeg, qos=0, properties=props).wait_for_publish(5)
            if pace_s:
                time.sleep(pace_s)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_a_covered_camera_opens_a_clue_with_frames_from_before_the_trigger(
    database_url: str, broker: BrokerProcess
) -> None:
    now = datetime.now(UTC)
    t0 = now.replace(microsecond=now.microsecond // 1000 * 1000)  # frames carry milliseconds
    frames = list(
        simulated_frames(
            clip("one-by-one-person-detection.mp4"),
            [Injection("cover", 4.0, 4.0)],
            t0=t0,
            end_s=10.0,
        )
    )
    async with start_gateway(database_url, broker.url, video_evidence_before_s=3) as gw:
        # from a thread: the gateway runs on this test's event loop
        await asyncio.to_thread(_send_frames, broker.port, frames, 0.015)

        async def covered() -> dict[str, Any] | None:
            clues = (await gw.http.get("/api/v1/clues", params={"device_id": "cam-0001"})).json()
            found = [c for c in clues if c["rule"] == "video.tamper.covered" and c["evidence_id"]]
            return found[0] if found else None

        clue = await eventually(covered, timeout=20)
        triggered = datetime.fromisoformat(clue["triggered_at"])
        assert timedelta(0) <= triggered - (t0 + timedelta(seconds=4)) <= timedelta(seconds=2)
        assert clue["evidence_id"]
        check = (await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}/verify")).json()
        assert check["valid"] is True
        assert check["source_intact"] is True, check["problems"]
        frame = await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}/frames/0")
        assert frame.headers["content-type"] == "image/jpeg"
        assert frame.content[:2] == b"\xff\xd8"  # a JPEG, as the camera sent it
        listed = (await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}")).json()
        assert frame.headers["etag"].strip('"') == listed["content"]["frames"][0]["sha256"]
        missing = await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}/frames/99")
        assert missing.status_code == 404
        metrics = (await gw.http.get("/metrics")).text
        assert 'offsite_video_frames_total{camera="cam-0001"}' in metrics

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT ts, length(jpeg) FROM evidence_frames WHERE evidence_id = %s ORDER BY idx",
            (clue["evidence_id"],),
        ).fetchall()
        assert 2 <= len(rows) <= 12
        assert rows[0][0] < triggered <= rows[-1][0]  # before the trigger, up to the firing
        assert all(size > 1000 for _, size in rows)
        # one changed byte in a kept frame is found by verification
        conn.execute(
            "UPDATE evidence_frames SET jpeg = overlay(jpeg placing '\\x00'::bytea from 200)"
            " WHERE evidence_id = %s AND idx = 0",
            (clue["evidence_id"],),
        )
        conn.commit()
    async with start_gateway(database_url, broker.url) as gw:
        check = (await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}/verify")).json()
        assert check["source_intact"] is False
        assert any("frame 0" in p for p in check["problems"])


async def test_frames_over_the_budget_are_shed_and_counted_and_telemetry_is_all_stored(
    database_url: str, broker: BrokerProcess
) -> None:
    frames = list(
        simulated_frames(clip("one-by-one-person-detection.mp4"), t0=datetime.now(UTC), end_s=12.0)
    )
    base = int(datetime.now(UTC).timestamp() * 1000)
    async with start_gateway(database_url, broker.url, video_budget_fps=5) as gw:
        await asyncio.to_thread(_send_frames, broker.port, frames, 0)  # 120 frames at once
        publish(
            broker.port,
            "offsite/v1/gas/gas-0002/telemetry",
            [gas_reading(base + i, i, 2.0) for i in range(200)],
        )

        async def accounted() -> str | None:
            text = (await gw.http.get("/metrics")).text
            received = _metric(text, 'offsite_video_frames_total{camera="cam-0001"}')
            judged = _metric(text, 'offsite_video_frames_judged_total{camera="cam-0001"}')
            shed = _metric(text, 'offsite_video_frames_shed_total{camera="cam-0001"}')
            done = received == len(frames) and judged + shed == received and shed > 0
            return text if done else None

        await eventually(accounted, timeout=20)

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM telemetry_gas WHERE device_id = 'gas-0002'"
        ).fetchone()
        assert row == (200,)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_a_killed_video_worker_is_replaced_and_frames_are_judged_again(
    database_url: str, broker: BrokerProcess
) -> None:
    path = clip("one-by-one-person-detection.mp4")
    first = list(simulated_frames(path, t0=datetime.now(UTC), end_s=2.0))
    async with start_gateway(database_url, broker.url) as gw:
        await asyncio.to_thread(_send_frames, broker.port, first, 0.02)

        async def judged(at_least: float) -> float | None:
            text = (await gw.http.get("/metrics")).text
            count = _metric(text, 'offsite_video_frames_judged_total{camera="cam-0001"}')
            return count if count >= at_least else None

        before = await eventually(lambda: judged(len(first)), timeout=20)
        workers = [
            child
            for child in psutil.Process().children(recursive=True)
            if "spawn_main" in " ".join(child.cmdline())
        ]
        assert workers, "no video worker process found"
        for worker in workers:
            worker.kill()
        later = list(simulated_frames(path, t0=datetime.now(UTC), end_s=3.0))
        await asyncio.to_thread(_send_frames, broker.port, later, 0.02)
        # frames sent while the old worker was gone may be lost; the new one judges the rest
        await eventually(lambda: judged(before + len(later) // 2), timeout=20)
        assert gw.runtime.frames.restarts == 1
