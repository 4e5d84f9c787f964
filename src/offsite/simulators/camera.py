"""A camera that replays a real clip as JPEG frames, with scripted tamper and outages.

The clips in `shared/data/video/` come from intel-iot-devkit/sample-videos (CC BY 4.0,
https://github.com/intel-iot-devkit/sample-videos). Frames go out at the clip's own frame
rate on `offsite/v1/video/{camera_id}/frame` over MQTT 5, with the user properties `ts`
(RFC 3339) and `seq`; MQTT 3.1.1 has no user properties, so the camera always speaks 5.

`simulated_frames` is the same stream without a broker, for tests and benchmarks.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np
import paho.mqtt.client as paho
from numpy.typing import NDArray
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from offsite.simulators.device import DeviceSecurity, device_client, stop_device

_LOG = logging.getLogger(__name__)

InjectionKind = Literal["cover", "blur", "shift", "freeze", "offline", "lights"]
TAMPER_KINDS: tuple[InjectionKind, ...] = ("cover", "blur", "shift", "freeze")

_SPEC = re.compile(r"^(?P<kind>[a-z]+)@(?P<start>\d+(?:\.\d+)?)\+(?P<duration>\d+(?:\.\d+)?)$")


@dataclass(frozen=True, slots=True)
class Injection:
    """One scripted fault, in seconds of video time since the stream began."""

    kind: InjectionKind
    start_s: float
    duration_s: float

    def covers(self, t: float) -> bool:
        return self.start_s <= t < self.start_s + self.duration_s

    @classmethod
    def parse(cls, spec: str) -> Injection:
        """`kind@start+duration`, e.g. `cover@20+8`: covered from 20 s for 8 s."""
        match = _SPEC.match(spec)
        if match is None or match["kind"] not in get_args(InjectionKind):
            kinds = ", ".join(get_args(InjectionKind))
            raise ValueError(f"{spec!r}: expected kind@start+duration, kind one of {kinds}")
        kind: InjectionKind = match["kind"]  # type: ignore[assignment]
        return cls(kind, float(match["start"]), float(match["duration"]))


@dataclass(frozen=True, slots=True)
class SimFrame:
    t: float
    """Seconds of video time since the stream began."""
    ts: datetime
    seq: int
    jpeg: bytes


def clip_fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    return fps if fps > 0 else 10.0


def clip_frames(path: Path) -> Iterator[NDArray[np.uint8]]:
    """The clip's frames in colour (BGR), once through."""
    if not path.is_file():
        raise FileNotFoundError(path)
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield np.asarray(frame, np.uint8)
    finally:
        capture.release()


def tamper(kind: InjectionKind, frame: NDArray[np.uint8], seed: int) -> NDArray[np.uint8]:
    """What a camera shows under each fault (`freeze` and `offline` act on the stream)."""
    h, w = frame.shape[:2]
    if kind == "cover":
        # A hand or a cloth over the lens: dark, almost no texture, a little sensor noise.
        noise = np.random.default_rng(seed).normal(0.0, 2.0, frame.shape)
        return np.clip(20.0 + noise, 0, 255).astype(np.uint8)
    if kind == "blur":
        return np.asarray(cv2.GaussianBlur(frame, (0, 0), sigmaX=w / 128), np.uint8)
    if kind == "shift":
        # Knocked aside: the view moves by 5 % of its width and 3 % of its height.
        matrix = np.array([[1, 0, 0.05 * w], [0, 1, 0.03 * h]], np.float32)
        return np.asarray(
            cv2.warpAffine(frame, matrix, (w, h), borderMode=cv2.BORDER_REFLECT), np.uint8
        )
    if kind == "lights":
        return np.asarray(cv2.convertScaleAbs(frame, alpha=0.45), np.uint8)
    return frame


def simulated_frames(
    path: Path,
    script: Sequence[Injection] = (),
    *,
    t0: datetime | None = None,
    quality: int = 80,
    loops: int = 1,
    end_s: float | None = None,
) -> Iterator[SimFrame]:
    """The clip as a camera would send it, with the script's faults, in video time."""
    t0 = t0 or datetime(2026, 1, 1, tzinfo=UTC)
    fps = clip_fps(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    index = 0
    seq = 0
    frozen: bytes | None = None
    for _ in range(loops):
        for frame in clip_frames(path):
            t = index / fps
            index += 1
            if end_s is not None and t >= end_s:
                return
            active = [i.kind for i in script if i.covers(t)]
            if "offline" in active:
                continue
            if "freeze" in active and frozen is not None:
                jpeg = frozen
            else:
                image = frame
                for kind in active:
                    image = tamper(kind, image, index)
                ok, buffer = cv2.imencode(".jpg", image, params)
                if not ok:
                    raise RuntimeError("JPEG encoding failed")
                jpeg = buffer.tobytes()
                # A frozen encoder keeps sending the last good frame, byte for byte.
                frozen = jpeg if "freeze" in active else None
            seq += 1
            yield SimFrame(t, t0 + timedelta(seconds=t), seq, jpeg)


def frame_properties(ts: datetime, seq: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [
        ("ts", ts.astimezone(UTC).isoformat(timespec="milliseconds")),
        ("seq", str(seq)),
    ]
    return props


def run_camera(
    host: str,
    port: int,
    *,
    cameras: Sequence[str],
    clip: Path,
    script: Sequence[Injection] = (),
    loops: int = 1,
    quality: int = 80,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    security: DeviceSecurity | None = None,
) -> int:
    """Publish every camera's stream in real time; returns frames published.

    All cameras replay the same clip and the same script, one MQTT client each, with a
    retained `online` status and `offline` as their last will.
    """
    stop = stop or threading.Event()
    clients: list[tuple[str, paho.Client]] = []
    for camera_id in cameras:
        # MQTT 5: frames carry their time in user properties; few buffered, frames go stale
        client = device_client(
            "video", camera_id, host, port, protocol="5", buffered=1000, security=security
        )
        client.loop_start()
        clients.append((camera_id, client))
    started = time.monotonic()
    wall_t0 = datetime.now(UTC)
    published = 0
    try:
        frames = simulated_frames(
            clip, script, t0=wall_t0, quality=quality, loops=loops, end_s=duration_s
        )
        for frame in frames:
            delay = started + frame.t - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            if stop.is_set():
                break
            props = frame_properties(frame.ts, frame.seq)
            for camera_id, client in clients:
                # QoS 0: a late frame is worth less than the next one, as with real cameras.
                client.publish(f"offsite/v1/video/{camera_id}/frame", frame.jpeg, 0, False, props)
                published += 1
    finally:
        for camera_id, client in clients:
            stop_device(client, "video", camera_id)
    _LOG.info("published %d frames from %d cameras", published, len(cameras))
    return published
