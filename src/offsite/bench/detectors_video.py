"""Frames per second per core of the video pipeline, next to a straightforward baseline.

Both run in this process, one after the other, on the same frames of the real clips
(`shared/data/video/`, intel-iot-devkit/sample-videos, CC BY 4.0) encoded as JPEG as a camera
would send them:

- pipeline: `decode_reduced` (grey at 1/`decode_scale` in the DCT domain, the camera's
  default setting) and `CameraDetector.feed`: presence, global change and the four tamper
  checks;
- baseline: full-size colour decode, `cv2.resize` to the same analysis size, grey, a small
  Gaussian blur, and a frame-difference motion test (absolute difference with the previous
  frame, threshold, count): what one writes first.

CPU time (`time.process_time`) with OpenCV held to one thread is the per-core figure; wall
time is reported next to it. `stages` splits the pipeline's time per frame between decoding
and judging (`perf_counter_ns` around each call, so it includes the timers' own cost), and
`decode_only` times each decode alone: entropy decoding is paid in full at any scale, so the
reduced decode sets the ceiling of the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from offsite.detectors.video.camera import CameraDetector
from offsite.detectors.video.config import CameraVideoConfig
from offsite.detectors.video.decode import decode_reduced
from offsite.footage import footage_dir
from offsite.simulators.camera import clip_fps, clip_frames

CLIPS = ("one-by-one-person-detection.mp4", "car-detection.mp4")
TARGET_FPS = 400.0
TARGET_RATIO = 3.0


def default_video_dir() -> Path:
    """`shared/data/video` beside the repository (`offsite.footage`)."""
    return footage_dir()


def _encode(path: Path, limit: int, quality: int) -> list[bytes]:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    out: list[bytes] = []
    for frame in clip_frames(path):
        if len(out) >= limit:
            break
        ok, buffer = cv2.imencode(".jpg", frame, params)
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out.append(buffer.tobytes())
    return out


def _timed(run: Callable[[], int]) -> dict[str, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    frames = run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "frames": frames,
        "cpu_s": round(cpu, 4),
        "wall_s": round(wall, 4),
        "frames_per_s_cpu": round(frames / cpu, 1) if cpu > 0 else float("inf"),
        "frames_per_s_wall": round(frames / wall, 1) if wall > 0 else float("inf"),
        "us_per_frame_cpu": round(cpu / frames * 1e6, 1) if frames else 0.0,
    }


def _pipeline(streams: Sequence[tuple[float, list[bytes]]], config: CameraVideoConfig) -> int:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    scale = config.decode_scale
    frames = 0
    for fps, jpegs in streams:
        detector = CameraDetector("bench", config)
        for i, jpeg in enumerate(jpegs):
            detector.feed(t0 + timedelta(seconds=i / fps), decode_reduced(jpeg, scale))
            frames += 1
    return frames


def _stages(
    streams: Sequence[tuple[float, list[bytes]]], config: CameraVideoConfig
) -> dict[str, float]:
    """The pipeline once more, its decode and its judgement timed apart (µs per frame)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    scale = config.decode_scale
    decode_ns = feed_ns = frames = 0
    for fps, jpegs in streams:
        detector = CameraDetector("bench", config)
        for i, jpeg in enumerate(jpegs):
            ts = t0 + timedelta(seconds=i / fps)
            start = time.perf_counter_ns()
            frame = decode_reduced(jpeg, scale)
            decoded = time.perf_counter_ns()
            detector.feed(ts, frame)
            feed_ns += time.perf_counter_ns() - decoded
            decode_ns += decoded - start
            frames += 1
    return {
        "decode_us": round(decode_ns / frames / 1e3, 1),
        "detect_us": round(feed_ns / frames / 1e3, 1),
    }


