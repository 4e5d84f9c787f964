"""Replay stored telemetry through rules, with changed thresholds, to see the clues they
would have fired: an authority tries a rule before enabling it. Pure: batches in, findings
out; reading the stored telemetry is the caller's business."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from offsite.detectors.batch import ReadingBatch
from offsite.detectors.engine import ScalarEngine
from offsite.detectors.findings import Finding
from offsite.detectors.rulepack import DeviceProfile, Override, RulePack


def backtest(
    packs: Sequence[RulePack],
    devices: Sequence[DeviceProfile],
    batches: Iterable[ReadingBatch],
    overrides: Sequence[Override] = (),
    rules: Collection[str] | None = None,
) -> list[Finding]:
    """Every finding `rules` (default: all of the packs) would have produced over the
    batches, fed in order to a fresh engine, in event order within each batch."""
    engine = ScalarEngine(packs, devices, overrides, only=rules)
    out: list[Finding] = []
    for batch in batches:
        out.extend(engine.feed(batch))
    return out


def opened(findings: Iterable[Finding]) -> list[Finding]:
    """The clues a backtest would have opened (one per episode)."""
    return [f for f in findings if f.phase == "opened"]
