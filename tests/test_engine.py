"""The engine keeps `ThresholdState`'s semantics: the gas tests of test_detectors.py, ported
with identical expectations, and the engine against GasDetector on random series."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest

from offsite.detectors.batch import from_ms, to_ms
from offsite.detectors.engine import ScalarEngine
from offsite.detectors.findings import Finding
from offsite.detectors.gas import GasDetector, GasLevels
from offsite.detectors.rulepack import DeviceProfile, Override, load_pack
from offsite.detectors.threshold import ThresholdRule, ThresholdState
from tests.scalar import T0, at, batch, engine, series

LEVELS = ("gas.lel.level1", "gas.lel.level2")
GAS = DeviceProfile("d", "gas_detector")


def gas_engine(confirm_s: float = 15, clear_s: float = 30, hysteresis: float = 2) -> ScalarEngine:
    overrides = [
        Override(
            rule=rule, device_id=d, confirm_s=confirm_s, clear_s=clear_s, hysteresis=hysteresis
        )
        for rule in LEVELS
        for d in ("d", "a", "b")
    ]
    devices = [DeviceProfile(d, "gas_detector") for d in ("d", "a", "b")]
    return ScalarEngine([load_pack("gas")], devices, overrides, only=LEVELS)


def lel(
    device: str, values: list[float], start: float = 0.0
) -> list[tuple[str, float, dict[str, float]]]:
    return series(device, "lel_pct", values, start)


def test_no_clue_before_the_confirmation_delay() -> None:
    detector = gas_engine(confirm_s=15)
    assert detector.feed(batch(lel("d", [30.0] * 15))) == []
    [finding] = detector.feed(batch([("d", 15, {"lel_pct": 30.0})]))
    assert (finding.rule, finding.phase, finding.severity) == ("gas.lel.level1", "opened", "orange")
    assert finding.episode_start == T0
    assert finding.at == at(15)


def test_a_puff_shorter_than_the_delay_opens_nothing() -> None:
    detector = gas_engine(confirm_s=15)
    assert detector.feed(batch(lel("d", [40.0] * 10 + [5.0] + [40.0] * 10))) == []


def test_sustained_condition_opens_exactly_one_clue_per_level() -> None:
    detector = gas_engine(confirm_s=10)
    findings = detector.feed(batch(lel("d", [60.0] * 600)))
    opened = [f for f in findings if f.phase == "opened"]
    assert sorted(f.rule for f in opened) == ["gas.lel.level1", "gas.lel.level2"]
    assert {f.key for f in findings if f.rule == "gas.lel.level2"} == {opened[1].key}


def test_updates_only_when_the_peak_rises_and_clear_needs_hysteresis_and_time() -> None:
    detector = gas_engine(confirm_s=5, clear_s=10, hysteresis=2)
    findings = detector.feed(batch(lel("d", [30.0] * 6 + [33.0, 33.5, 34.2] + [24.0] * 5)))
    assert [f.phase for f in findings] == ["opened", "updated", "updated"]
    assert detector.feed(batch(lel("d", [20.0] * 10, start=14))) == []
    [cleared] = detector.feed(batch([("d", 24, {"lel_pct": 20.0})]))
    assert cleared.phase == "cleared"
    assert cleared.key == findings[0].key
    assert cleared.peak == 34.2


def test_a_new_episode_after_clearing_has_a_new_key() -> None:
    detector = gas_engine(confirm_s=2, clear_s=2)
    first = detector.feed(batch(lel("d", [30.0] * 3 + [1.0] * 3)))
    second = detector.feed(batch(lel("d", [30.0] * 3, start=10)))
    assert [f.phase for f in first] == ["opened", "cleared"]
    assert [f.phase for f in second] == ["opened"]
    assert second[0].key != first[0].key


def test_replayed_and_out_of_order_readings_are_ignored() -> None:
    detector = gas_engine(confirm_s=5)
    readings = batch(lel("d", [30.0] * 6))
    assert len(detector.feed(readings)) == 1
    assert detector.feed(readings) == []


def test_duplicates_within_one_batch_count_once() -> None:
    detector = gas_engine(confirm_s=5)
    rows = lel("d", [30.0] * 5)
    assert detector.feed(batch(rows + rows)) == []


def test_devices_are_independent_and_arrays_may_arrive_unsorted() -> None:
    detector = gas_engine(confirm_s=3)
    rows = lel("a", [30.0] * 4) + lel("b", [5.0] * 4)
    findings = detector.feed(batch(list(reversed(rows))))
    assert [(f.device_id, f.phase) for f in findings] == [("a", "opened")]


def test_resume_from_a_snapshot_mid_episode() -> None:
    first = gas_engine(confirm_s=10)
    assert first.feed(batch(lel("d", [30.0] * 6))) == []  # pending: 5 s of 10
    saved = first.snapshot("d")
    second = gas_engine(confirm_s=10)
    assert not second.known("d")
    second.restore("d", saved)
    assert second.known("d")
    assert second.feed(batch(lel("d", [30.0] * 6))) == []  # a redelivery: replay
    [opened] = second.feed(batch(lel("d", [30.0] * 5, start=6)))
    assert (opened.phase, opened.episode_start, opened.at) == ("opened", T0, at(10))


def test_resume_from_a_gas_detector_checkpoint() -> None:
    old = GasDetector(GasLevels(confirm_s=5))
    old.feed([("d", at(i), 30.0) for i in range(8)])
    new = gas_engine(confirm_s=5)
    new.restore("d", old.snapshot("d"))
    assert new.feed(batch(lel("d", [30.0] * 8))) == []
    [cleared] = new.feed(batch(lel("d", [1.0] * 40, start=8)))
    assert (cleared.phase, cleared.episode_start) == ("cleared", T0)


@pytest.mark.parametrize("seed", range(6))
def test_same_findings_as_gas_detector_on_random_series(seed: int) -> None:
    rng = random.Random(seed)
    old = GasDetector(GasLevels(confirm_s=5, clear_s=8, hysteresis_pct=2))
    new = gas_engine(confirm_s=5, clear_s=8, hysteresis=2)
    clock = {"a": 0.0, "b": 0.0}
    # A reading sent again carries its time and its seq: one seq per (device, time).
    seq_of: dict[tuple[str, float], int] = {}
    for _ in range(20):
        rows = []
        seqs = []
        for _ in range(rng.randint(1, 30)):
            device = rng.choice("ab")
            # mostly forward, sometimes a step back in time (a replay)
            clock[device] += rng.choice([1.0, 1.0, 2.0, 0.0, -3.0])
            value = rng.choice([0.0, 10.0, 24.0, 26.0, 30.0, 49.0, 51.0, 70.0])
            rows.append((device, clock[device], {"lel_pct": value}))
            seqs.append(seq_of.setdefault((device, clock[device]), len(seq_of)))
        expected = old.feed((d, at(t), f["lel_pct"]) for d, t, f in rows)
        # titles are worded differently and the engine cites its pack; the rest is equal
        assert [replace(f, title="", details={}) for f in new.feed(batch(rows, seqs))] == [
            replace(f, title="", details={}) for f in expected
        ]
    for device in "ab":
        if new.known(device):
            last = new.snapshot(device)["last_ts_ms"]
            assert from_ms(last) == old._states[device][0].last_ts


@pytest.mark.parametrize("seed", range(4))
def test_rising_rate_equals_a_naive_window_search(seed: int) -> None:
    """Readings every second (so no episode can be open while a window is still short);
    the engine's pre-filtered vector search against a reading-by-reading one."""
    rule = ThresholdRule(
        "gas.lel.rising", "yellow", 5.0, timedelta(0), 1.0, timedelta(seconds=60), "", 5.0
    )
    rng = random.Random(seed)
    values = {d: [0.0] for d in "ab"}
    for d in "ab":
        for _ in range(299):
            jump = rng.choice([0.0, 0.1, -0.1, 0.3, 1.5, -1.0])
            values[d].append(max(0.0, values[d][-1] + jump))
    expected = []
    for d in "ab":
        state = ThresholdState()
        for i, v in enumerate(values[d]):
            j = max(0, i - 60)  # oldest reading within 60 s
            if i - j < 20:
                continue
            rate = (v - values[d][j]) * 60.0 / (i - j)
            found = state.step(rule, d, at(i), rate)
            if found is not None:
                expected.append(found)
    expected.sort(key=lambda f: (f.at, f.device_id))
    engine = ScalarEngine(
        [load_pack("gas")],
        [DeviceProfile(d, "gas_detector") for d in "ab"],
        only=["gas.lel.rising"],
    )
    got = []
    i = 0
    while i < 300:
        n = rng.randint(1, 40)
        rows = [
            (d, float(k), {"lel_pct": values[d][k]})
            for k in range(i, min(i + n, 300))
            for d in "ab"
        ]
        got += engine.feed(batch(rows))
        i += n

    def plain(f: Finding) -> tuple[object, ...]:
        return (f.device_id, f.phase, f.episode_start, f.at, round(f.value or 0.0, 9))

    assert [plain(f) for f in got] == [plain(f) for f in expected]
    assert any(f.phase == "opened" for f in got)