def _baseline(streams: Sequence[tuple[float, list[bytes]]]) -> int:
    frames = 0
    moving = 0
    for _, jpegs in streams:
        prev: NDArray[np.uint8] | None = None
        for jpeg in jpegs:
            colour = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if colour is None:
                raise ValueError("undecodable frame")
            h, w = colour.shape[:2]
            small = cv2.resize(colour, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
            gray = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
            if prev is not None:
                diff = cv2.threshold(cv2.absdiff(gray, prev), 25, 255, cv2.THRESH_BINARY)[1]
                moving += cv2.countNonZero(diff) > 0.004 * diff.size
            prev = np.asarray(gray, np.uint8)
            frames += 1
    return frames


def _decode_colour(jpeg: bytes) -> object:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def _decode_only(
    streams: Sequence[tuple[float, list[bytes]]], decode: Callable[[bytes], object]
) -> int:
    frames = 0
    for _, jpegs in streams:
        for jpeg in jpegs:
            decode(jpeg)
            frames += 1
    return frames


def run_video_bench(
    frames_per_clip: int = 400,
    *,
    video_dir: Path | None = None,
    quality: int = 80,
    rounds: int = 3,
) -> dict[str, object]:
    """Measure pipeline and baseline `rounds` times, interleaved; report the median round."""
    directory = video_dir or default_video_dir()
    paths = [directory / name for name in CLIPS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"video clips not found: {', '.join(missing)}")
    streams = [(clip_fps(p), _encode(p, frames_per_clip, quality)) for p in paths]
    sizes = [len(j) for _, jpegs in streams for j in jpegs]
    first = decode_reduced(streams[0][1][0], 1)
    config = CameraVideoConfig()
    scale = config.decode_scale
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # per core: no hidden helper threads in either contender
    try:
        runs: dict[str, list[dict[str, float]]] = {
            "pipeline": [],
            "baseline": [],
            "decode_reduced_grey": [],
            "decode_full_colour": [],
        }
        stage_runs: list[dict[str, float]] = []
        for _ in range(rounds):
            runs["pipeline"].append(_timed(lambda: _pipeline(streams, config)))
            runs["baseline"].append(_timed(lambda: _baseline(streams)))
            runs["decode_reduced_grey"].append(
                _timed(lambda: _decode_only(streams, lambda jpeg: decode_reduced(jpeg, scale)))
            )
            runs["decode_full_colour"].append(_timed(lambda: _decode_only(streams, _decode_colour)))
            stage_runs.append(_stages(streams, config))
    finally:
        cv2.setNumThreads(threads)

    def median(name: str) -> dict[str, float]:
        ordered = sorted(runs[name], key=lambda r: r["cpu_s"])
        return ordered[len(ordered) // 2]

    pipeline, baseline = median("pipeline"), median("baseline")
    ratio = pipeline["frames_per_s_cpu"] / baseline["frames_per_s_cpu"]
    ratio_cpu = round(ratio, 2)  # the target is judged on the unrounded ratio: 2.996 is not 3
    ratio_wall = round(pipeline["frames_per_s_wall"] / baseline["frames_per_s_wall"], 2)
    reduced = median("decode_reduced_grey")
    # What the ratio would be if judging a frame cost nothing: decoding bounds it.
    ceiling = round(reduced["frames_per_s_cpu"] / baseline["frames_per_s_cpu"], 2)
    return {
        "clips": list(CLIPS),
        "source": "intel-iot-devkit/sample-videos (CC BY 4.0)",
        "resolution": f"{first.shape[1]}x{first.shape[0]}",
        "frames": len(sizes),
        "jpeg_quality": quality,
        "jpeg_kb_mean": round(statistics.fmean(sizes) / 1024, 1),
        "rounds": rounds,
        "decode_scale": config.decode_scale,
        "pipeline": pipeline,
        "baseline": baseline,
        "stages": sorted(stage_runs, key=lambda r: r["decode_us"] + r["detect_us"])[rounds // 2],
        "decode_only": {
            "reduced_grey": reduced,
            "full_colour": median("decode_full_colour"),
        },
        "ratio_cpu": ratio_cpu,
        "ratio_wall": ratio_wall,
        "ratio_ceiling_cpu": ceiling,
        "targets": {"frames_per_s_per_core": TARGET_FPS, "ratio": TARGET_RATIO},
        "meets_targets": {
            "frames_per_s_per_core": pipeline["frames_per_s_cpu"] >= TARGET_FPS,
            "ratio": ratio >= TARGET_RATIO,
        },
    }
