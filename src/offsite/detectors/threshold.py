"""A level held past a confirmation delay, cleared with hysteresis: the alarm shape of
gas detectors (GB/T 50493-2019 two-level alarms) and of many equipment limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from offsite.detectors.findings import Finding, Severity


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    rule: str
    severity: Severity
    threshold: float
    confirm: timedelta
    hysteresis: float
    clear_after: timedelta
    title: str
    update_step: float = 1.0
    """An open episode reports a new peak only when it rises by at least this much."""


class ThresholdState:
    """Per-device state of one ThresholdRule, in event time."""

    __slots__ = ("_above_since", "_active", "_below_since", "_peak", "_reported_peak", "last_ts")

    def __init__(self) -> None:
        self.last_ts: datetime | None = None
        self._above_since: datetime | None = None
        self._active = False
        self._below_since: datetime | None = None
        self._peak = 0.0
        self._reported_peak = 0.0

    @property
    def active(self) -> bool:
        return self._active

    def snapshot(self) -> dict[str, str | float | bool | None]:
        """Plain data for a checkpoint; `restore` takes it back."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "last_ts": iso(self.last_ts),
            "above_since": iso(self._above_since),
            "active": self._active,
            "below_since": iso(self._below_since),
            "peak": self._peak,
            "reported_peak": self._reported_peak,
        }

    @classmethod
    def restore(cls, data: dict[str, str | float | bool | None]) -> ThresholdState:
        def when(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        state = cls()
        state.last_ts = when("last_ts")
        state._above_since = when("above_since")
        state._active = bool(data.get("active", False))
        state._below_since = when("below_since")
        state._peak = float(data.get("peak") or 0.0)
        state._reported_peak = float(data.get("reported_peak") or 0.0)
        return state

    def step(
        self, rule: ThresholdRule, device_id: str, ts: datetime, value: float
    ) -> Finding | None:
        """Feed one reading; a reading not newer than the last one is a replay and ignored."""
        if self.last_ts is not None and ts <= self.last_ts:
            return None
        self.last_ts = ts
        if not self._active:
            if value < rule.threshold:
                self._above_since = None
                return None
            if self._above_since is None:
                self._above_since = ts
                self._peak = value
            else:
                self._peak = max(self._peak, value)
            if ts - self._above_since < rule.confirm:
                return None
            self._active = True
            self._below_since = None
            self._reported_peak = self._peak
            return self._finding(rule, device_id, "opened", ts, value)
        if value >= rule.threshold - rule.hysteresis:
            self._below_since = None
            self._peak = max(self._peak, value)
            if self._peak >= self._reported_peak + rule.update_step:
                self._reported_peak = self._peak
                return self._finding(rule, device_id, "updated", ts, value)
            return None
        if self._below_since is None:
            self._below_since = ts
        if ts - self._below_since < rule.clear_after:
            return None
        finding = self._finding(rule, device_id, "cleared", ts, value)
        self._active = False
        self._above_since = None
        self._below_since = None
        return finding

    def _finding(
        self, rule: ThresholdRule, device_id: str, phase: str, ts: datetime, value: float
    ) -> Finding:
        assert self._above_since is not None
        return Finding(
            rule=rule.rule,
            device_id=device_id,
            severity=rule.severity,
            phase=phase,  # type: ignore[arg-type]
            episode_start=self._above_since,
            at=ts,
            title=rule.title,
            value=value,
            peak=self._peak,
            threshold=rule.threshold,
        )
