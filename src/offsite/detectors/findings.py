"""What every detector produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Severity = Literal["red", "orange", "yellow", "blue"]
"""The four-colour warning levels, red most severe."""

Phase = Literal["opened", "updated", "cleared"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's statement about one episode of one rule on one device.

    An episode is identified by (device, rule, episode start): a condition that persists
    yields one `opened`, then `updated` and finally `cleared` for the same key.
    """

    rule: str
    device_id: str
    severity: Severity
    phase: Phase
    episode_start: datetime
    at: datetime
    title: str
    value: float | None = None
    peak: float | None = None
    threshold: float | None = None
    details: dict[str, float | str | None] = field(default_factory=dict)

    @property
    def key(self) -> str:
        start = self.episode_start.astimezone(UTC).isoformat()
        return f"{self.device_id}|{self.rule}|{start}"
