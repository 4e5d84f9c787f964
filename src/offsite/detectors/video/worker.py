"""Video detection in worker processes: the functions a `ProcessPoolExecutor` runs.

Choice: detector state lives *in the worker*, one `CameraDetector` per camera, and each
camera is always sent to the same worker (`worker_for`, a stable hash), the same
affinity EMQX shared subscriptions give gateway workers. Passing the state with every frame
instead would pickle the background model (tens of kB) twice per frame, more than judging
the frame costs. A `ProcessPoolExecutor` hands tasks to any idle process, so affinity needs
one single-process executor per worker: `VideoWorkers` is that, and nothing more.

State that matters survives a worker restart through `snapshot_cameras` (episodes and
small references, plain JSON) and `restore_camera`; the owner checkpoints it like other
detector state. The camera's config travels as JSON with each frame: comparing the string
with the one the worker holds is cheaper than any versioning, and a changed config takes
effect on the next frame with the episodes carried over.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
import zlib
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from offsite.detectors.findings import Finding
from offsite.detectors.video.camera import CameraDetector
from offsite.detectors.video.config import CameraVideoConfig
from offsite.detectors.video.decode import FrameDecodeError


@dataclass(frozen=True, slots=True)
class FrameResult:
    camera_id: str
    seq: int | None
    findings: tuple[Finding, ...]
    error: str | None
    """Why the frame could not be judged (not a JPEG, ...): for the quarantine, not a crash."""
    cpu_s: float


_CAMERAS: dict[str, tuple[str, CameraDetector]] = {}
"""Per worker process: camera id -> (config JSON, detector)."""


def _detector(camera_id: str, config_json: str) -> CameraDetector:
    held = _CAMERAS.get(camera_id)
    if held is not None and held[0] == config_json:
        return held[1]
    detector = CameraDetector(camera_id, CameraVideoConfig.model_validate_json(config_json))
    if held is not None:
        detector.restore(held[1].snapshot())
    _CAMERAS[camera_id] = (config_json, detector)
    return detector


def process_frame(
    camera_id: str,
    ts: datetime,
    jpeg: bytes,
    config_json: str = "{}",
    seq: int | None = None,
    received_at: datetime | None = None,
) -> FrameResult:
    """Decode and judge one frame of one camera in this worker."""
    started = time.process_time()
    try:
        detector = _detector(camera_id, config_json)
        findings = tuple(detector.feed_jpeg(ts, jpeg, received_at))
        error = None
    except FrameDecodeError as exc:
        findings, error = (), str(exc)
    return FrameResult(camera_id, seq, findings, error, time.process_time() - started)


def sweep_cameras(now: datetime) -> list[Finding]:
    """Offline episodes of this worker's cameras, judged at `now` (gateway clock)."""
    return [f for _, detector in _CAMERAS.values() for f in detector.sweep(now)]


def snapshot_cameras() -> dict[str, dict[str, Any]]:
    return {cid: detector.snapshot() for cid, (_, detector) in _CAMERAS.items()}


def restore_camera(camera_id: str, config_json: str, state: dict[str, Any]) -> None:
    _CAMERAS.pop(camera_id, None)
    _detector(camera_id, config_json).restore(state)


def forget_camera(camera_id: str) -> bool:
    return _CAMERAS.pop(camera_id, None) is not None


def worker_for(camera_id: str, workers: int) -> int:
    """The worker a camera always goes to: stable across processes and restarts."""
    return zlib.crc32(camera_id.encode()) % workers


def _ignore_interrupt() -> None:
    """Ctrl-C in a terminal reaches the whole process group: the owner stops the workers
    itself, after its last checkpoint, rather than have them die under it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class VideoWorkers:
    """N single-process pools, a camera pinned to one of them."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        # spawn: the parent runs threads (event loop, MQTT), which fork would copy mid-flight.
        context = multiprocessing.get_context("spawn")
        self._pools = [
            ProcessPoolExecutor(1, mp_context=context, initializer=_ignore_interrupt)
            for _ in range(workers)
        ]

    def __enter__(self) -> VideoWorkers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        camera_id: str,
        ts: datetime,
        jpeg: bytes,
        config_json: str = "{}",
        seq: int | None = None,
        received_at: datetime | None = None,
    ) -> Future[FrameResult]:
        pool = self._pools[worker_for(camera_id, len(self._pools))]
        return pool.submit(process_frame, camera_id, ts, jpeg, config_json, seq, received_at)

    def sweep(self, now: datetime) -> list[Future[list[Finding]]]:
        return [pool.submit(sweep_cameras, now) for pool in self._pools]

    def snapshots(self) -> list[Future[dict[str, dict[str, Any]]]]:
        return [pool.submit(snapshot_cameras) for pool in self._pools]

    def restore(self, camera_id: str, config_json: str, state: dict[str, Any]) -> Future[None]:
        pool = self._pools[worker_for(camera_id, len(self._pools))]
        return pool.submit(restore_camera, camera_id, config_json, state)

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
