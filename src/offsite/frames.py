"""Camera frames from MQTT to the video detectors, and the last seconds of each camera for
evidence.

Frames come on a connection of their own (QoS 0, no persistent session): a flood of frames
then never stands in the way of telemetry, neither in the broker nor in the gateway's
hand-off, and under overload frames are what is shed. Each frame is kept in its camera's
`FrameRing` (so that a clue's evidence holds the frames before its trigger), offered to the
`FrameScheduler`, which shares a frames-per-second budget fairly across cameras and sheds
(and counts) the rest, and judged in a `VideoWorkers` process, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from offsite.detectors.findings import Finding
from offsite.detectors.video.config import CameraVideoConfig
from offsite.detectors.video.ring import FrameRing, StoredFrame
from offsite.detectors.video.scheduler import FrameScheduler
from offsite.detectors.video.worker import FrameResult, VideoWorkers
from offsite.gateway.decode import parse_topic
from offsite.gateway.mqtt import Inbound, MqttGateway, user_properties

_LOG = logging.getLogger(__name__)

FRAME_TOPIC = "offsite/v1/video/+/frame"
_MAX_FUTURE_S = 86_400.0
_MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class _Frame:
    ts: datetime
    seq: int | None
    jpeg: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class FrameSettings:
    budget_fps: float = 100.0
    """Frames judged per second across all cameras; the rest are shed, fairly."""
    workers: int = 1
    ring_seconds: float = 30.0
    ring_bytes: int = 8 * 1024 * 1024
    """Per camera: 30 s of a 10 fps, 25 kB camera is about 7.5 MB."""
    max_frame_bytes: int = 2 * 1024 * 1024
    queue_per_camera: int = 10
    """Frames of one camera waiting for their turn: about a second of a 10 fps camera, since
    frames come off the connection in bursts; beyond it the oldest is shed."""


class FrameMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "offsite_video_frames", "frames received", ["camera"], registry=registry
        )
        self.judged = Counter(
            "offsite_video_frames_judged",
            "frames run through the detectors",
            ["camera"],
            registry=registry,
        )
        self.shed = Counter(
            "offsite_video_frames_shed",
            "frames not judged: over the budget or waited too long",
            ["camera"],
            registry=registry,
        )
        self.refused = Counter(
            "offsite_video_frames_refused",
            "frames refused: unknown camera, not a JPEG, bad time, too large",
            ["reason"],
            registry=registry,
        )


def frame_time(props: dict[str, str], received_at: datetime) -> tuple[datetime, int | None]:
    """Event time and sequence from the MQTT 5 user properties `ts` (RFC 3339 with an offset,
    or epoch milliseconds) and `seq`; receive time and no sequence where absent. A value
    that cannot be read raises ValueError with the reason."""
    seq: int | None = None
    if "seq" in props:
        text = props["seq"]
        # int() would also take "+5", " 5", "1_000" and other scripts' digits
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            raise ValueError(f"seq must be a non-negative integer, not {text[:40]!r}")
        seq = int(text)
        if seq > _MAX_SEQ:
            raise ValueError("seq out of range")
    raw = props.get("ts")
    if raw is None:
        return received_at, seq
    if raw.isascii() and raw.isdigit():
        try:
            ts = datetime.fromtimestamp(int(raw) / 1000, UTC)
        except (OverflowError, OSError):
            # beyond what a float or the platform's time functions hold; a huge value
            # raised OverflowError here and stopped the frame intake
            raise ValueError(f"implausible ts {raw[:40]}") from None
    else:
        ts = datetime.fromisoformat(raw)
        if ts.tzinfo is None:
            raise ValueError("ts must carry a UTC offset")
    if ts < _MIN_TS or (ts - received_at).total_seconds() > _MAX_FUTURE_S:
        raise ValueError(f"implausible ts {raw[:40]}")
    return ts, seq


class FrameIntake:
    """Owned by the runtime: `run()` consumes the frame connection until cancelled."""

    def __init__(
        self,
        settings: FrameSettings,
        registry: CollectorRegistry,
        on_findings: Callable[[list[Finding]], Awaitable[object]],
    ) -> None:
        self.settings = settings
        self.metrics = FrameMetrics(registry)
        self._on_findings = on_findings
        self._cameras: dict[str, str] = {}
        """Registered camera id -> its detector config, as JSON."""
        self._rings: dict[str, FrameRing] = {}
        self._scheduler: FrameScheduler[_Frame] = FrameScheduler(
            settings.budget_fps, queue_per_camera=settings.queue_per_camera
        )
        self._workers = VideoWorkers(settings.workers)
        self._pending: set[asyncio.Future[Any]] = set()
        self._shed_counted: dict[str, int] = {}
        self._broken = False
        self.restarts = 0
        self.started = False
        """Whether any camera has state in the workers (their processes start on first use,
        so a gateway without cameras never starts them)."""

    def close(self) -> None:
        self._workers.close()

    def _restart_workers(self) -> None:
        """A worker process died (killed, out of memory, a decoder crash on a hostile frame):
        its pool cannot be used again. New workers start; the cameras' episodes start afresh
        there, and the next checkpoint-restore cycle is the runtime's."""
        _LOG.error("a video worker process died; starting new workers")
        self._workers.close()
        self._workers = VideoWorkers(self.settings.workers)
        self._broken = False
        self.restarts += 1

    def set_cameras(self, configs: dict[str, str]) -> None:
        """The registered cameras and their config JSON (a registry reload calls it again)."""
        self._cameras = dict(configs)
        for gone in set(self._rings) - set(configs):
            del self._rings[gone]

    def frames(self, camera_id: str, start: datetime, end: datetime) -> list[StoredFrame]:
        """The frames kept of a camera between two instants, oldest first."""
        ring = self._rings.get(camera_id)
        return [] if ring is None else ring.window(start, end)

    def take_in(self, items: Iterable[Inbound]) -> None:
        """Keep and queue a batch of frames (no I/O, no decoding here)."""
        now = time.monotonic()
        for item in items:
            topic = parse_topic(item.topic)
            camera_id = topic.device_id if topic is not None else ""
            if topic is None or topic.domain != "video" or camera_id not in self._cameras:
                self.metrics.refused.labels("unknown camera").inc()
                continue
            if len(item.payload) > self.settings.max_frame_bytes:
                self.metrics.refused.labels("too large").inc()
                continue
            props = user_properties(item.properties)
            if props.get("device_id", camera_id) != camera_id:
                # a frame claiming another camera's identity (decode.IDENTITY_MISMATCH)
                self.metrics.refused.labels("identity_mismatch").inc()
                continue
            try:
                ts, seq = frame_time(props, item.received_at)
            except ValueError:
                self.metrics.refused.labels("bad ts or seq").inc()
                continue
            self.metrics.received.labels(camera_id).inc()
            ring = self._rings.get(camera_id)
            if ring is None:
                ring = self._rings[camera_id] = FrameRing(
                    self.settings.ring_seconds, self.settings.ring_bytes
                )
            ring.append(ts, seq, item.payload)
            self._scheduler.offer(camera_id, _Frame(ts, seq, item.payload, item.received_at), now)

    async def dispatch(self) -> None:
        """Send the frames the budget allows to the workers; judge results as they come."""
        for camera_id, frame in self._scheduler.take(time.monotonic()):
            config = self._cameras.get(camera_id)
            if config is None:
                continue
            self.started = True
            if self._broken:
                self._restart_workers()
            try:
                submitted = self._workers.submit(
                    camera_id, frame.ts, frame.jpeg, config, frame.seq, frame.received_at
                )
            except BrokenProcessPool:
                self._broken = True
                self.metrics.refused.labels("worker lost").inc()
                continue
            future = asyncio.wrap_future(submitted)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
            future.add_done_callback(self._judged)
        for camera_id, shed in self._scheduler.shed_counts().items():
            counted = self._shed_counted.get(camera_id, 0)
            if shed > counted:
                self.metrics.shed.labels(camera_id).inc(shed - counted)
                self._shed_counted[camera_id] = shed

    def _judged(self, future: asyncio.Future[FrameResult]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, BrokenProcessPool):
                self._broken = True
                self.metrics.refused.labels("worker lost").inc()
            else:
                _LOG.error("video worker failed: %s", exc)
            return
        result = future.result()
        if result.error is not None:
            self.metrics.refused.labels("not a JPEG").inc()
            return
        self.metrics.judged.labels(result.camera_id).inc()
        if result.findings:
            task = asyncio.ensure_future(self._on_findings(list(result.findings)))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def run(self, gateway: MqttGateway, tick_s: float = 0.02) -> None:
        """Take frames from the connection and dispatch them, until cancelled."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    batch = await asyncio.wait_for(gateway.get_batch(1000), tick_s)
                    self.take_in(batch)
                await self.dispatch()
        finally:
            for pending in list(self._pending):
                pending.cancel()

    async def sweep(self, now: datetime) -> list[Finding]:
        """Cameras gone offline (judged in the workers, on the gateway clock)."""
        found: list[Finding] = []
        if not self.started or self._broken:
            return found
        try:
            for future in self._workers.sweep(now):
                swept: list[Finding] = await asyncio.wrap_future(future)
                found.extend(swept)
        except BrokenProcessPool:
            self._broken = True
        return found

    async def snapshots(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if not self.started or self._broken:
            return out
        try:
            for future in self._workers.snapshots():
                part: dict[str, dict[str, Any]] = await asyncio.wrap_future(future)
                out.update(part)
        except BrokenProcessPool:
            self._broken = True  # replaced at the next frame; nothing to checkpoint now
        return out

    async def restore(self, camera_id: str, state: dict[str, Any]) -> None:
        config = self._cameras.get(camera_id)
        if config is not None:
            self.started = True
            await asyncio.wrap_future(self._workers.restore(camera_id, config, state))


def camera_configs(devices: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, str]:
    """Config JSON of each camera among (id, kind, attributes); a camera whose `video`
    attribute is not a valid config gets the defaults, and the problem is logged."""
    out: dict[str, str] = {}
    for device_id, kind, attributes in devices:
        if kind != "camera":
            continue
        try:
            config = CameraVideoConfig.from_attributes(attributes)
        except ValueError as exc:
            _LOG.error("camera %s: invalid video config (%s); using the defaults", device_id, exc)
            config = CameraVideoConfig()
        out[device_id] = config.model_dump_json()
    return out
