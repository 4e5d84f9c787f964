"""Scalar detector throughput: readings per second per core, for each rule family and each
rule, on a large synthetic batch of mostly normal readings with a few episodes, next to the
per-reading `GasDetector` (ThresholdState) path measured in the same run.

CPU time of this process (`time.process_time`), one thread: figures are per core. Building
the batch is not timed; sorting it, the vector conditions and the state machines are.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from offsite.detectors.batch import ReadingBatch, from_ms
from offsite.detectors.engine import ScalarEngine
from offsite.detectors.gas import GasDetector, GasLevels
from offsite.detectors.rulepack import DeviceProfile, RulePack, load_pack
from offsite.registry.models import RiskTier

TARGET_READINGS_PER_S = 2_000_000
_T0_MS = 1_795_000_000_000  # late 2026
_TIERS: tuple[RiskTier, ...] = ("A", "B", "C", "D")


@dataclass(frozen=True, slots=True)
class _Family:
    packs: tuple[str, ...]
    kind: str
    make: Callable[[np.random.Generator, int, int, float], dict[str, NDArray[np.float64]]]
    interval_s: float
    attributes: dict[str, float | int | str | bool]


def _grid(n_devices: int, per_device: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Reading r of device d, arriving interleaved across devices as a gateway sees them."""
    device = np.tile(np.arange(n_devices, dtype=np.int64), per_device)
    step = np.repeat(np.arange(per_device, dtype=np.int64), n_devices)
    return device, step


def _episodes(rng: np.random.Generator, n_devices: int, share: float) -> NDArray[np.bool_]:
    return rng.random(n_devices) < share


def _gas(
    rng: np.random.Generator, n_devices: int, per_device: int, share: float
) -> dict[str, NDArray[np.float64]]:
    device, step = _grid(n_devices, per_device)
    n = len(device)
    lel = np.abs(rng.normal(0.8, 0.4, n)).round(1)
    leaking = _episodes(rng, n_devices, share)[device]
    # a leak: a ramp to 70 %LEL over the middle of the run, then back down
    middle = per_device // 2
    ramp = np.clip(70.0 - np.abs(step - middle) * 1.5, 0.0, None)
    lel = np.where(leaking, np.maximum(lel, ramp), lel)
    co = np.abs(rng.normal(2.0, 1.0, n)).round(1)
    co[~_episodes(rng, n_devices, 0.3)[device]] = np.nan  # only some detectors report CO
    valve = np.ones(n)
    valve[_episodes(rng, n_devices, share)[device] & (step > middle)] = 0.0
    fault = np.zeros(n)
    fault[_episodes(rng, n_devices, share / 2)[device] & (step % 50 < 10)] = 1.0
    return {"lel_pct": lel, "co_ppm": co, "valve": valve, "fault": fault}


