"""Every rule of the built-in packs: boundaries, confirmation, clearing, replay, resume."""

from __future__ import annotations

import pytest

from offsite.detectors.engine import ScalarEngine
from offsite.detectors.findings import Finding
from offsite.detectors.rulepack import DeviceProfile, load_pack
from offsite.registry.models import RiskTier
from tests.scalar import T0, Row, at, batch, engine, series

ELEVATOR_ATTRS: dict[str, float | int | str | bool] = {"rated_speed_mps": 1.75, "floors": 18}
BOILER_ATTRS: dict[str, float | int | str | bool] = {
    "rated_pressure_mpa": 1.25,
    "max_temp_c": 194.0,
    "low_water_mm": 80.0,
}


def one(
    pack: str,
    rule: str,
    kind: str,
    attributes: dict[str, float | int | str | bool] | None = None,
    tier: RiskTier = "A",
) -> ScalarEngine:
    device = DeviceProfile("d", kind, "s", tier, attributes or {})
    return engine(pack, only=[rule], devices=[device])


def phases(findings: list[Finding]) -> list[tuple[str, float]]:
    return [(f.phase, (f.at - T0).total_seconds()) for f in findings]


def rows(values: list[dict[str, float]], start: float = 0.0, step: float = 1.0) -> list[Row]:
    return [("d", start + i * step, v) for i, v in enumerate(values)]


# gas


@pytest.mark.parametrize(("value", "opens"), [(25.0, True), (24.9, False)])
def test_gas_first_level_boundary(value: float, opens: bool) -> None:
    detector = one("gas", "gas.lel.level1", "gas_detector")
    found = detector.feed(batch(series("d", "lel_pct", [value] * 16)))
    assert phases(found) == ([("opened", 15.0)] if opens else [])


def test_gas_rising_rate_fires_once_the_window_spans_enough() -> None:
    detector = one("gas", "gas.lel.rising", "gas_detector")
    rising = [0.2 * i for i in range(40)]  # 12 %LEL per minute
    found = detector.feed(batch(series("d", "lel_pct", rising)))
    assert phases(found)[:1] == [("opened", 20.0)]  # min_span_s = 20
    assert found[0].value == pytest.approx(12.0)
    assert found[0].details["pack"] == "gas@2026.11.1"
    assert "operational default" in str(found[0].details["source"])


def test_gas_rising_rate_is_the_same_when_the_rise_spans_batches() -> None:
    rising = series("d", "lel_pct", [0.2 * i for i in range(40)])
    whole = one("gas", "gas.lel.rising", "gas_detector").feed(batch(rising))
    split = one("gas", "gas.lel.rising", "gas_detector")
    pieces = [split.feed(batch(rising[i : i + 3])) for i in range(0, 40, 3)]
    assert [f for piece in pieces for f in piece] == whole


def test_gas_rising_rate_resumes_its_window_from_a_snapshot() -> None:
    rising = series("d", "lel_pct", [0.2 * i for i in range(40)])
    first = one("gas", "gas.lel.rising", "gas_detector")
    assert first.feed(batch(rising[:15])) == []
    second = one("gas", "gas.lel.rising", "gas_detector")
    second.restore("d", first.snapshot("d"))
    assert phases(second.feed(batch(rising[15:])))[:1] == [("opened", 20.0)]


def test_gas_slow_rise_and_noise_do_not_fire_the_rate() -> None:
    detector = one("gas", "gas.lel.rising", "gas_detector")
    slow = [0.05 * i for i in range(120)]  # 3 %LEL per minute
    noisy = [1.0, 1.4, 0.8, 1.2] * 30
    assert detector.feed(batch(series("d", "lel_pct", slow))) == []
    assert detector.feed(batch(series("d", "lel_pct", noisy, start=200))) == []


def test_gas_co_levels_ignore_readings_without_co() -> None:
    detector = engine(
        "gas", only=["gas.co.level1", "gas.co.level2"], devices=[DeviceProfile("d", "gas_detector")]
    )
    found = detector.feed(batch(series("d", "co_ppm", [30.0] * 16)))
    assert [(f.rule, f.phase) for f in found] == [("gas.co.level1", "opened")]
    # forty seconds of readings without CO do not clear the episode
    assert detector.feed(batch(series("d", "lel_pct", [1.0] * 40, start=16))) == []
    [cleared] = detector.feed(batch(series("d", "co_ppm", [0.0] * 31, start=56)))
    assert (cleared.phase, cleared.at) == ("cleared", at(86))


