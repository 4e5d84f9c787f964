"""Hostile payloads through a real mosquitto into the gateway and a real database: the
gateway stays up, and every message is accounted for exactly, its readings stored and its
refusals quarantined with their reasons."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as paho
import psutil
import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from offsite.gateway.decode import KnownDevice, decode_message
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, publish, start_gateway
from tests.hostile import broken_readings, dumps, json_values, valid_readings

pytestmark = pytest.mark.slow

MAX_PAYLOAD = 4096
MAX_READINGS = 50
DEVICES = {
    "gas-0001": KnownDevice("gas-0001", "gas", "gas_detector"),
    "elev-0001": KnownDevice("elev-0001", "equipment", "elevator"),
    "boiler-0001": KnownDevice("boiler-0001", "equipment", "boiler"),
}
"""As the demo registry has them."""
TOPIC = {
    "gas_detector": "offsite/v1/gas/gas-0001/telemetry",
    "elevator": "offsite/v1/equipment/elev-0001/telemetry",
    "boiler": "offsite/v1/equipment/boiler-0001/telemetry",
}
ELSEWHERE = [
    "offsite/v1/gas/gas-not-registered/telemetry",
    "offsite/v1/equipment/gas-0001/telemetry",  # a known device under another domain
]
CAMERA = "offsite/v1/video/cam-0001/frame"
_SEQ = itertools.count(1_000_000)
"""Each valid reading gets a sequence number of its own: a repeat would be a duplicate."""


@st.composite
def hostile_messages(draw: st.DrawFn, now_ms: int) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(list(TOPIC)))
    topic = draw(st.sampled_from([TOPIC[kind]] * 4 + ELSEWHERE))
    shape = draw(st.sampled_from(["bytes", "json", "valid", "broken", "mixed", "deep", "big"]))
    if shape == "bytes":
        return topic, draw(st.binary(max_size=600))
    if shape == "json":
        return topic, dumps(draw(json_values))
    if shape == "deep":
        depth = draw(st.integers(500, 2000))
        return topic, b"[" * depth + b"]" * depth
    if shape == "big":
        return topic, b"[" + b" " * draw(st.integers(MAX_PAYLOAD, 3 * MAX_PAYLOAD)) + b"]"
    if shape in ("valid", "broken"):
        make = valid_readings if shape == "valid" else broken_readings
        return topic, dumps(draw(make(kind, next(_SEQ), now_ms=now_ms)))
    flags = draw(st.lists(st.booleans(), min_size=1, max_size=12))
    items = [
        draw((valid_readings if ok else broken_readings)(kind, next(_SEQ), now_ms=now_ms))
        for ok in flags
    ]
    return topic, dumps(items)


@dataclass
class Tally:
    messages: int = 0
    readings: int = 0
    quarantined: int = 0


def _counts(database_url: str) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM telemetry_gas), (SELECT count(*) FROM"
            " telemetry_equipment), (SELECT count(*) FROM quarantine WHERE reason <> '')"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _nasty(now_ms: int) -> list[tuple[str, bytes]]:
    """What once got past the decoder and broke a batch at the database, or vanished."""
    gas = TOPIC["gas_detector"]
    reading = f'"ts": {now_ms}, "lel_pct": 1'
    return [
        (gas, f'{{{reading}, "seq": {next(_SEQ)}, "fault": "E\\u00001"}}'.encode()),
        (gas, f'[{{{reading}, "seq": {next(_SEQ)}, "a\\u0000": 1}}]'.encode()),
        (gas, f'[{{{reading}, "seq": {next(_SEQ)}, "\\ud800": 1}}]'.encode()),
        (gas, f'[{{{reading}, "seq": {next(_SEQ)}}}, {{"\\udfff": NaN}}]'.encode()),
        (gas, b"[]"),
        (gas, b"[" * 10_000 + b"]" * 10_000),
        (TOPIC["elevator"], f'{{"ts": {now_ms}, "seq": 1, "speed_mps": NaN}}'.encode()),
        (TOPIC["boiler"], f'{{"ts": {now_ms}, "seq": {10**400}}}'.encode()),
        (gas, "{}".encode("utf-16")),
    ]


def _hunt(port: int, database_url: str, examples: int) -> Tally:
    tally = Tally()
    now_ms = int(time.time() * 1000)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages=st.lists(hostile_messages(now_ms), min_size=1, max_size=8))
    @example(messages=_nasty(now_ms))
    def hunt(messages: list[tuple[str, bytes]]) -> None:
        gas0, equipment0, quarantined0 = _counts(database_url)
        expected_readings = expected_refusals = 0
        received_at = datetime.now(UTC)
        for topic, payload in messages:
            # what the gateway must make of it, by the same pure decoder the unit tests pin
            decoded = decode_message(
                topic,
                payload,
                DEVICES,
                received_at,
                max_payload_bytes=MAX_PAYLOAD,
                max_readings=MAX_READINGS,
            )
            expected_readings += len(decoded.gas) + len(decoded.equipment)
            expected_refusals += len(decoded.refusals)
            publish(port, topic, [payload])
        # whatever the decoder says: no message goes without a stored reading or a refusal
        assert expected_readings + expected_refusals >= len(messages)
        deadline = time.monotonic() + 20
        while True:
            gas, equipment, quarantined = _counts(database_url)
            got = (gas + equipment - gas0 - equipment0, quarantined - quarantined0)
            if got == (expected_readings, expected_refusals) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert got == (expected_readings, expected_refusals), messages
        tally.messages += len(messages)
        tally.readings += expected_readings
        tally.quarantined += expected_refusals

    hunt()
    return tally


async def test_hostile_payloads_through_the_broker_are_stored_or_quarantined_exactly(
    database_url: str, broker: BrokerProcess
) -> None:
    overrides: dict[str, Any] = {
        "max_payload_bytes": MAX_PAYLOAD,
        "max_readings_per_message": MAX_READINGS,
        "silent_sweep_s": 3600.0,
    }
    async with start_gateway(database_url, broker.url, **overrides) as gw:
        tally = await asyncio.to_thread(_hunt, broker.port, database_url, 60)
        print(
            f"hostile messages through the broker: {tally.messages}, readings stored"
            f" {tally.readings}, refusals quarantined {tally.quarantined}"
        )
        assert tally.messages >= 60
        assert tally.readings > 0
        assert tally.quarantined > 0
        # still up, still taking data
        assert gw.runtime.gateway is not None
        assert gw.runtime.gateway.connected
        assert (await gw.http.get("/healthz")).status_code == 200


def _send_frames(port: int, frames: list[tuple[bytes, list[tuple[str, str]]]]) -> None:
    """Like a camera: MQTT 5, with whatever user properties it is given."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"cam-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for jpeg, user_properties in frames:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = user_properties
            client.publish(CAMERA, jpeg, qos=1, properties=props).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_hostile_frames_are_refused_and_the_camera_keeps_being_judged(
    database_url: str, broker: BrokerProcess
) -> None:
    pixels = np.random.default_rng(7).integers(0, 255, (240, 320, 3), np.uint8)
    good = bytes(cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    at = good.find(b"\xff\xc2")
    # the same 1 kB-scale file declaring 60000x60000: 31 s and 10.5 GB for OpenCV unguarded
    bomb = good[: at + 5] + struct.pack(">HH", 60_000, 60_000) + good[at + 9 :]
    now_ms = int(time.time() * 1000)

    def props(i: int) -> list[tuple[str, str]]:
        return [("ts", str(now_ms + i)), ("seq", str(i))]

    hostile = [
        (bomb, props(0)),
        (b"\xff\xd8" + bytes(range(256)) * 8, props(1)),
        (good[: len(good) // 3], props(2)),  # truncated: decoded as far as it goes, or refused
        (good, [("ts", "9" * 400), ("seq", "3")]),
        (good, [("ts", str(now_ms)), ("seq", "-1")]),
        (good, [("ts", "0001-01-01T00:00:00+14:00")]),
    ]
    valid = [(good, props(10 + i)) for i in range(5)]
    async with start_gateway(database_url, broker.url, silent_sweep_s=3600.0) as gw:
        await asyncio.to_thread(_send_frames, broker.port, [*hostile, *valid])

        async def accounted() -> str | None:
            text = (await gw.http.get("/metrics")).text
            refused = "offsite_video_frames_refused_total"
            undecodable = _metric(text, refused + '{reason="not a JPEG"}')
            bad_time = _metric(text, refused + '{reason="bad ts or seq"}')
            judged = _metric(text, 'offsite_video_frames_judged_total{camera="cam-0001"}')
            done = bad_time == 3 and undecodable + judged == 3 + len(valid)
            return text if done and undecodable >= 2 and judged >= len(valid) else None

        await eventually(accounted, timeout=30)
        workers = [
            child
            for child in psutil.Process().children(recursive=True)
            if "spawn_main" in " ".join(child.cmdline())
        ]
        assert workers, "no video worker process found"
        peaks = [_peak_rss_mb(w.pid) for w in workers]
        print(f"video worker peak RSS: {peaks} MB")
        assert max(peaks) < 1024
        assert gw.runtime.frames.restarts == 0
