"""Per-device throttling: a device far above its declared rate is refused, counted and flagged.

Each registered device declares how often it reports (`expected_interval_s`). The gateway
gives it a token bucket refilled at `factor` times that rate (never below a floor, so that
status changes, acknowledgements and resends of a slow device still pass) and holding
`burst` messages, so that a device emptying its buffer after an outage is not refused. A
message that finds the bucket empty is refused before it is decoded, which is where the
cost is: a flooding device then costs the gateway a dictionary lookup per message, and the
other devices' readings and alerts are not kept waiting behind its.

Messages, not readings, are counted: the cost a flood imposes is per message (a packet, a
decode), and one message carries at most `max_readings_per_message` readings.

Pure: times come in as arguments (the message's receive time), nothing is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from offsite.detectors.findings import Finding

RULE = "device.flooding"
RATE_LIMITED = "rate_limited"
"""Reason (prefix) of the quarantined sample of a throttled device's messages."""


class Verdict(IntEnum):
    ADMITTED = 0
    REFUSED = 1
    REFUSED_FIRST = 2
    """Refused, and the first of an episode: keep a sample, raise the flag."""


@dataclass(slots=True)
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    stamp: float
    episode_start: float | None = None
    last_refused: float = 0.0
    refused: int = 0


class FloodGuard:
    """Token buckets of the registered devices; unknown devices are not tracked (their
    messages are quarantined as unknown, and a stream of made-up ids must not grow this)."""

    def __init__(self, factor: float, burst: int, min_rate_per_s: float, quiet_s: float) -> None:
        self.factor = factor
        self.burst = float(burst)
        self.min_rate = min_rate_per_s
        self.quiet_s = quiet_s
        self._buckets: dict[str, _Bucket] = {}
        self._opened: list[Finding] = []

    def allowed_rate(self, expected_interval_s: float) -> float:
        """Messages per second a device of this declared interval may sustain."""
        return max(self.factor / expected_interval_s, self.min_rate)

    def set_devices(self, intervals: dict[str, float]) -> None:
        """The registry's declared intervals; buckets of devices still there keep their state."""
        buckets: dict[str, _Bucket] = {}
        for device_id, interval in intervals.items():
            rate = self.allowed_rate(interval)
            bucket = self._buckets.get(device_id)
            if bucket is None:
                bucket = _Bucket(rate, self.burst, self.burst, 0.0)
            bucket.rate, bucket.capacity = rate, self.burst
            buckets[device_id] = bucket
        self._buckets = buckets

    def admit(self, device_id: str, at: float) -> Verdict:
        """One message of `device_id` received at `at` (epoch seconds)."""
        bucket = self._buckets.get(device_id)
        if bucket is None:
            return Verdict.ADMITTED
        if at > bucket.stamp:
            bucket.tokens = min(bucket.capacity, bucket.tokens + (at - bucket.stamp) * bucket.rate)
            bucket.stamp = at
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict.ADMITTED
        bucket.refused += 1
        bucket.last_refused = max(bucket.last_refused, at)
        if bucket.episode_start is not None:
            return Verdict.REFUSED
        bucket.episode_start = at
        start = datetime.fromtimestamp(at, UTC)
        self._opened.append(
            Finding(
                RULE,
                device_id,
                "yellow",
                "opened",
                start,
                start,
                f"Publishing far above its declared rate: throttled at {bucket.rate:g} msg/s",
                threshold=bucket.rate,
                details={"burst": bucket.capacity},
            )
        )
        return Verdict.REFUSED_FIRST

    def take_opened(self) -> list[Finding]:
        """Episodes opened since the last call (each device flagged once per episode)."""
        opened, self._opened = self._opened, []
        return opened

    def sweep(self, now: float) -> list[Finding]:
        """Episodes that ended: no refusal for `quiet_s`."""
        out: list[Finding] = []
        for device_id, bucket in self._buckets.items():
            start = bucket.episode_start
            if start is None or now - bucket.last_refused < self.quiet_s:
                continue
            out.append(
                Finding(
                    RULE,
                    device_id,
                    "yellow",
                    "cleared",
                    datetime.fromtimestamp(start, UTC),
                    datetime.fromtimestamp(now, UTC),
                    f"Back within its rate; {bucket.refused} messages refused in the episode",
                    value=float(bucket.refused),
                    threshold=bucket.rate,
                )
            )
            bucket.episode_start, bucket.refused = None, 0
        return out

    def flooding(self) -> list[str]:
        return sorted(d for d, b in self._buckets.items() if b.episode_start is not None)