def test_readings_of_the_same_millisecond_count_once_each_and_leave_no_seq_gap() -> None:
    """A message of 20 readings stamped with one time: not replays of each other."""
    e = engine("health", only=["device.seq_gap"])
    rows = [("d", 0.0, {"lel_pct": 1.0})] * 20 + [("d", 0.5, {"lel_pct": 1.0})] * 20
    assert e.feed(batch(rows[:20], list(range(20)))) == []
    assert e.feed(batch(rows[20:], list(range(20, 40)))) == []
    assert e.snapshot("d")["last_seq"] == 39
    # the same message again is a replay; a real gap still shows
    assert e.feed(batch(rows[20:], list(range(20, 40)))) == []
    [gap] = e.feed(batch([("d", 1.0, {"lel_pct": 1.0})], [45]))
    assert gap.value == 5


def test_batch_times_are_floored_to_the_millisecond_like_to_ms() -> None:
    from offsite.detectors.batch import _epoch_ms, to_ms  # noqa: PLC0415

    rng = random.Random(3)
    stamps = [
        T0 + timedelta(microseconds=rng.randrange(-(10**12), 10**13)) for _ in range(2000)
    ] + [T0, T0 + timedelta(microseconds=999), T0 - timedelta(microseconds=1)]
    assert _epoch_ms(stamps).tolist() == [to_ms(t) for t in stamps]