def test_gas_sensor_fault_opens_at_once_and_clears_after_a_minute() -> None:
    detector = one("gas", "gas.sensor.fault", "gas_detector")
    found = detector.feed(batch(rows([{"fault": 1.0}] * 3 + [{"fault": 0.0}] * 61)))
    assert phases(found) == [("opened", 0.0), ("cleared", 63.0)]


def test_gas_flat_line_needs_both_readings_and_duration() -> None:
    detector = one("gas", "gas.sensor.stuck", "gas_detector")
    flat = series("d", "lel_pct", [3.2] * 61, step=30.0)  # 0 .. 1800 s
    found = detector.feed(batch(flat[:60]))
    assert found == []  # 60 readings but 1770 s
    [opened] = detector.feed(batch(flat[60:]))
    assert (opened.phase, opened.at, opened.episode_start, opened.value) == (
        "opened",
        at(1800),
        at(1800),
        3.2,
    )
    [cleared] = detector.feed(batch(series("d", "lel_pct", [3.3], start=1830)))
    assert cleared.phase == "cleared"


def test_gas_flat_line_at_zero_is_clean_air() -> None:
    detector = one("gas", "gas.sensor.stuck", "gas_detector")
    assert detector.feed(batch(series("d", "lel_pct", [0.0] * 100, step=30.0))) == []


def test_gas_flat_line_run_survives_a_restart() -> None:
    flat = series("d", "lel_pct", [3.2] * 61, step=30.0)
    first = one("gas", "gas.sensor.stuck", "gas_detector")
    first.feed(batch(flat[:40]))
    second = one("gas", "gas.sensor.stuck", "gas_detector")
    second.restore("d", first.snapshot("d"))
    assert phases(second.feed(batch(flat[40:]))) == [("opened", 1800.0)]


def test_gas_valve_changes_open_and_clear_one_episode() -> None:
    detector = one("gas", "gas.valve.closed", "gas_detector")
    valve = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    found = detector.feed(batch(series("d", "valve", valve)))
    assert phases(found) == [("opened", 2.0), ("cleared", 5.0)]
    assert found[0].severity == "blue"
    assert found[0].key == found[1].key


# elevators


def stopped_outside(door: float = 0.0) -> dict[str, float]:
    return {"moving": 0.0, "in_door_zone": 0.0, "door": door, "speed_mps": 0.0, "floor": 7}


def test_elevator_trapped_after_a_minute_and_cleared_when_the_door_opens() -> None:
    detector = one("elevator", "elevator.trapped", "elevator", ELEVATOR_ATTRS)
    readings = rows([stopped_outside()] * 61 + [stopped_outside(door=1.0)])
    found = detector.feed(batch(readings))
    assert phases(found) == [("opened", 60.0), ("cleared", 61.0)]
    assert (found[0].severity, found[0].value) == ("red", 7.0)


def test_elevator_trapped_confirmation_is_shorter_for_a_d_subject() -> None:
    detector = one("elevator", "elevator.trapped", "elevator", ELEVATOR_ATTRS, tier="D")
    found = detector.feed(batch(rows([stopped_outside()] * 61)))
    assert phases(found) == [("opened", 24.0)]  # 60 s * (1 - 0.2 * 3)


def test_elevator_trapped_needs_every_field() -> None:
    detector = one("elevator", "elevator.trapped", "elevator", ELEVATOR_ATTRS)
    partial = [{"moving": 0.0, "door": 0.0}] * 100  # no door-zone signal: not judged
    assert detector.feed(batch(rows(partial))) == []


def test_elevator_alarm_button_held() -> None:
    detector = one("elevator", "elevator.alarm_button", "elevator", ELEVATOR_ATTRS)
    brushed = rows([{"alarm_button": 1.0}] * 3 + [{"alarm_button": 0.0}])
    assert detector.feed(batch(brushed)) == []
    held = rows([{"alarm_button": 1.0}] * 6, start=10)
    assert phases(detector.feed(batch(held))) == [("opened", 15.0)]


def test_elevator_door_open_while_moving() -> None:
    detector = one("elevator", "elevator.door_open_moving", "elevator", ELEVATOR_ATTRS)
    moving_open = {"moving": 1.0, "door": 1.0, "speed_mps": 1.0}
    found = detector.feed(batch([*rows([moving_open] * 2, step=0.5), ("d", 1.0, moving_open)]))
    assert phases(found) == [("opened", 1.0)]
    assert found[0].value == 1.0


