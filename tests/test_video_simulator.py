"""The camera simulator against a real broker: JPEG frames with `ts` and `seq` as MQTT 5 user
properties on the contract topic, at the clip's frame rate, with the scripted tamper."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import cv2
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from offsite.simulators.camera import Injection, run_camera
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.video import clip


def test_simulated_camera_publishes_frames_with_time_and_sequence(broker: BrokerProcess) -> None:
    path = clip("car-detection.mp4")  # 12.5 fps
    received: list[tuple[str, bytes, dict[str, str]]] = []
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_connect(c: paho.Client, *_: object) -> None:
        c.subscribe("offsite/v1/video/+/frame", qos=0)

    def on_message(_: paho.Client, __: object, msg: paho.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", []))
        received.append((msg.topic, bytes(msg.payload), props))

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        started = time.monotonic()
        published = run_camera(
            "127.0.0.1",
            broker.port,
            cameras=["cam-07"],
            clip=path,
            script=[Injection.parse("cover@1+0.5")],
            duration_s=2.0,
        )
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 5
        while len(received) < published and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert published == 25  # two seconds at 12.5 fps
    assert elapsed >= 1.8  # real time, not as fast as possible
    assert len(received) == published
    assert {topic for topic, _, _ in received} == {"offsite/v1/video/cam-07/frame"}
    seqs = [int(props["seq"]) for _, _, props in received]
    assert seqs == list(range(1, 26))
    stamps = [datetime.fromisoformat(props["ts"]) for _, _, props in received]
    assert abs((stamps[-1] - stamps[0]).total_seconds() - 24 / 12.5) < 0.01
    stds = []
    for _, payload, _ in received:
        image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
        assert image is not None
        stds.append(float(image.std()))
    covered = stds[13:19]  # 1.0 s to 1.5 s
    assert max(covered) < 5 < min(stds[:12])
