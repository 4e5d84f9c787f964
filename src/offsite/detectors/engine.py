"""The scalar detector engine: every rule of the rule packs over columnar batches.

Conditions are computed with numpy over the whole batch. The per-reading state machine
(confirmation delay, hysteresis, clear delay: the semantics of `ThresholdState`) runs only
for the devices whose condition holds somewhere in the batch or whose episode is pending or
open, so a batch of normal readings costs a few vector operations per rule.

Event time throughout, at millisecond resolution. A reading not newer than the device's last
accepted one is a replay and ignored by every rule; readings of one batch are judged in
(device, event time) order whatever order they arrived in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from offsite.detectors.batch import ReadingBatch, to_ms
from offsite.detectors.compiled import (
    NO_TS,
    Bools,
    CompiledRule,
    Episode,
    Ints,
    Rows,
    compile_rule,
    grown,
)
from offsite.detectors.findings import Finding
from offsite.detectors.rulepack import DeviceProfile, Override, RulePack, check_overrides

SNAPSHOT_VERSION = 1


class ScalarEngine:
    """Every scalar rule of the given packs, for the given devices.

    `feed` takes batches in commit order and returns findings in event order. Devices not
    given at construction are added when first seen, with only the rules for every device
    ('*': device health)."""

    def __init__(
        self,
        packs: Iterable[RulePack],
        devices: Iterable[DeviceProfile] = (),
        overrides: Sequence[Override] = (),
        only: Collection[str] | None = None,
    ) -> None:
        """`only`: rule names to run (default: every enabled rule of the packs)."""
        packs = list(packs)
        check_overrides(packs, overrides)
        self._overrides = tuple(overrides)
        self._rules: list[CompiledRule] = []
        for pack in packs:
            for rule in pack.rules:
                if only is not None and rule.name not in only:
                    continue
                compiled = compile_rule(rule, pack.tiers, len(self._rules))
                if compiled is not None:
                    compiled.details["pack"] = f"{pack.name}@{pack.version}"
                    self._rules.append(compiled)
        if only is not None:
            missing = set(only) - {c.rule.name for c in self._rules}
            if missing:
                raise KeyError(f"no scalar rule named {sorted(missing)}")
        self._profiles: list[DeviceProfile] = []
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._last_ts: Ints = np.zeros(0, np.int64)
        self._last_seq: Ints = np.zeros(0, np.int64)
        self._known: Bools = np.zeros(0, np.bool_)
        self.set_devices(devices)

    @property
    def rules(self) -> list[str]:
        return [c.rule.name for c in self._rules]

    def set_devices(self, devices: Iterable[DeviceProfile]) -> None:
        """Add devices or change their profiles (registry reloaded); state is kept."""
        start = len(self._profiles)
        for profile in devices:
            at = self._index.get(profile.id)
            if at is None:
                self._index[profile.id] = len(self._profiles)
                self._profiles.append(profile)
            elif self._profiles[at] != profile:
                self._profiles[at] = profile
                start = min(start, at)
        n = len(self._profiles)
        self._ids = [p.id for p in self._profiles]
        self._last_ts = grown(self._last_ts, n, fill=NO_TS)
        self._last_seq = grown(self._last_seq, n, fill=-1)
        self._known = grown(self._known, n, fill=False)
        for compiled in self._rules:
            compiled.compile(self._profiles, self._overrides, start)

    def _indices(self, device_ids: Sequence[str]) -> NDArray[np.int32]:
        index = self._index
        try:
            return np.fromiter((index[d] for d in device_ids), np.int32, len(device_ids))
        except KeyError:
            unknown = [d for d in dict.fromkeys(device_ids) if d not in index]
            self.set_devices(DeviceProfile(d, None) for d in unknown)
            return np.fromiter((index[d] for d in device_ids), np.int32, len(device_ids))

    def known(self, device_id: str) -> bool:
        """Whether this engine has state for the device (fed or restored)."""
        at = self._index.get(device_id)
        return at is not None and bool(self._known[at])

    def feed(self, batch: ReadingBatch) -> list[Finding]:
        if len(batch) == 0:
            return []
        dev = self._indices(batch.device_ids)[batch.device]
        order, dev, ts = _by_device_and_time(dev, batch.ts_ms, batch.seq)
        seq = batch.seq[order]
        # A replay is a reading not after the last one in (time, seq): readings a device
        # takes in the same millisecond still count, each once.
        last_ts = self._last_ts[dev]
        stale = (ts < last_ts) | ((ts == last_ts) & (seq <= self._last_seq[dev]))
        stale[1:] |= (dev[1:] == dev[:-1]) & (ts[1:] == ts[:-1]) & (seq[1:] == seq[:-1])
        if stale.any():
            fresh = np.flatnonzero(~stale)
            order, dev = order[fresh], dev[fresh]
        if len(order) == 0:
            return []
        rows = Rows(batch, dev, order)
        self._last_ts[dev[rows.last]] = rows.ts[rows.last]
        self._last_seq[dev[rows.last]] = rows.seq()[rows.last]
        self._known[dev[rows.last]] = True
        ids = self._ids
        findings: list[tuple[datetime, str, int, Finding]] = []
        for compiled in self._rules:
            for f in compiled.run(rows, ids):
                findings.append((f.at, f.device_id, compiled.order, f))
        findings.sort(key=lambda item: item[:3])
        return [f for *_, f in findings]

    def snapshot(self, device_id: str) -> dict[str, Any]:
        """The device's state as JSON-able plain data, for a checkpoint."""
        at = self._index[device_id]
        last = int(self._last_ts[at])
        rules: dict[str, Any] = {}
        for compiled in self._rules:
            data = compiled.extra_snapshot(at)
            episode = compiled.episodes.get(at)
            if episode is not None:
                data["episode"] = episode.to_data()
            if data:
                rules[compiled.rule.name] = data
        return {
            "version": SNAPSHOT_VERSION,
            "last_ts_ms": None if last == NO_TS else last,
            "last_seq": int(self._last_seq[at]),
            "rules": rules,
        }

    def restore(self, device_id: str, data: dict[str, Any]) -> None:
        """Resume a device from a checkpoint; rules missing from it start afresh. Accepts
        the checkpoints of `GasDetector` (by rule name) as well."""
        if "version" not in data:
            data = _from_threshold_states(data)
        at = int(self._indices([device_id])[0])
        last = data.get("last_ts_ms")
        self._last_ts[at] = NO_TS if last is None else int(last)
        self._last_seq[at] = int(data.get("last_seq", -1))
        self._known[at] = True
        saved: dict[str, Any] = data.get("rules") or {}
        for compiled in self._rules:
            state = saved.get(compiled.rule.name) or {}
            compiled.episodes.pop(at, None)
            compiled.open[at] = False
            if "episode" in state:
                episode = Episode.from_data(state["episode"])
                compiled.episodes[at] = episode
                compiled.open[at] = episode.active or episode.above_since is not None
            compiled.extra_restore(at, state)