def _elevator(
    rng: np.random.Generator, n_devices: int, per_device: int, share: float
) -> dict[str, NDArray[np.float64]]:
    device, step = _grid(n_devices, per_device)
    n = len(device)
    moving = ((step // 8 + device) % 2).astype(np.float64)
    speed = np.where(moving == 1.0, np.abs(rng.normal(1.6, 0.05, n)), 0.0)
    in_zone = 1.0 - moving
    door = np.where(moving == 1.0, 0.0, (step % 8 < 4).astype(np.float64))
    floor = ((step // 16 + device) % 18 + 1).astype(np.float64)
    trapped = _episodes(rng, n_devices, share)[device] & (step > per_device // 2)
    moving[trapped], speed[trapped], in_zone[trapped], door[trapped] = 0.0, 0.0, 0.0, 0.0
    fast = _episodes(rng, n_devices, share)[device] & (step % 97 < 3)
    speed[fast] = 2.6
    return {
        "speed_mps": speed,
        "rated_speed_mps": np.full(n, np.nan),
        "floor": floor,
        "door": door,
        "moving": moving,
        "in_door_zone": in_zone,
        "alarm_button": np.zeros(n),
        "load_kg": rng.uniform(0, 800, n).round(),
        "mains_power": np.ones(n),
    }


def _boiler(
    rng: np.random.Generator, n_devices: int, per_device: int, share: float
) -> dict[str, NDArray[np.float64]]:
    device, step = _grid(n_devices, per_device)
    n = len(device)
    pressure = rng.normal(1.0, 0.03, n)
    temp = rng.normal(170.0, 3.0, n)
    water = rng.normal(150.0, 5.0, n)
    dry = _episodes(rng, n_devices, share)[device] & (step > per_device // 2)
    water[dry] = 30.0
    hot = _episodes(rng, n_devices, share)[device] & (step % 200 < 40)
    pressure[hot] = 1.4
    return {"pressure_mpa": pressure, "temp_c": temp, "water_level_mm": water}


def _crane(
    rng: np.random.Generator, n_devices: int, per_device: int, share: float
) -> dict[str, NDArray[np.float64]]:
    device, step = _grid(n_devices, per_device)
    n = len(device)
    load = rng.uniform(0.0, 7.5, n)
    heavy = _episodes(rng, n_devices, share)[device] & (step % 120 < 10)
    load[heavy] = 9.0
    wind = np.abs(rng.normal(6.0, 2.0, n))
    return {"load_t": load, "rated_load_t": np.full(n, 8.0), "wind_mps": wind}


_FAMILIES: dict[str, _Family] = {
    "gas": _Family(("gas",), "gas_detector", _gas, 10.0, {}),
    "elevator": _Family(
        ("elevator",), "elevator", _elevator, 1.0, {"rated_speed_mps": 1.75, "floors": 18}
    ),
    "boiler": _Family(
        ("boiler",),
        "boiler",
        _boiler,
        5.0,
        {"rated_pressure_mpa": 1.25, "max_temp_c": 194.0, "low_water_mm": 80.0},
    ),
    "crane": _Family(("crane",), "crane", _crane, 1.0, {"rated_load_t": 8.0}),
    "health": _Family(("health",), "gas_detector", _gas, 10.0, {}),
}


def _batch(
    family: _Family, readings: int, n_devices: int, share: float, seed: int
) -> tuple[ReadingBatch, list[DeviceProfile]]:
    rng = np.random.default_rng(seed)
    per_device = max(1, readings // n_devices)
    fields = family.make(rng, n_devices, per_device, share)
    device, step = _grid(n_devices, per_device)
    interval = round(family.interval_s * 1000)
    ts = _T0_MS + step * interval + device * 7 % interval
    seq = step.copy()
    # a few devices lose readings upstream, and a few run a fast clock
    lossy = _episodes(rng, n_devices, share)[device]
    seq[lossy] += step[lossy] // 100
    lag = rng.integers(20, 400, len(device))
    ahead = _episodes(rng, n_devices, share)[device]
    received = ts + np.where(ahead, -120_000, lag)
    ids = tuple(f"{family.kind}-{i:06d}" for i in range(n_devices))
    profiles = [
        DeviceProfile(ids[i], family.kind, f"subject-{i}", _TIERS[i % 4], family.attributes)
        for i in range(n_devices)
    ]
    batch = ReadingBatch(ids, device.astype(np.int32), ts, seq, received, fields)
    return batch, profiles


def _timed_feed(
    packs: list[RulePack],
    profiles: list[DeviceProfile],
    batch: ReadingBatch,
    only: list[str] | None = None,
    repeats: int = 3,
) -> tuple[float, int]:
    """Median CPU time of `repeats` fresh engines over the batch, after one untimed run:
    the first touch of a few hundred MB of fresh memory is the allocator's cost, not the
    detectors' (a running gateway reuses its arenas)."""
    times: list[float] = []
    found = 0
    for run in range(repeats + 1):
        engine = ScalarEngine(packs, profiles, only=only)
        started = time.process_time()
        found = len(engine.feed(batch))
        if run:
            times.append(time.process_time() - started)
    return statistics.median(times), found


def _rate(readings: int, seconds: float) -> float:
    # a tiny batch can take less than the clock's resolution; JSON has no infinity
    return float(round(readings / max(seconds, 1e-6)))


def _baseline(batch: ReadingBatch, readings: int) -> tuple[dict[str, object], float]:
    """The per-reading path that exists: GasDetector's ThresholdState over the same data,
    every reading of the first devices (so their leaks are in it), up to `readings`."""
    per_device = max(1, len(batch) // max(1, len(batch.device_ids)))
    mine = np.flatnonzero(batch.device < max(1, readings // per_device))
    n = len(mine)
    ids = batch.device_ids
    dev = batch.device[mine].tolist()
    ts = batch.ts_ms[mine].tolist()
    lel = batch.fields["lel_pct"][mine].tolist()
    rows = [(ids[d], from_ms(t), v) for d, t, v in zip(dev, ts, lel, strict=True)]
    detector = GasDetector(GasLevels())
    started = time.process_time()
    findings = detector.feed(rows)
    seconds = time.process_time() - started
    rate = _rate(n, seconds)
    return {
        "detector": "GasDetector: ThresholdState per reading, gas.lel.level1 and level2",
        "readings": n,
        "cpu_s": round(seconds, 4),
        "readings_per_s": rate,
        "findings": len(findings),
    }, rate


def run_scalar_bench(
    readings: int = 2_000_000,
    devices: int = 20_000,
    episode_share: float = 0.002,
    baseline_readings: int = 200_000,
    per_rule: bool = True,
    seed: int = 7,
) -> dict[str, object]:
    """Readings/s per core for every scalar rule family (and rule) over one batch each."""
    families: dict[str, object] = {}
    baseline: dict[str, object] = {}
    levels_rate = 0.0
    base_rate = 0.0
    family_rates: list[float] = []
    for index, (name, family) in enumerate(_FAMILIES.items()):
        batch, profiles = _batch(family, readings, devices, episode_share, seed + index)
        packs = [load_pack(p) for p in family.packs]
        seconds, found = _timed_feed(packs, profiles, batch)
        entry: dict[str, object] = {
            "readings": len(batch),
            "devices": devices,
            "cpu_s": round(seconds, 4),
            "readings_per_s": _rate(len(batch), seconds),
            "findings": found,
        }
        if per_rule:
            rules: dict[str, object] = {}
            for pack in packs:
                for rule in pack.rules:
                    if rule.kind == "flapping":
                        continue
                    rule_s, _ = _timed_feed(packs, profiles, batch, [rule.name], 1)
                    rules[rule.name] = _rate(len(batch), rule_s)
            entry["rules_readings_per_s"] = rules
        families[name] = entry
        family_rates.append(_rate(len(batch), seconds))
        if name == "gas":
            levels = ["gas.lel.level1", "gas.lel.level2"]
            levels_s, _ = _timed_feed(packs, profiles, batch, only=levels)
            levels_rate = _rate(len(batch), levels_s)
            baseline, base_rate = _baseline(batch, baseline_readings)
    slowest = min(family_rates)
    return {
        "clock": "time.process_time, one process, one thread (per core)",
        "target_readings_per_s": TARGET_READINGS_PER_S,
        "families": families,
        "baseline": baseline,
        "gas_levels": {
            "rules": ["gas.lel.level1", "gas.lel.level2"],
            "engine_readings_per_s": levels_rate,
            "baseline_readings_per_s": base_rate,
            "speedup": round(levels_rate / base_rate, 1) if base_rate else None,
        },
        "slowest_family_readings_per_s": slowest,
        "meets_target": slowest >= TARGET_READINGS_PER_S,
    }


if __name__ == "__main__":
    # until `offsite bench detectors` calls it: python -m offsite.bench.detectors_scalar
    import json
    import sys

    readings = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    devices = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    print(json.dumps(run_scalar_bench(readings, devices), indent=2))