@pytest.mark.parametrize(
    ("speed", "rated", "expected"),
    [
        (2.1, None, ["elevator.overspeed.tier1"]),  # 1.2 x 1.75 from the registry
        (2.09, None, []),
        (2.45, None, ["elevator.overspeed.tier1", "elevator.overspeed.tier2"]),
        (1.2, 1.0, ["elevator.overspeed.tier1"]),  # rated speed in the reading wins
    ],
)
def test_elevator_overspeed_tiers(speed: float, rated: float | None, expected: list[str]) -> None:
    device = DeviceProfile("d", "elevator", "s", "A", ELEVATOR_ATTRS)
    detector = engine(
        "elevator", only=["elevator.overspeed.tier1", "elevator.overspeed.tier2"], devices=[device]
    )
    reading = {"speed_mps": speed} | ({} if rated is None else {"rated_speed_mps": rated})
    found = detector.feed(batch(rows([reading])))
    assert sorted(f.rule for f in found) == expected


def test_elevator_overspeed_needs_a_rated_speed() -> None:
    detector = one("elevator", "elevator.overspeed.tier2", "elevator", {"floors": 18})
    assert detector.feed(batch(rows([{"speed_mps": 9.0}]))) == []


def test_elevator_stopped_outside_the_door_zone() -> None:
    detector = one("elevator", "elevator.stopped_outside_door_zone", "elevator", ELEVATOR_ATTRS)
    found = detector.feed(batch(rows([stopped_outside(door=1.0)] * 11)))
    assert phases(found) == [("opened", 10.0)]
    assert found[0].severity == "yellow"


@pytest.mark.parametrize(
    ("floor", "attributes", "opens"),
    [
        (19, ELEVATOR_ATTRS, True),
        (18, ELEVATOR_ATTRS, False),
        (0, ELEVATOR_ATTRS, True),
        (-1, ELEVATOR_ATTRS | {"lowest_floor": -2}, False),
        (-3, ELEVATOR_ATTRS | {"lowest_floor": -2}, True),
    ],
)
def test_elevator_overrun_top_and_bottom(
    floor: int, attributes: dict[str, float | int | str | bool], opens: bool
) -> None:
    detector = one("elevator", "elevator.overrun", "elevator", attributes)
    found = detector.feed(batch(rows([{"floor": float(floor)}])))
    assert phases(found) == ([("opened", 0.0)] if opens else [])


def test_elevator_power_loss_from_the_mains_field() -> None:
    detector = one("elevator", "elevator.power_loss", "elevator", ELEVATOR_ATTRS)
    found = detector.feed(batch(rows([{"mains_power": 0.0}] * 6 + [{"mains_power": 1.0}])))
    assert phases(found) == [("opened", 5.0), ("cleared", 6.0)]


# boilers, pressure vessels, cranes


@pytest.mark.parametrize("kind", ["boiler", "pressure_vessel"])
def test_overpressure_against_the_rated_pressure(kind: str) -> None:
    detector = one("boiler", "boiler.overpressure", kind, BOILER_ATTRS)
    found = detector.feed(batch(series("d", "pressure_mpa", [1.24] * 6 + [1.25] * 6)))
    assert phases(found) == [("opened", 11.0)]
    assert (found[0].threshold, found[0].value) == (1.25, 1.25)


def test_overtemperature() -> None:
    detector = one("boiler", "boiler.overtemperature", "boiler", BOILER_ATTRS)
    found = detector.feed(batch(series("d", "temp_c", [193.9] * 3 + [194.0] * 11)))
    assert phases(found) == [("opened", 13.0)]


def test_low_water_clears_only_past_the_hysteresis_and_after_a_minute() -> None:
    detector = one("boiler", "boiler.water.low", "boiler", BOILER_ATTRS)
    low = series("d", "water_level_mm", [80.0] * 11)
    found = detector.feed(batch(low))
    assert phases(found) == [("opened", 10.0)]
    assert (found[0].threshold, found[0].peak) == (80.0, 80.0)
    assert detector.feed(batch(series("d", "water_level_mm", [84.0] * 100, start=11))) == []
    back = detector.feed(batch(series("d", "water_level_mm", [86.0] * 61, start=111)))
    assert phases(back) == [("cleared", 171.0)]


