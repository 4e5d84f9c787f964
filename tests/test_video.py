"""Video building blocks on synthetic frames: config, decode, episodes and checkpoints, zones,
offline, the frame ring, the fair scheduler, the worker process boundary, the bench's shape."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from offsite.detectors.findings import Finding
from offsite.detectors.video import (
    OFFLINE_RULE,
    CameraDetector,
    CameraVideoConfig,
    FrameDecodeError,
    Zone,
    decode_reduced,
)
from offsite.detectors.video.episodes import Episode
from offsite.detectors.video.ring import FrameRing
from offsite.detectors.video.scheduler import FrameScheduler, fair_shares
from offsite.detectors.video.worker import FrameResult, VideoWorkers, process_frame, worker_for
from tests.fixtures.video import VIDEO_DIR

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
FPS = 10


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def scene(seed: int = 1) -> NDArray[np.uint8]:
    """A textured static view, 192x108 like a 768x432 camera decoded at 1/4."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 220, (108, 192)).astype(np.uint8)
    return np.asarray(cv2.GaussianBlur(base, (0, 0), 1.5), np.uint8)


def noisy(image: NDArray[np.uint8], i: int) -> NDArray[np.uint8]:
    # Sensor noise: without it successive frames would be identical, i.e. frozen.
    noise = np.random.default_rng(1000 + i).integers(-2, 3, image.shape)
    return np.asarray(np.clip(image.astype(np.int16) + noise, 0, 255), np.uint8)


def with_box(image: NDArray[np.uint8], x: int, y: int) -> NDArray[np.uint8]:
    out = image.copy()
    out[y : y + 30, x : x + 16] = 15
    return out


def feed(detector: CameraDetector, frames: list[NDArray[np.uint8]], start: float) -> list[Finding]:
    out: list[Finding] = []
    for i, frame in enumerate(frames):
        out += detector.feed(at(start + i / FPS), frame)
    return out


# -- config -----------------------------------------------------------------------------------


def test_config_refuses_unknown_fields_and_bad_zones() -> None:
    with pytest.raises(ValidationError):
        CameraVideoConfig.model_validate({"zonez": []})
    with pytest.raises(ValidationError):
        Zone(name="door", polygon=((0, 0), (1.2, 0), (1, 1)))
    zone = Zone(name="door", polygon=((0, 0), (1, 0), (1, 1)))
    with pytest.raises(ValidationError, match="unique"):
        CameraVideoConfig(zones=(zone, zone))


def test_config_from_registry_attributes() -> None:
    assert CameraVideoConfig.from_attributes({}) == CameraVideoConfig()
    raw = json.dumps({"zones": [{"name": "door", "polygon": [[0, 0], [0.5, 0], [0.5, 1]]}]})
    config = CameraVideoConfig.from_attributes({"video": raw, "model": "x"})
    assert [z.name for z in config.zones] == ["door"]


# -- decode -----------------------------------------------------------------------------------