def _by_device_and_time(
    dev: NDArray[np.int32], ts: Ints, seq: Ints
) -> tuple[NDArray[np.intp], NDArray[np.int32], Ints]:
    """Stable order by (device, time, seq). Gateways mostly see each device's readings in
    order, so a stable sort by device alone usually suffices and is checked."""
    order = np.argsort(dev, kind="stable")
    d, t, q = dev[order], ts[order], seq[order]
    if len(t) > 1:
        same = d[1:] == d[:-1]
        ordered = (t[1:] > t[:-1]) | ((t[1:] == t[:-1]) & (q[1:] >= q[:-1]))
        if not np.all(ordered | ~same):
            order = np.lexsort((seq, ts, dev))
            d, t = dev[order], ts[order]
    return order, d, t


def _from_threshold_states(data: dict[str, Any]) -> dict[str, Any]:
    """A `GasDetector` checkpoint ({rule: ThresholdState.snapshot()}) in this engine's form."""

    def ms(value: object) -> int | None:
        return to_ms(datetime.fromisoformat(value)) if isinstance(value, str) else None

    last: int | None = None
    rules: dict[str, Any] = {}
    for name, state in data.items():
        if not isinstance(state, dict):
            continue
        seen = ms(state.get("last_ts"))
        if seen is not None:
            last = seen if last is None else max(last, seen)
        rules[name] = {
            "episode": {
                "above_since_ms": ms(state.get("above_since")),
                "active": bool(state.get("active", False)),
                "below_since_ms": ms(state.get("below_since")),
                "peak": state.get("peak") or 0.0,
                "reported_peak": state.get("reported_peak") or 0.0,
            }
        }
    return {"version": SNAPSHOT_VERSION, "last_ts_ms": last, "rules": rules}