def test_extremely_low_water_and_its_tightening_for_a_d_subject() -> None:
    a = one("boiler", "boiler.water.extremely_low", "boiler", BOILER_ATTRS)
    d = one("boiler", "boiler.water.extremely_low", "boiler", BOILER_ATTRS, tier="D")
    readings = batch(series("d", "water_level_mm", [45.0] * 20))
    assert a.feed(readings) == []  # 45 mm is above 0.5 x 80
    [opened] = d.feed(readings)  # D: 0.5 x 1.15 x 80 = 46 mm
    assert opened.threshold == pytest.approx(46.0)
    assert opened.at == at(2)  # 3 s x 0.4 = 1.2 s: met by the reading at 2 s


@pytest.mark.parametrize(
    ("load", "rated", "rules"),
    [
        (8.0, 8.0, ["crane.overload"]),
        (7.9, 8.0, []),
        (8.8, 8.0, ["crane.overload", "crane.overload.severe"]),
        (4.2, None, ["crane.overload"]),  # registry's 4.0 t when the reading has none
    ],
)
def test_crane_overload_against_rated_load(
    load: float, rated: float | None, rules: list[str]
) -> None:
    device = DeviceProfile("d", "crane", "s", "A", {"rated_load_t": 4.0})
    detector = engine("crane", only=["crane.overload", "crane.overload.severe"], devices=[device])
    reading = {"load_t": load} | ({} if rated is None else {"rated_load_t": rated})
    found = detector.feed(batch(rows([reading, reading])))
    assert sorted(f.rule for f in found) == rules


def test_crane_wind_over_the_limit() -> None:
    detector = one("crane", "crane.wind", "crane")
    found = detector.feed(batch(series("d", "wind_mps", [19.9] * 5 + [20.0] * 11)))
    assert phases(found) == [("opened", 15.0)]


# device health


def test_sequence_gap_and_device_restart() -> None:
    detector = one("health", "device.seq_gap", "gas_detector")
    readings: list[Row] = [("d", float(i), {}) for i in range(6)]
    found = detector.feed(batch(readings, seqs=[0, 1, 2, 5, 0, 1]))  # a gap, then a restart
    assert [(f.phase, f.value) for f in found] == [("opened", 2.0)]
    later: list[Row] = [("d", 6.0 + 100 * i, {}) for i in range(4)]
    cleared = detector.feed(batch(later, seqs=[2, 3, 4, 5]))
    assert phases(cleared) == [("cleared", 306.0)]


def test_sequence_gap_across_batches_and_a_restart_of_the_worker() -> None:
    first = one("health", "device.seq_gap", "gas_detector")
    assert first.feed(batch([("d", 0.0, {})], seqs=[10])) == []
    second = one("health", "device.seq_gap", "gas_detector")
    second.restore("d", first.snapshot("d"))
    [gap] = second.feed(batch([("d", 1.0, {})], seqs=[14]))
    assert gap.value == 3.0


def test_clock_ahead_and_behind() -> None:
    ahead = one("health", "device.clock_ahead", "gas_detector")
    readings: list[Row] = [("d", float(i), {}) for i in range(0, 70, 5)]
    found = ahead.feed(batch(readings, lag_s=-40.0))
    assert phases(found) == [("opened", 60.0)]
    assert found[0].value == 40.0
    behind = one("health", "device.clock_behind", "gas_detector")
    late: list[Row] = [("d", float(i), {}) for i in range(0, 700, 50)]
    assert phases(behind.feed(batch(late, lag_s=700.0))) == [("opened", 600.0)]
    assert behind.feed(batch([("d", 700.0, {})], lag_s=10.0)) == []  # clearing: 60 s


def test_unregistered_devices_get_the_health_rules_only() -> None:
    packs = [load_pack("gas"), load_pack("health")]
    detector = ScalarEngine(packs)
    found = detector.feed(batch(series("x", "lel_pct", [80.0] * 30), seqs=[*range(29), 40]))
    assert [f.rule for f in found] == ["device.seq_gap"]


def test_a_condition_without_its_report_field_reports_no_value() -> None:
    detector = one("elevator", "elevator.door_open_moving", "elevator", ELEVATOR_ATTRS)
    readings = [*rows([{"moving": 1.0, "door": 1.0}] * 2), ("other", 0.0, {"speed_mps": 1.0})]
    [found] = detector.feed(batch(readings))  # the column exists, NaN in these rows
    assert found.value is None
