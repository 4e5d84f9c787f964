"""Device silent: no reading for longer than a number of its expected intervals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from offsite.detectors.findings import Finding


@dataclass(slots=True)
class _Seen:
    interval_s: float
    last_seen: datetime
    silent_since: datetime | None = None


class SilenceDetector:
    """Judged on the gateway's clock: silence is about readings that do not arrive."""

    RULE = "device.silent"

    def __init__(self, intervals_allowed: float) -> None:
        self._factor = intervals_allowed
        self._devices: dict[str, _Seen] = {}

    def observe(self, device_id: str, interval_s: float, seen_at: datetime) -> Finding | None:
        """A reading arrived; ends a silent episode if one was open."""
        entry = self._devices.get(device_id)
        if entry is None:
            self._devices[device_id] = _Seen(interval_s, seen_at)
            return None
        entry.interval_s = interval_s  # the registry may have changed it
        entry.last_seen = max(entry.last_seen, seen_at)
        if entry.silent_since is None:
            return None
        start, entry.silent_since = entry.silent_since, None
        return Finding(
            self.RULE,
            device_id,
            "blue",
            "cleared",
            start,
            seen_at,
            "Device reporting again",
        )

    def sweep(self, now: datetime) -> list[Finding]:
        """Devices that have fallen silent since the last sweep."""
        out: list[Finding] = []
        for device_id, entry in self._devices.items():
            if entry.silent_since is not None:
                continue
            # the sweep, every few seconds, makes the timedelta; a batch makes none
            limit = timedelta(seconds=entry.interval_s) * self._factor
            if now - entry.last_seen > limit:
                entry.silent_since = entry.last_seen
                out.append(
                    Finding(
                        self.RULE,
                        device_id,
                        "blue",
                        "opened",
                        entry.last_seen,
                        now,
                        f"No reading for more than {limit.total_seconds():g} s",
                        value=(now - entry.last_seen).total_seconds(),
                        threshold=limit.total_seconds(),
                    )
                )
        return out
