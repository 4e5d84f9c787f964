"""A boolean condition held past a confirmation delay and released after a quiet delay, in
event time: the episode shape of every video rule (presence, tamper, global change)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from offsite.detectors.findings import Finding, Phase, Severity


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _when(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(slots=True)
class Episode:
    rule: str
    severity: Severity
    title: str
    confirm: timedelta
    clear: timedelta
    since: datetime | None = None
    """First frame of the current run of true conditions; the episode start once opened."""
    active: bool = False
    quiet_since: datetime | None = None
    peak: float = 0.0
    details: dict[str, float | str | None] = field(default_factory=dict)

    def step(
        self,
        device_id: str,
        ts: datetime,
        condition: bool,
        value: float | None = None,
        details: dict[str, float | str | None] | None = None,
    ) -> Finding | None:
        if condition:
            self.quiet_since = None
            if self.since is None:
                self.since = ts
                self.peak = value or 0.0
            elif value is not None:
                self.peak = max(self.peak, value)
            if details:
                self.details = details
            if self.active or ts - self.since < self.confirm:
                return None
            self.active = True
            return self._finding(device_id, "opened", ts, value)
        if not self.active:
            self.since = None
            return None
        if self.quiet_since is None:
            self.quiet_since = ts
        if ts - self.quiet_since < self.clear:
            return None
        return self.end(device_id, ts, value)

    def end(self, device_id: str, ts: datetime, value: float | None = None) -> Finding | None:
        """Close an open episode now (a pending one is simply dropped)."""
        finding = self._finding(device_id, "cleared", ts, value) if self.active else None
        self.active = False
        self.since = None
        self.quiet_since = None
        return finding

    def _finding(self, device_id: str, phase: Phase, ts: datetime, value: float | None) -> Finding:
        assert self.since is not None
        return Finding(
            rule=self.rule,
            device_id=device_id,
            severity=self.severity,
            phase=phase,
            episode_start=self.since,
            at=ts,
            title=self.title,
            value=value,
            peak=self.peak,
            details=dict(self.details),
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since),
            "active": self.active,
            "quiet_since": _iso(self.quiet_since),
            "peak": self.peak,
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.since = _when(data.get("since"))
        self.active = bool(data.get("active", False)) and self.since is not None
        self.quiet_since = _when(data.get("quiet_since"))
        self.peak = float(data.get("peak") or 0.0)