def test_decode_reduced_size_and_garbage() -> None:
    image = np.zeros((432, 768, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    assert decode_reduced(jpeg, 4).shape == (108, 192)
    assert decode_reduced(jpeg, 2).shape == (216, 384)
    with pytest.raises(FrameDecodeError):
        decode_reduced(b"not a jpeg")


# -- episodes ---------------------------------------------------------------------------------


def test_episode_confirms_clears_and_round_trips() -> None:
    episode = Episode("r", "blue", "t", timedelta(seconds=1), timedelta(seconds=2))
    assert episode.step("d", at(0), True) is None
    assert episode.step("d", at(0.5), False) is None  # a blip: the run starts again
    assert episode.step("d", at(1), True) is None
    opened = episode.step("d", at(2), True)
    assert opened is not None
    assert (opened.phase, opened.episode_start) == ("opened", at(1))
    copy = Episode("r", "blue", "t", timedelta(seconds=1), timedelta(seconds=2))
    copy.restore(json.loads(json.dumps(episode.snapshot())))
    assert copy.step("d", at(3), False) is None
    cleared = copy.step("d", at(5), False)
    assert cleared is not None
    assert (cleared.phase, cleared.episode_start) == ("cleared", at(1))


# -- detector ---------------------------------------------------------------------------------


def test_presence_is_judged_per_zone_and_persists_while_still() -> None:
    config = CameraVideoConfig(
        zones=(
            Zone(name="left", polygon=((0, 0), (0.5, 0), (0.5, 1), (0, 1))),
            Zone(name="right", polygon=((0.5, 0), (1, 0), (1, 1), (0.5, 1))),
        )
    )
    detector = CameraDetector("cam", config)
    view = scene()
    assert feed(detector, [noisy(view, i) for i in range(30)], 0) == []
    # Someone walks in on the left and then stands still for 60 s.
    still = with_box(view, 20, 40)
    findings = feed(detector, [noisy(still, i) for i in range(600)], 3)
    assert [(f.rule, f.phase) for f in findings] == [("video.presence.left", "opened")]
    assert findings[0].episode_start == at(3)
    findings = feed(detector, [noisy(view, i) for i in range(40)], 63)
    assert [(f.rule, f.phase) for f in findings] == [("video.presence.left", "cleared")]


def test_replayed_frames_are_ignored() -> None:
    detector = CameraDetector("cam", CameraVideoConfig())
    feed(detector, [noisy(scene(), i) for i in range(20)], 0)
    assert detector.feed(at(0.5), with_box(scene(), 10, 10)) == []
    assert detector.last_ts == at(1.9)


def test_checkpoint_keeps_an_open_episode_open() -> None:
    config = CameraVideoConfig()
    detector = CameraDetector("cam", config)
    view = scene()
    feed(detector, [noisy(view, i) for i in range(20)], 0)
    dark = np.full_like(view, 18)
    findings = feed(detector, [noisy(dark, i) for i in range(20)], 2)
    [covered] = [f for f in findings if f.phase == "opened"]
    assert covered.rule == "video.tamper.covered"
    state = json.loads(json.dumps(detector.snapshot()))  # plain JSON, as checkpointed

    resumed = CameraDetector("cam", config)
    resumed.restore(state)
    assert resumed.open_rules() == ["video.tamper.covered"]
    assert feed(resumed, [noisy(dark, i) for i in range(20)], 4) == []
    later = feed(resumed, [noisy(view, i) for i in range(40)], 6)
    cleared = [f for f in later if f.rule == covered.rule]
    assert [f.phase for f in cleared] == ["cleared"]
    assert cleared[0].episode_start == covered.episode_start


def test_offline_is_judged_by_sweep() -> None:
    detector = CameraDetector("cam", CameraVideoConfig(offline_s=5))
    feed(detector, [noisy(scene(), i) for i in range(10)], 0)
    assert detector.sweep(at(5.5)) == []
    [offline] = detector.sweep(at(6))
    assert (offline.rule, offline.phase, offline.episode_start) == (OFFLINE_RULE, "opened", at(0.9))
    assert detector.sweep(at(7)) == []  # one episode, not one per sweep
    back = detector.feed(at(8), noisy(scene(), 99))
    assert [(f.rule, f.phase) for f in back] == [(OFFLINE_RULE, "cleared")]


# -- ring -------------------------------------------------------------------------------------


def test_ring_is_bounded_in_seconds_and_bytes() -> None:
    ring = FrameRing(max_seconds=2.0, max_bytes=1000)
    for i in range(50):
        ring.append(at(i / 10), i, b"x" * 10)
    assert ring.span <= timedelta(seconds=2)
    assert ring.window(at(0), at(10))[0].seq == 29
    ring = FrameRing(max_seconds=60.0, max_bytes=1000)
    for i in range(50):
        ring.append(at(i / 10), i, b"x" * 100)
    assert ring.nbytes <= 1000
    assert len(ring) == 10
    assert not ring.append(at(6), 99, b"x" * 2000)
    assert ring.refused == 1


def test_ring_window_and_late_frames() -> None:
    ring = FrameRing(max_seconds=10.0, max_bytes=10_000)
    for i in (0, 1, 2, 4, 5):
        ring.append(at(i), i, b"j")
    ring.append(at(3), 3, b"j")  # late, put in its place
    assert [f.seq for f in ring.window(at(1), at(4))] == [1, 2, 3, 4]
    assert ring.window(at(6), at(9)) == []


# -- scheduler --------------------------------------------------------------------------------


def test_fair_shares_water_filling() -> None:
    assert fair_shares({"a": 25, "b": 25, "c": 2}, 20) == {"a": 9.0, "b": 9.0, "c": 2.0}
    assert fair_shares({"a": 3, "b": 4}, 20) == {"a": 3.0, "b": 4.0}


def test_scheduler_shares_the_budget_fairly_and_counts_shed_frames() -> None:
    scheduler: FrameScheduler[int] = FrameScheduler(20.0, queue_per_camera=2)
    rates = {"busy-1": 25, "busy-2": 25, "quiet": 2}
    arrived = dict.fromkeys(rates, 0)
    tick = 0.01
    for step in range(1000):  # ten seconds
        now = step * tick
        for camera, rate in rates.items():
            if int(now * rate) != int((now - tick) * rate) or step == 0:
                scheduler.offer(camera, step, now)
                arrived[camera] += 1
        scheduler.take(now)
    processed = scheduler.processed_counts()
    shed = scheduler.shed_counts()
    assert processed["quiet"] == arrived["quiet"]  # the small camera loses nothing
    assert abs(processed["busy-1"] - processed["busy-2"]) <= 2
    assert 85 <= processed["busy-1"] <= 95  # about 9 frames/s each, as fair_shares says
    for camera in rates:
        assert processed[camera] + shed[camera] + 0 <= arrived[camera]
        assert arrived[camera] - processed[camera] - shed[camera] <= 2  # still queued


def test_scheduler_sheds_stale_frames() -> None:
    scheduler: FrameScheduler[str] = FrameScheduler(1.0, burst=1.0, max_wait_s=0.5)
    scheduler.take(0.0)
    scheduler.offer("cam", "old", 0.0)
    scheduler.take(0.0)  # the first token goes to "old"
    scheduler.offer("cam", "stale", 0.1)
    assert scheduler.take(0.9) == []  # no token yet, and "stale" waited too long
    assert scheduler.shed_counts() == {"cam": 1}


# -- worker -----------------------------------------------------------------------------------


def test_worker_affinity_is_stable() -> None:
    assert worker_for("cam-1", 4) == worker_for("cam-1", 4)
    assert {worker_for(f"cam-{i}", 4) for i in range(50)} == {0, 1, 2, 3}


def test_process_frame_in_a_process_pool() -> None:
    view = scene()
    jpegs = [cv2.imencode(".jpg", noisy(view, i))[1].tobytes() for i in range(15)]
    black = np.full((108, 192), 18, np.uint8)
    dark = [cv2.imencode(".jpg", noisy(black, i))[1].tobytes() for i in range(15)]
    config = CameraVideoConfig(decode_scale=2).model_dump_json()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        results: list[FrameResult] = [
            pool.submit(process_frame, "cam", at(i / FPS), j, config, i).result()
            for i, j in enumerate([*jpegs, *dark])
        ]
        broken = pool.submit(process_frame, "cam", at(9), b"junk", config).result()
    findings = [f for r in results for f in r.findings]
    assert [(f.rule, f.phase) for f in findings] == [("video.tamper.covered", "opened")]
    assert results[-1].seq == 29
    assert broken.error is not None
    assert broken.findings == ()


def test_video_workers_pin_each_camera_to_one_worker() -> None:
    view = scene()
    jpegs = [cv2.imencode(".jpg", noisy(view, i))[1].tobytes() for i in range(12)]
    cameras = [f"cam-{i}" for i in range(6)]
    with VideoWorkers(2) as workers:
        futures = [
            workers.submit(camera, at(i / FPS), jpeg, seq=i)
            for i, jpeg in enumerate(jpegs)
            for camera in cameras
        ]
        assert all(f.result(60).error is None for f in futures)
        offline = [f for future in workers.sweep(at(30)) for f in future.result(60)]
        snapshots = [future.result(60) for future in workers.snapshots()]
    assert sorted(f.device_id for f in offline) == cameras
    held = [set(snapshot) for snapshot in snapshots]
    assert held[0] | held[1] == set(cameras)
    assert held[0] & held[1] == set()  # one detector per camera, in one worker
    for index, names in enumerate(held):
        assert all(worker_for(name, 2) == index for name in names)


def test_scheduler_weights_share_the_budget() -> None:
    scheduler: FrameScheduler[int] = FrameScheduler(30.0, queue_per_camera=3)
    scheduler.set_weight("entrance", 2.0)
    for step in range(1000):
        now = step * 0.01
        for camera in ("entrance", "yard"):
            scheduler.offer(camera, step, now)
        scheduler.take(now)
    processed = scheduler.processed_counts()
    assert 1.8 <= processed["entrance"] / processed["yard"] <= 2.2
    assert sum(processed.values()) <= 30 * 10 + scheduler.burst


# -- bench ------------------------------------------------------------------------------------


def test_video_bench_reports_its_figures() -> None:
    from offsite.bench.detectors_video import run_video_bench  # noqa: PLC0415

    if not (VIDEO_DIR / "car-detection.mp4").is_file():
        pytest.skip(f"real footage not present in {VIDEO_DIR}")
    result = json.loads(json.dumps(run_video_bench(8, video_dir=VIDEO_DIR, rounds=1)))
    assert result["resolution"] == "768x432"
    assert result["frames"] == 16
    for contender in ("pipeline", "baseline"):
        figures = result[contender]
        assert figures["frames"] == 16
        assert figures["frames_per_s_cpu"] > 0
        assert figures["frames_per_s_wall"] > 0
    assert set(result["decode_only"]) == {"reduced_grey", "full_colour"}
    assert result["decode_scale"] == 8
    assert result["stages"]["decode_us"] > 0
    assert result["stages"]["detect_us"] > 0
    assert result["ratio_cpu"] > 0
    assert result["ratio_ceiling_cpu"] > 0
    assert set(result["meets_targets"]) == {"frames_per_s_per_core", "ratio"}