def test_a_fast_device_carries_a_thinned_window_and_still_finds_the_rise() -> None:
    e = engine("gas", only=["gas.lel.rising"], devices=[GAS])
    # 20 readings a second, flat at 2 %LEL for 40 s, in batches of one second
    for second in range(40):
        rows = [("d", second + i / 20, {"lel_pct": 2.0}) for i in range(20)]
        assert e.feed(batch(rows, list(range(second * 20, second * 20 + 20)))) == []
    window = e.snapshot("d")["rules"]["gas.lel.rising"]["window"]
    assert len(window) <= 62  # one point a second, and the newest
    # then a rise of 10 %LEL in 30 s: 20 %LEL/min, over the pack's 5
    found = []
    for second in range(40, 70):
        level = 2.0 + (second - 40) / 3
        rows = [("d", second + i / 20, {"lel_pct": level}) for i in range(20)]
        found += e.feed(batch(rows, list(range(second * 20, second * 20 + 20))))
    assert [f.rule for f in found if f.phase == "opened"] == ["gas.lel.rising"]


def _thinned_reference(points: list[tuple[int, float]], window_ms: int) -> list[tuple[int, float]]:
    """A device's carried window kept the plain way: the readings of the last window, the
    first lowest of each second, and the newest."""
    last = points[-1][0]
    recent = [p for p in points if p[0] >= last - window_ms]
    seconds: dict[int, tuple[int, float]] = {}
    for p in recent:
        low = seconds.get(p[0] // 1000)
        if low is None or p[1] < low[1]:
            seconds[p[0] // 1000] = p
    chosen = set(seconds.values()) | {recent[-1]}
    return list(dict.fromkeys(p for p in recent if p in chosen))


def test_carried_rate_windows_match_a_per_device_reference_over_random_batches() -> None:
    """After every batch, each device's carried window (the rising-rate rule's state) equals
    the plain per-device list of `_thinned_reference`. Forty devices in batches of one to
    four hundred readings, at rates from twenty a second to one in seven seconds: the shared
    buffer the windows live in is replaced, compacted and grown many times over. A restore
    from the snapshots gives the same windows."""
    rng = random.Random(11)
    names = [f"g{i:02d}" for i in range(40)]
    profiles = [DeviceProfile(n, "gas_detector") for n in names]
    e = engine("gas", only=["gas.lel.rising"], devices=profiles)
    window_ms = 60_000
    reference: dict[str, list[tuple[int, float]]] = {n: [] for n in names}
    clock_ms = dict.fromkeys(names, 0)
    seqs = dict.fromkeys(names, 0)

    def windows(of: ScalarEngine) -> dict[str, list[tuple[int, float]]]:
        return {
            n: [(int(t), float(v)) for t, v in of.snapshot(n)["rules"]["gas.lel.rising"]["window"]]
            for n in names
        }

    for _ in range(300):
        rows: list[tuple[str, float, dict[str, float]]] = []
        seq_list: list[int] = []
        for _ in range(rng.choice([1, 3, 10, 50, 400])):
            n = rng.choice(names)
            clock_ms[n] += rng.choice([50, 300, 1000, 7000])
            level = round(rng.uniform(0.0, 5.0), 1)
            rows.append((n, clock_ms[n] / 1000, {"lel_pct": level}))
            seq_list.append(seqs[n])
            seqs[n] += 1
            reference[n].append((to_ms(at(clock_ms[n] / 1000)), level))
        e.feed(batch(rows, seq_list))
        for n in {row[0] for row in rows}:
            reference[n] = _thinned_reference(reference[n], window_ms)
        assert windows(e) == reference
    resumed = engine("gas", only=["gas.lel.rising"], devices=profiles)
    for n in names:
        resumed.restore(n, e.snapshot(n))
    assert windows(resumed) == reference
