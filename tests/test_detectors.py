"""Detectors in event time: confirmation delay, one episode per sustained condition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from offsite.detectors.findings import Finding
from offsite.detectors.gas import GasDetector, GasLevels
from offsite.detectors.silence import SilenceDetector

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def series(
    device: str, values: list[float], start: float = 0.0, step: float = 1.0
) -> list[tuple[str, datetime, float]]:
    return [(device, at(start + i * step), v) for i, v in enumerate(values)]


def test_no_clue_before_the_confirmation_delay() -> None:
    detector = GasDetector(GasLevels(confirm_s=15))
    assert detector.feed(series("d", [30.0] * 15)) == []  # 0..14 s above: not yet 15 s
    [finding] = detector.feed([("d", at(15), 30.0)])
    assert (finding.rule, finding.phase, finding.severity) == ("gas.lel.level1", "opened", "orange")
    assert finding.episode_start == T0
    assert finding.at == at(15)


def test_a_puff_shorter_than_the_delay_opens_nothing() -> None:
    detector = GasDetector(GasLevels(confirm_s=15))
    assert detector.feed(series("d", [40.0] * 10 + [5.0] + [40.0] * 10)) == []


def test_sustained_condition_opens_exactly_one_clue_per_level() -> None:
    detector = GasDetector(GasLevels(confirm_s=10))
    findings = detector.feed(series("d", [60.0] * 600))  # ten minutes above both levels
    opened = [f for f in findings if f.phase == "opened"]
    assert sorted(f.rule for f in opened) == ["gas.lel.level1", "gas.lel.level2"]
    assert {f.key for f in findings if f.rule == "gas.lel.level2"} == {opened[1].key}


def test_updates_only_when_the_peak_rises_and_clear_needs_hysteresis_and_time() -> None:
    detector = GasDetector(GasLevels(confirm_s=5, clear_s=10, hysteresis_pct=2))
    findings = detector.feed(series("d", [30.0] * 6 + [33.0, 33.5, 34.2] + [24.0] * 5))
    assert [f.phase for f in findings] == ["opened", "updated", "updated"]
    # 24 is within the 2 %LEL hysteresis of 25: still the same episode
    assert detector.feed(series("d", [20.0] * 10, start=14)) == []
    [cleared] = detector.feed([("d", at(24), 20.0)])
    assert cleared.phase == "cleared"
    assert cleared.key == findings[0].key
    assert cleared.peak == 34.2


def test_a_new_episode_after_clearing_has_a_new_key() -> None:
    detector = GasDetector(GasLevels(confirm_s=2, clear_s=2))
    first = detector.feed(series("d", [30.0] * 3 + [1.0] * 3))
    second = detector.feed(series("d", [30.0] * 3, start=10))
    assert [f.phase for f in first] == ["opened", "cleared"]
    assert [f.phase for f in second] == ["opened"]
    assert second[0].key != first[0].key


def test_replayed_and_out_of_order_readings_are_ignored() -> None:
    detector = GasDetector(GasLevels(confirm_s=5))
    readings = series("d", [30.0] * 6)
    assert len(detector.feed(readings)) == 1
    assert detector.feed(readings) == []  # the broker redelivered the same batch


def test_devices_are_independent_and_arrays_may_arrive_unsorted() -> None:
    detector = GasDetector(GasLevels(confirm_s=3))
    readings = series("a", [30.0] * 4) + series("b", [5.0] * 4)
    findings = detector.feed(list(reversed(readings)))
    assert [(f.device_id, f.phase) for f in findings] == [("a", "opened")]


def test_silence_opens_once_and_clears_when_readings_return() -> None:
    silence = SilenceDetector(intervals_allowed=3)
    assert silence.observe("d", 10.0, at(0)) is None
    assert silence.sweep(at(29)) == []
    [opened] = silence.sweep(at(31))
    assert (opened.rule, opened.phase, opened.severity) == ("device.silent", "opened", "blue")
    assert silence.sweep(at(60)) == []
    back = silence.observe("d", 10.0, at(61))
    assert back is not None
    assert back.phase == "cleared"
    assert back.key == opened.key


def test_a_finding_key_names_the_instant_not_the_offset_it_was_sent_with() -> None:
    utc = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    beijing = utc.astimezone(timezone(timedelta(hours=8)))

    def finding(start: datetime) -> Finding:
        return Finding("gas.lel.level1", "gas-0001", "orange", "opened", start, start, "t")

    assert (
        finding(beijing).key
        == finding(utc).key
        == "gas-0001|gas.lel.level1|2026-11-25T02:00:00+00:00"
    )
