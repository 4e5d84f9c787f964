"""Rule packs as files: validation, citations, tiers, overrides; flapping; backtest; the
batch builder and the equipment payloads it takes."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from offsite.detectors.backtest import backtest, opened
from offsite.detectors.batch import batch_from_readings, concat_batches, to_ms
from offsite.detectors.engine import ScalarEngine
from offsite.detectors.flapping import FlappingDetector
from offsite.detectors.rulepack import (
    BUILTIN_PACKS,
    DeviceProfile,
    Override,
    Params,
    builtin_packs,
    find_rule,
    load_overrides,
    load_pack,
    profiles_from_registry,
    resolve,
    retune,
)
from offsite.gateway.equipment_payloads import (
    EQUIPMENT_READINGS,
    BoilerReading,
    CraneReading,
    ElevatorReading,
    PressureVesselReading,
)
from offsite.gateway.payloads import GasReading
from offsite.registry.models import Registry, RiskTier
from offsite.registry.store import demo_registry_path
from tests.scalar import T0, at, batch, series


def params(
    rule: str,
    tier: RiskTier = "A",
    overrides: list[Override] | None = None,
    kind: str | None = None,
) -> Params:
    pack, found = find_rule(builtin_packs(), rule)
    device = DeviceProfile("d", kind or found.applies_to[0], "s", tier, {})
    return resolve(found, pack.tiers, device, overrides or [])


def test_every_builtin_rule_cites_its_source_and_names_are_unique() -> None:
    packs = builtin_packs()
    assert [p.name for p in packs] == list(BUILTIN_PACKS)
    names = [r.name for p in packs for r in p.rules]
    assert len(names) == len(set(names))
    for pack in packs:
        assert pack.version
        for rule in pack.rules:
            assert len(rule.source) > 20, rule.name


def test_pack_files_refuse_unknown_fields(tmp_path: Path) -> None:
    text = Path(str(_pack_path("crane"))).read_text(encoding="utf-8")
    bad = tmp_path / "crane.toml"
    bad.write_text(text.replace('field = "wind_mps"', 'field = "wind_mps"\ntreshold = 3'))
    with pytest.raises(ValidationError, match="treshold"):
        load_pack(bad)


def _pack_path(name: str) -> Path:
    from importlib import resources  # noqa: PLC0415

    return Path(str(resources.files("offsite.detectors.packs").joinpath(f"{name}.toml")))


def test_gas_levels_tighten_by_tier() -> None:
    assert (params("gas.lel.level1").threshold, params("gas.lel.level1").confirm_s) == (25, 15)
    b = params("gas.lel.level1", "B")  # the registry's default tier: as written
    assert (b.threshold, b.confirm_s) == pytest.approx((25.0, 15.0))
    c = params("gas.lel.level1", "C")
    assert (c.threshold, c.confirm_s) == pytest.approx((23.125, 10.5))
    d = params("gas.lel.level1", "D")
    assert (d.threshold, d.confirm_s) == pytest.approx((21.25, 6.0))


def test_factor_rules_tighten_only_their_margin() -> None:
    assert params("elevator.overspeed.tier1", "D").threshold == pytest.approx(1.17)
    assert params("boiler.water.low", "D").threshold == pytest.approx(1.15)  # fires below
    assert params("device.seq_gap", "D").threshold == 1.0  # opted out


def test_overrides_subject_then_device_and_taken_as_written() -> None:
    overrides = [
        Override(rule="gas.lel.level1", device_id="d", threshold=18.0),
        Override(rule="gas.lel.level1", subject_id="s", threshold=20.0, confirm_s=30.0),
        Override(rule="gas.lel.level2", subject_id="other", threshold=1.0),
    ]
    p = params("gas.lel.level1", "D", overrides)
    assert (p.threshold, p.confirm_s) == (18.0, 30.0)  # not tightened by D
    assert params("gas.lel.level2", "A", overrides).threshold == 50.0


def test_an_override_cannot_enable_a_rule_for_another_kind() -> None:
    on = [Override(rule="crane.wind", device_id="d", enabled=True)]
    assert not params("crane.wind", kind="gas_detector", overrides=on).enabled
    off = [Override(rule="crane.wind", device_id="d", enabled=False)]
    assert not params("crane.wind", overrides=off).enabled


def test_override_file_and_its_validation(tmp_path: Path) -> None:
    path = tmp_path / "overrides.toml"
    path.write_text(
        '[[overrides]]\nrule = "gas.lel.level1"\nsubject_id = "rest-qinba-hotpot"\n'
        "threshold = 20.0\n"
    )
    [override] = load_overrides(path)
    assert override.threshold == 20.0
    with pytest.raises(ValidationError):
        Override(rule="x", device_id="a", subject_id="b")


def test_engine_from_the_demo_registry_judges_each_device_by_its_subject_tier() -> None:
    registry = Registry.model_validate(tomllib.loads(demo_registry_path().read_text()))
    engine = ScalarEngine(builtin_packs(), profiles_from_registry(registry))
    # gas-0003 is a tier A subject, gas-0002 tier C: 24 %LEL is an alarm only for C
    rows = series("gas-0003", "lel_pct", [24.0] * 20) + series("gas-0002", "lel_pct", [24.0] * 20)
    found = engine.feed(batch(rows))
    assert [(f.device_id, f.rule) for f in found] == [("gas-0002", "gas.lel.level1")]
    # elev-0001 rated 1.75 m/s in its attributes, tier B: as written, 1.2 x 1.75 = 2.1
    assert engine.feed(batch([("elev-0001", 0.0, {"speed_mps": 2.09})])) == []
    [fast] = engine.feed(batch([("elev-0001", 1000.0, {"speed_mps": 2.11})]))
    assert fast.rule == "elevator.overspeed.tier1"
    assert engine.rules == [
        r.name for p in builtin_packs() for r in p.rules if r.kind != "flapping"
    ]


def test_snapshots_are_json() -> None:
    engine = ScalarEngine(builtin_packs(), [DeviceProfile("d", "gas_detector")])
    engine.feed(batch(series("d", "lel_pct", [30.0, 31.0, 32.0])))
    data = engine.snapshot("d")
    assert json.loads(json.dumps(data)) == data


# flapping


def test_flapping_opens_at_the_third_drop_in_ten_minutes_and_clears_when_quiet() -> None:
    flapping = FlappingDetector.from_packs(builtin_packs())
    assert flapping is not None
    t = T0
    found = []
    for i in range(3):
        found += flapping.observe("d", "online", t + timedelta(minutes=2 * i))
        found += flapping.observe("d", "offline", t + timedelta(minutes=2 * i + 1))
        found += flapping.observe("d", "offline", t + timedelta(minutes=2 * i + 1, seconds=5))
    [opened_] = found
    assert (opened_.phase, opened_.episode_start, opened_.value) == ("opened", at(60), 3.0)
    assert opened_.details["pack"] == "health@2026.11.1"
    assert flapping.sweep(t + timedelta(minutes=5 + 14)) == []
    [cleared] = flapping.sweep(t + timedelta(minutes=5 + 15))
    assert (cleared.phase, cleared.key) == ("cleared", opened_.key)


def test_flapping_spread_over_more_than_the_window_is_not_flapping() -> None:
    flapping = FlappingDetector.from_packs(builtin_packs())
    assert flapping is not None
    found = []
    for i in range(6):
        found += flapping.observe("d", "online", T0 + timedelta(minutes=6 * i))
        found += flapping.observe("d", "offline", T0 + timedelta(minutes=6 * i + 1))
    assert found == []


def test_flapping_resumes_from_a_snapshot() -> None:
    first = FlappingDetector.from_packs(builtin_packs())
    assert first is not None
    for i in range(2):
        first.observe("d", "online", T0 + timedelta(minutes=2 * i))
        first.observe("d", "offline", T0 + timedelta(minutes=2 * i + 1))
    second = FlappingDetector.from_packs(builtin_packs())
    assert second is not None
    second.restore("d", json.loads(json.dumps(first.snapshot("d"))))
    assert second.known("d")
    second.observe("d", "online", T0 + timedelta(minutes=4))
    [found] = second.observe("d", "offline", T0 + timedelta(minutes=5))
    assert found.phase == "opened"


# backtest


def test_backtest_with_a_lower_threshold_finds_the_episodes_it_would_have_opened() -> None:
    devices = [DeviceProfile(d, "gas_detector") for d in ("a", "b")]
    stored = [
        batch(series("a", "lel_pct", [22.0] * 30) + series("b", "lel_pct", [12.0] * 30)),
        batch(series("a", "lel_pct", [1.0] * 40, start=30)),
    ]
    gas = load_pack("gas")
    as_written = backtest([gas], devices, stored, rules=["gas.lel.level1"])
    assert as_written == []
    tried = backtest(
        [retune(gas, "gas.lel.level1", threshold=20.0)], devices, stored, rules=["gas.lel.level1"]
    )
    assert [(f.device_id, f.phase) for f in tried] == [("a", "opened"), ("a", "cleared")]
    per_device = [Override(rule="gas.lel.level1", device_id="b", threshold=10.0)]
    both = opened(backtest([gas], devices, stored, per_device, rules=["gas.lel.level1"]))
    assert [f.device_id for f in both] == ["b"]


def test_retune_validates_like_the_file() -> None:
    with pytest.raises(ValidationError):
        retune(load_pack("gas"), "gas.lel.rising", window_s=-1.0)
    with pytest.raises(KeyError):
        retune(load_pack("gas"), "gas.nothing", threshold=1.0)


# batch builder and equipment payloads


def test_batch_from_payload_models_codes_fields() -> None:
    received = datetime(2026, 11, 25, 8, 0, 5, tzinfo=UTC)
    gas = GasReading.model_validate({"ts": to_ms(T0), "seq": 4, "lel_pct": 3.5, "valve": "closed"})
    lift = ElevatorReading.model_validate(
        {
            "ts": "2026-11-25T08:00:01+00:00",
            "seq": 9,
            "speed_mps": 1.0,
            "moving": True,
            "door": "open",
            "in_door_zone": False,
        }
    )
    built = batch_from_readings([("gas-1", gas), ("elev-1", lift), ("gas-1", gas)], received)
    assert built.device_ids == ("gas-1", "elev-1")
    assert built.device.tolist() == [0, 1, 0]
    assert built.ts_ms.tolist() == [to_ms(T0), to_ms(at(1)), to_ms(T0)]
    assert built.seq.tolist() == [4, 9, 4]
    assert set(built.received_ms.tolist()) == {to_ms(received)}
    f = built.fields
    assert f["valve"].tolist()[0] == 0.0
    assert f["fault"].tolist()[0] == 0.0  # no fault code: no fault
    assert f["door"].tolist()[1] == 1.0
    assert (f["moving"][1], f["in_door_zone"][1], f["alarm_button"][1]) == (1.0, 0.0, 0.0)
    assert str(f["lel_pct"][1]) == "nan"
    assert str(f["mains_power"][1]) == "nan"
    both = concat_batches([built, batch(series("x", "lel_pct", [1.0]))])
    assert both.device_ids == ("gas-1", "elev-1", "x")
    assert len(both) == 4


@pytest.mark.parametrize(
    "payload",
    [
        {"speed_mps": 1.0, "moving": True, "extra": 1},
        {"speed_mps": float("nan"), "moving": True},
        {"speed_mps": 1.0, "moving": "yes"},
        {"speed_mps": 1.0, "moving": True, "door": "ajar"},
    ],
)
def test_elevator_payloads_are_strict(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ElevatorReading.model_validate({"ts": 0, "seq": 0} | payload)


def test_registry_changes_recompile_and_keep_state() -> None:
    engine = ScalarEngine([load_pack("gas")], [DeviceProfile("a", "gas_detector", "s", "A")])
    assert engine.feed(batch(series("a", "lel_pct", [24.0] * 5))) == []
    engine.feed(batch(series("new", "lel_pct", [1.0])))  # unregistered: appended
    engine.set_devices([DeviceProfile("a", "gas_detector", "s", "D")])  # tier raised
    found = engine.feed(batch(series("a", "lel_pct", [24.0] * 8, start=5)))
    # 24 %LEL was below A's 25 and is above D's 21.25 from t = 5; D confirms in 6 s
    assert [(f.rule, f.phase, f.at) for f in found] == [("gas.lel.level1", "opened", at(11))]
    assert engine.known("a")
    assert engine.known("new")


def test_profiles_from_untyped_rows_check_the_tier() -> None:
    profile = DeviceProfile.of("b", "boiler", "s", "C", {"low_water_mm": 80})
    assert (profile.risk_tier, profile.attributes) == ("C", {"low_water_mm": 80})
    with pytest.raises(ValueError, match="risk tier"):
        DeviceProfile.of("b", "boiler", "s", "E", {})


def test_equipment_payloads_through_the_engine() -> None:
    """Decoded payloads, as the gateway will hand them over, to findings."""
    lift = [
        (
            "elev-1",
            ElevatorReading.model_validate(
                {
                    "ts": to_ms(at(i)),
                    "seq": i // 5,
                    "speed_mps": 0.0,
                    "moving": False,
                    "door": "closed",
                    "in_door_zone": False,
                    "floor": 7,
                }
            ),
        )
        for i in range(0, 70, 5)
    ]
    boiler = [
        (
            "boiler-1",
            BoilerReading.model_validate(
                {"ts": to_ms(at(i)), "seq": i, "pressure_mpa": 1.3, "water_level_mm": 120.0}
            ),
        )
        for i in range(0, 12)
    ]
    crane = [
        (
            "crane-1",
            CraneReading.model_validate(
                {"ts": to_ms(at(i)), "seq": i, "load_t": 9.0, "rated_load_t": 8.0, "wind_mps": 3.0}
            ),
        )
        for i in range(2)  # held 1 s
    ]
    devices = [
        DeviceProfile("elev-1", "elevator", "s", "A", {"rated_speed_mps": 1.0, "floors": 18}),
        DeviceProfile("boiler-1", "boiler", "s", "A", {"rated_pressure_mpa": 1.25}),
        DeviceProfile("crane-1", "crane", "s", "A", {}),
    ]
    engine = ScalarEngine(builtin_packs(), devices)
    found = engine.feed(batch_from_readings([*lift, *boiler, *crane], at(70)))
    assert {(f.device_id, f.rule) for f in found if f.phase == "opened"} == {
        ("elev-1", "elevator.stopped_outside_door_zone"),
        ("elev-1", "elevator.trapped"),
        ("boiler-1", "boiler.overpressure"),
        ("crane-1", "crane.overload"),
        ("crane-1", "crane.overload.severe"),
    }


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (BoilerReading, {"pressure_mpa": -0.1}),
        (BoilerReading, {"pressure_mpa": 1.0, "steam": 1}),
        (PressureVesselReading, {"pressure_mpa": float("inf")}),
        (CraneReading, {"load_t": 1.0, "rated_load_t": 0.0}),
        (CraneReading, {"load_t": "1.0"}),
    ],
)
def test_equipment_payloads_refuse_what_they_must(
    model: type[BaseModel], payload: dict[str, object]
) -> None:
    with pytest.raises(ValidationError):
        model.model_validate({"ts": 0, "seq": 0} | payload)


def test_equipment_readings_per_kind() -> None:
    assert set(EQUIPMENT_READINGS) == {"elevator", "boiler", "pressure_vessel", "crane"}
    vessel = PressureVesselReading.model_validate(
        {"ts": "2026-11-25T08:00:00Z", "seq": 1, "pressure_mpa": 0.8}
    )
    assert vessel.ts == T0


def test_overrides_that_would_do_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown rule 'gas\.lel\.levl1'"):
        ScalarEngine(builtin_packs(), overrides=[Override(rule="gas.lel.levl1", device_id="d")])
    with pytest.raises(ValueError, match="no threshold"):
        ScalarEngine(
            builtin_packs(),
            overrides=[Override(rule="elevator.trapped", device_id="d", threshold=2)],
        )
