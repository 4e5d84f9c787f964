"""Combustible-gas detection: the two-level %LEL alarm with a confirmation delay.

GB/T 50493-2019 puts the first-level alarm set point at no more than 25 %LEL and the second
at no more than 50 %LEL; the confirmation delay cuts nuisance alarms from brief puffs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from offsite.detectors.findings import Finding
from offsite.detectors.threshold import ThresholdRule, ThresholdState


@dataclass(frozen=True, slots=True)
class GasLevels:
    level1_pct: float = 25.0
    level2_pct: float = 50.0
    confirm_s: float = 15.0
    hysteresis_pct: float = 2.0
    clear_s: float = 30.0

    def rules(self) -> tuple[ThresholdRule, ThresholdRule]:
        confirm = timedelta(seconds=self.confirm_s)
        clear = timedelta(seconds=self.clear_s)
        return (
            ThresholdRule(
                "gas.lel.level1",
                "orange",
                self.level1_pct,
                confirm,
                self.hysteresis_pct,
                clear,
                f"Combustible gas at or above {self.level1_pct:g} %LEL (first level)",
            ),
            ThresholdRule(
                "gas.lel.level2",
                "red",
                self.level2_pct,
                confirm,
                self.hysteresis_pct,
                clear,
                f"Combustible gas at or above {self.level2_pct:g} %LEL (second level)",
            ),
        )


class GasDetector:
    """Both alarm levels for every gas device, one state per device and level."""

    def __init__(self, levels: GasLevels) -> None:
        self._rules = levels.rules()
        self._states: dict[str, tuple[ThresholdState, ...]] = {}

    def known(self, device_id: str) -> bool:
        return device_id in self._states

    def snapshot(self, device_id: str) -> dict[str, Any]:
        """A device's state as plain data, by rule name, for a checkpoint."""
        states = self._states[device_id]
        return {
            rule.rule: state.snapshot() for rule, state in zip(self._rules, states, strict=True)
        }

    def restore(self, device_id: str, data: dict[str, Any]) -> None:
        """Resume a device from a checkpoint (a rule missing from it starts afresh)."""
        self._states[device_id] = tuple(
            ThresholdState.restore(data[rule.rule]) if rule.rule in data else ThresholdState()
            for rule in self._rules
        )

    def feed(self, readings: Iterable[tuple[str, datetime, float]]) -> list[Finding]:
        """Readings as (device_id, ts, lel_pct), in arrival order; findings in event order."""
        out: list[Finding] = []
        for device_id, ts, lel in sorted(readings, key=lambda r: (r[0], r[1])):
            states = self._states.get(device_id)
            if states is None:
                states = self._states[device_id] = tuple(ThresholdState() for _ in self._rules)
            for rule, state in zip(self._rules, states, strict=True):
                finding = state.step(rule, device_id, ts, lel)
                if finding is not None:
                    out.append(finding)
        out.sort(key=lambda f: f.at)
        return out
