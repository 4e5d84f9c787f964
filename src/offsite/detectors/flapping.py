"""Device flapping online/offline, from the retained status messages (last will) of devices.

Judged on the gateway's clock, like silence: status messages carry no event time. Only
changes count; a status redelivered unchanged (retained, reconnect) is not a transition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from offsite.detectors.findings import Finding
from offsite.detectors.rulepack import FlappingRule, RulePack
from offsite.gateway.payloads import DeviceStatus


@dataclass(slots=True)
class _Device:
    status: DeviceStatus | None = None
    last_change: datetime | None = None
    offline_at: deque[datetime] = field(default_factory=deque)
    episode_start: datetime | None = None


class FlappingDetector:
    """`offline_transitions` changes to offline within `window_s` open an episode; no
    status change for `clear_s` clears it (on the next observation or sweep)."""

    def __init__(self, rule: FlappingRule, pack: str = "") -> None:
        """`pack`: name@version the rule comes from, cited in findings."""
        self.rule = rule
        self._details: dict[str, float | str | None] = {"source": rule.source}
        if pack:
            self._details["pack"] = pack
        self._window = timedelta(seconds=rule.window_s)
        self._quiet = timedelta(seconds=rule.clear_s)
        self._devices: dict[str, _Device] = {}

    @classmethod
    def from_packs(cls, packs: Iterable[RulePack]) -> FlappingDetector | None:
        """The first enabled flapping rule of the packs, if any."""
        for pack in packs:
            for rule in pack.rules:
                if isinstance(rule, FlappingRule) and rule.enabled:
                    return cls(rule, f"{pack.name}@{pack.version}")
        return None

    def known(self, device_id: str) -> bool:
        return device_id in self._devices

    def observe(self, device_id: str, status: DeviceStatus, at: datetime) -> list[Finding]:
        """A status message arrived at `at` (gateway time)."""
        entry = self._devices.setdefault(device_id, _Device())
        out = self._clear_if_quiet(device_id, entry, at)
        if status == entry.status:
            return out
        first = entry.status is None
        entry.status = status
        entry.last_change = at
        if status != "offline" or first:
            # a device first heard of as offline has not been seen to drop
            return out
        entry.offline_at.append(at)
        while entry.offline_at and at - entry.offline_at[0] > self._window:
            entry.offline_at.popleft()
        count = len(entry.offline_at)
        if entry.episode_start is None and count >= self.rule.offline_transitions:
            entry.episode_start = entry.offline_at[0]
            out.append(self._finding(device_id, entry.episode_start, "opened", at, count))
        return out

    def sweep(self, now: datetime) -> list[Finding]:
        """Episodes quiet for `clear_s` by now."""
        out: list[Finding] = []
        for device_id, entry in self._devices.items():
            out.extend(self._clear_if_quiet(device_id, entry, now))
        return out

    def _clear_if_quiet(self, device_id: str, entry: _Device, now: datetime) -> list[Finding]:
        start = entry.episode_start
        if start is None or entry.last_change is None or now - entry.last_change < self._quiet:
            return []
        entry.episode_start = None
        entry.offline_at.clear()
        return [self._finding(device_id, start, "cleared", now, 0)]

    def _finding(
        self, device_id: str, start: datetime, phase: str, at: datetime, count: int
    ) -> Finding:
        return Finding(
            rule=self.rule.name,
            device_id=device_id,
            severity=self.rule.severity,
            phase=phase,  # type: ignore[arg-type]
            episode_start=start,
            at=at,
            title=self.rule.title,
            value=float(count),
            threshold=float(self.rule.offline_transitions),
            details=dict(self._details),
        )

    def snapshot(self, device_id: str) -> dict[str, Any]:
        entry = self._devices[device_id]

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "status": entry.status,
            "last_change": iso(entry.last_change),
            "offline_at": [t.isoformat() for t in entry.offline_at],
            "episode_start": iso(entry.episode_start),
        }

    def restore(self, device_id: str, data: dict[str, Any]) -> None:
        def when(value: object) -> datetime | None:
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        status = data.get("status")
        self._devices[device_id] = _Device(
            status if status in ("online", "offline") else None,
            when(data.get("last_change")),
            deque(datetime.fromisoformat(t) for t in data.get("offline_at") or []),
            when(data.get("episode_start")),
        )
