"""The rule kinds of the scalar engine, compiled: parameters resolved per device into
arrays, a vector `scores` over a batch, and the per-reading state machine for the few devices
that need it. `ScalarEngine` (engine.py) owns the device table and feeds them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from offsite.detectors.batch import ReadingBatch, from_ms
from offsite.detectors.findings import Finding, Phase
from offsite.detectors.rulepack import (
    Clause,
    ConditionRule,
    DeviceProfile,
    FlappingRule,
    LevelRule,
    Override,
    Params,
    RateRule,
    Rule,
    SeqGapRule,
    StuckRule,
    TierPolicy,
    resolve,
)

NO_TS = np.iinfo(np.int64).min
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]
_DEV_SHIFT = 42  # composite (device, time) keys: 2**42 ms is 139 years of event time


class Rows:
    """The accepted readings of one batch, sorted by (engine device index, event time)."""

    def __init__(
        self, batch: ReadingBatch, dev: NDArray[np.int32], order: NDArray[np.intp]
    ) -> None:
        self.batch = batch
        self.order = order
        self.dev = dev
        self.ts: Ints = batch.ts_ms[order]
        n = len(order)
        self.first: Bools = np.ones(n, np.bool_)
        self.first[1:] = dev[1:] != dev[:-1]
        self.last: Bools = np.ones(n, np.bool_)
        self.last[:-1] = self.first[1:]
        self._columns: dict[str, Floats | None] = {}
        self._absent: dict[str, Bools] = {}

    def __len__(self) -> int:
        return len(self.order)

    def column(self, name: str) -> Floats | None:
        """The field in row order, or None when no reading of the batch carries it."""
        if name not in self._columns:
            if name == "clock_skew_s":
                received = self.batch.received_ms[self.order]
                self._columns[name] = (self.ts - received).astype(np.float64) / 1000.0
            else:
                raw = self.batch.fields.get(name)
                self._columns[name] = None if raw is None else raw[self.order]
        return self._columns[name]

    def absent(self, name: str) -> Bools:
        """Rows without the field (the field's column must exist); shared by the rules."""
        key = f"absent:{name}"
        got = self._absent.get(key)
        if got is None:
            column = self.column(name)
            assert column is not None
            got = self._absent[key] = np.isnan(column)
        return got

    def seq(self) -> Ints:
        return self.batch.seq[self.order]


class Episode:
    """One rule's state for one device, in score space (see `CompiledRule.scores`)."""

    __slots__ = ("above_since", "active", "below_since", "peak", "reported_peak")

    def __init__(self) -> None:
        self.above_since: int | None = None
        self.active = False
        self.below_since: int | None = None
        self.peak = 0.0
        self.reported_peak = 0.0

    def step(
        self,
        t: int,
        s: float,
        threshold: float,
        confirm: int,
        hysteresis: float,
        clear: int,
        update_step: float,
    ) -> Phase | None:
        """`ThresholdState.step` in milliseconds, replays already removed by the engine.
        The caller ends the episode after a `cleared`, once the finding is made."""
        if not self.active:
            if s < threshold:
                self.above_since = None
                return None
            if self.above_since is None:
                self.above_since = t
                self.peak = s
            else:
                self.peak = max(self.peak, s)
            if t - self.above_since < confirm:
                return None
            self.active = True
            self.below_since = None
            self.reported_peak = self.peak
            return "opened"
        if s >= threshold - hysteresis:
            self.below_since = None
            self.peak = max(self.peak, s)
            if self.peak < self.reported_peak + update_step:
                return None
            self.reported_peak = self.peak
            return "updated"
        if self.below_since is None:
            self.below_since = t
        if t - self.below_since < clear:
            return None
        return "cleared"

    def to_data(self) -> dict[str, Any]:
        return {
            "above_since_ms": self.above_since,
            "active": self.active,
            "below_since_ms": self.below_since,
            "peak": self.peak,
            "reported_peak": self.reported_peak,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Episode:
        ep = cls()
        ep.above_since = _opt_int(data.get("above_since_ms"))
        ep.active = bool(data.get("active", False))
        ep.below_since = _opt_int(data.get("below_since_ms"))
        ep.peak = float(data.get("peak") or 0.0)
        ep.reported_peak = float(data.get("reported_peak") or 0.0)
        return ep


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


class CompiledRule:
    """A rule with its parameters resolved per device and its per-device state.

    Subclasses give `scores`: per row, a number compared with a per-row threshold as
    `score >= threshold` (NaN: the reading does not count for this rule). Rules that fire
    below their threshold negate both (`sign` = -1), so one state machine serves all."""

    sign = 1.0
    reports_level = True
    """Findings carry value, peak and threshold (levels); conditions carry only a value."""

    def __init__(self, rule: Rule, policy: TierPolicy, order: int) -> None:
        self.rule = rule
        self.policy = policy
        self.order = order
        self.details: dict[str, float | str | None] = {"source": rule.source}
        self.episodes: dict[int, Episode] = {}
        self.open: Bools = np.zeros(0, np.bool_)
        self.enabled: Bools = np.zeros(0, np.bool_)
        self.thr: Floats = np.zeros(0)
        self.confirm_ms: Ints = np.zeros(0, np.int64)
        self.clear_ms: Ints = np.zeros(0, np.int64)
        self.hyst: Floats = np.zeros(0)

    def compile(
        self, profiles: Sequence[DeviceProfile], overrides: Sequence[Override], start: int
    ) -> None:
        """Resolve the parameters of `profiles[start:]` (earlier ones are unchanged)."""
        mine = [o for o in overrides if o.rule == self.rule.name]
        subjects = {o.subject_id for o in mine}
        devices = {o.device_id for o in mine}
        # devices alike in kind, tier and (absent) overrides share their parameters, so a
        # registry of many thousand devices resolves in a few hundred calls
        cache: dict[tuple[object, ...], Params] = {}
        params: list[Params] = []
        for p in profiles[start:]:
            key = (
                p.kind,
                p.risk_tier,
                p.subject_id if p.subject_id in subjects else None,
                p.id if p.id in devices else None,
            )
            got = cache.get(key)
            if got is None:
                got = cache[key] = resolve(self.rule, self.policy, p, mine)
            params.append(got)
        n = len(params)

        def extend(old: NDArray[Any], new: NDArray[Any]) -> NDArray[Any]:
            return np.concatenate([old[:start], new])

        self.enabled = extend(self.enabled, np.fromiter((p.enabled for p in params), np.bool_, n))
        self.thr = extend(self.thr, np.fromiter((p.threshold for p in params), np.float64, n))
        self.confirm_ms = extend(
            self.confirm_ms, np.fromiter((round(p.confirm_s * 1000) for p in params), np.int64, n)
        )
        self.clear_ms = extend(
            self.clear_ms, np.fromiter((round(p.clear_s * 1000) for p in params), np.int64, n)
        )
        self.hyst = extend(self.hyst, np.fromiter((p.hysteresis for p in params), np.float64, n))
        self.open = grown(self.open, len(profiles), fill=False)
        self._compile_extra(profiles, start)

    def _compile_extra(self, profiles: Sequence[DeviceProfile], start: int) -> None:
        """Per-device arrays a rule kind needs beyond the common ones; `self.thr` holds the
        resolved thresholds of every device when this is called."""

    def scores(self, rows: Rows) -> tuple[Floats, Floats, Floats | None] | None:
        """(score, threshold, reported value) per row, or None when nothing is judged."""
        raise NotImplementedError

    # state for checkpoints beyond the episode: flat-line runs, rate windows, sequences

    def extra_snapshot(self, device: int) -> dict[str, Any]:
        return {}

    def extra_restore(self, device: int, data: dict[str, Any]) -> None:
        return None

    def run(self, rows: Rows, ids: Sequence[str]) -> list[Finding]:
        got = self.scores(rows)
        if got is None:
            return []
        score, thr_row, report = got
        dev = rows.dev
        hit = score >= thr_row  # NaN compares False, without a warning
        # an open device always has its episode: without episodes, none is open
        any_open = bool(self.episodes) and bool(self.open.any())
        if not any_open and not hit.any():
            return []
        hot = self.open.copy()
        hot[dev[hit]] = True
        selected = np.flatnonzero(hot[dev] & ~np.isnan(score))
        if selected.size == 0:
            return []
        return self._machine(rows, ids, selected, score, thr_row, report)

    def _machine(
        self,
        rows: Rows,
        ids: Sequence[str],
        selected: NDArray[np.intp],
        score: Floats,
        thr_row: Floats,
        report: Floats | None,
    ) -> list[Finding]:
        """The per-reading path, for the few devices that need it; `ThresholdState.step`
        in milliseconds."""
        sel_dev = rows.dev[selected]
        d_l: list[int] = sel_dev.tolist()
        t_l: list[int] = rows.ts[selected].tolist()
        s_l: list[float] = score[selected].tolist()
        th_l: list[float] = thr_row[selected].tolist()
        r_l: list[float] | None = None if report is None else report[selected].tolist()
        conf_l: list[int] = self.confirm_ms[sel_dev].tolist()
        clear_l: list[int] = self.clear_ms[sel_dev].tolist()
        hyst_l: list[float] = self.hyst[sel_dev].tolist()
        step = getattr(self.rule, "update_step", 1.0)
        episodes = self.episodes
        out: list[Finding] = []
        for j, d in enumerate(d_l):
            ep = episodes.get(d)
            if ep is None:
                ep = episodes[d] = Episode()
            t = t_l[j]
            phase = ep.step(t, s_l[j], th_l[j], conf_l[j], hyst_l[j], clear_l[j], step)
            if phase is None:
                continue
            value = None if r_l is None or r_l[j] != r_l[j] else r_l[j]  # NaN: not reported
            out.append(self._finding(ids[d], ep, phase, t, th_l[j], value))
            if phase == "cleared":
                ep.active = False
                ep.above_since = None
                ep.below_since = None
        for d in set(d_l):
            ep = episodes[d]
            if ep.active or ep.above_since is not None:
                self.open[d] = True
            else:
                self.open[d] = False
                del episodes[d]
        return out

    def _finding(
        self, device_id: str, ep: Episode, phase: Phase, t: int, thr: float, value: float | None
    ) -> Finding:
        assert ep.above_since is not None
        level = self.reports_level
        return Finding(
            rule=self.rule.name,
            device_id=device_id,
            severity=self.rule.severity,
            phase=phase,
            episode_start=from_ms(ep.above_since),
            at=from_ms(t),
            title=self.rule.title,
            value=value,
            peak=self.sign * ep.peak if level else None,
            threshold=self.sign * thr if level else None,
            details=dict(self.details),
        )


def grown(array: NDArray[Any], n: int, fill: object) -> NDArray[Any]:
    if len(array) >= n:
        return array[:n]
    out = np.empty(n, array.dtype)
    out[: len(array)] = array
    out[len(array) :] = fill
    return out


def _attribute(profile: DeviceProfile, name: str | None) -> float:
    if name is None:
        return float("nan")
    value = profile.attributes.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


class _Level(CompiledRule):
    rule: LevelRule

    def __init__(self, rule: LevelRule, policy: TierPolicy, order: int) -> None:
        super().__init__(rule, policy, order)
        self.sign = 1.0 if rule.direction == "above" else -1.0
        self.factor: Floats = np.zeros(0)
        self.rated: Floats = np.zeros(0)
        self.level: Floats = np.zeros(0)

    def _compile_extra(self, profiles: Sequence[DeviceProfile], start: int) -> None:
        rule = self.rule
        self.factor = self.thr.copy()
        if rule.threshold_field is None and rule.threshold_attribute is None:
            self.level = self.factor.copy()
        else:
            rated = [_attribute(p, rule.threshold_attribute) for p in profiles[start:]]
            self.rated = np.concatenate([self.rated[:start], np.array(rated, np.float64)])
            self.level = self.factor * self.rated
        # disabled devices never reach a threshold
        self.level[~self.enabled] = np.nan

    def scores(self, rows: Rows) -> tuple[Floats, Floats, Floats | None] | None:
        value = rows.column(self.rule.field)
        if value is None:
            return None
        thr = self.level[rows.dev]
        if self.rule.threshold_field is not None:
            rated = rows.column(self.rule.threshold_field)
            if rated is not None and not rows.absent(self.rule.threshold_field).all():
                from_reading = self.factor[rows.dev] * rated
                from_reading[~self.enabled[rows.dev]] = np.nan
                thr = np.where(np.isnan(rated), thr, from_reading)
        score = np.where(np.isnan(thr), np.nan, value)
        if self.sign < 0:
            return -score, -thr, value
        return score, thr, value


class _Condition(CompiledRule):
    rule: ConditionRule
    reports_level = False

    def __init__(self, rule: ConditionRule, policy: TierPolicy, order: int) -> None:
        super().__init__(rule, policy, order)
        self.rhs: dict[int, Floats] = {}

    def _compile_extra(self, profiles: Sequence[DeviceProfile], start: int) -> None:
        clauses = (*self.rule.all, *self.rule.any)
        for i, clause in enumerate(clauses):
            if clause.value is not None:
                self.rhs[i] = np.full(len(profiles), clause.value)
            else:
                new = np.array([_rhs(clause, p) for p in profiles[start:]], np.float64)
                self.rhs[i] = np.concatenate([self.rhs.get(i, np.zeros(0))[:start], new])
        self.thr = np.where(self.enabled, 0.5, np.nan)

    def scores(self, rows: Rows) -> tuple[Floats, Floats, Floats | None] | None:
        rule = self.rule
        clauses = (*rule.all, *rule.any)
        columns = [rows.column(c.field) for c in clauses]
        present = [c for c in columns if c is not None]
        if len(present) < len(columns):
            return None
        names = list(dict.fromkeys(c.field for c in clauses))
        absent = rows.absent(names[0]).copy()
        for name in names[1:]:
            absent |= rows.absent(name)
        holds = np.ones(len(rows), np.bool_)
        anyof = np.zeros(len(rows), np.bool_) if rule.any else None
        with np.errstate(invalid="ignore"):
            for i, (clause, col) in enumerate(zip(clauses, present, strict=True)):
                # a constant needs no per-device gather
                rhs = clause.value if clause.value is not None else self.rhs[i][rows.dev]
                result = _compare(col, clause, rhs)
                if i < len(rule.all):
                    holds &= result
                elif anyof is not None:
                    anyof |= result
        if anyof is not None:
            holds &= anyof
        score = holds.astype(np.float64)
        score[absent] = np.nan
        thr = self.thr[rows.dev]
        report = rows.column(rule.report_field) if rule.report_field else None
        return score, thr, report


def _rhs(clause: Clause, profile: DeviceProfile) -> float:
    value = _attribute(profile, clause.attribute)
    if np.isnan(value):
        return float("nan") if clause.default is None else clause.default
    return clause.factor * value


_OPS: dict[str, np.ufunc] = {
    ">=": np.greater_equal,
    ">": np.greater,
    "<=": np.less_equal,
    "<": np.less,
    "==": np.equal,
    "!=": np.not_equal,
}


def _compare(col: Floats, clause: Clause, rhs: Floats | float) -> Bools:
    return np.asarray(_OPS[clause.op](col, rhs), np.bool_)


class _Windows:
    """Each device's carried readings (time, value), kept as one run of a shared buffer.

    A batch reads and replaces the runs of its own devices only: a replaced run is left
    where it was, the new one appended, and the buffer compacted when it fills up (the
    runs still in use copied to its start), so a batch costs what its devices carry, not
    what every device carries."""

    def __init__(self) -> None:
        self.ts: Ints = np.empty(0, np.int64)
        self.v: Floats = np.empty(0)
        self.used = 0
        """Buffer slots written, live or not."""
        self.live = 0
        """Slots in the devices' current runs."""
        self.start: Ints = np.zeros(0, np.int64)
        self.count: Ints = np.zeros(0, np.int64)

    def resize(self, devices: int) -> None:
        self.start = grown(self.start, devices, fill=0)
        self.count = grown(self.count, devices, fill=0)

    def take(self, devices: Ints) -> tuple[Ints, Ints, Floats]:
        """The carried readings of `devices` (ascending, distinct): device, time and value
        of each, grouped by device in that order, in time order within."""
        counts = self.count[devices]
        n = int(counts.sum())
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
        at = _runs(self.start[devices], counts, n)
        return np.repeat(devices, counts), self.ts[at], self.v[at]

    def put(self, devices: Ints, dev: Ints, ts: Ints, v: Floats) -> None:
        """Replace the runs of `devices` with the readings given (grouped by device, in
        time order within; a device of `devices` without any has none left)."""
        self.live -= int(self.count[devices].sum())
        self.count[devices] = 0
        m = len(dev)
        if m == 0:
            return
        if self.used + m > len(self.ts):
            self._compact(m)
        end = self.used + m
        self.ts[self.used : end] = ts
        self.v[self.used : end] = v
        first = np.flatnonzero(_starts(dev))
        owners = dev[first]
        self.start[owners] = self.used + first
        self.count[owners] = np.diff(first, append=m)
        self.used = end
        self.live += m

    def of(self, device: int) -> tuple[list[int], list[float]]:
        begin = int(self.start[device])
        end = begin + int(self.count[device])
        return self.ts[begin:end].tolist(), self.v[begin:end].tolist()

    def _compact(self, room: int) -> None:
        """Copy the live runs to the start of a buffer with `room` slots free after them,
        at least half of it free (a buffer grown or compacted is not compacted again until
        as much again has been written)."""
        owners = np.flatnonzero(self.count)
        counts = self.count[owners]
        at = _runs(self.start[owners], counts, self.live)
        size = max(1024, 2 * (self.live + room))
        ts, v = np.empty(size, np.int64), np.empty(size)
        ts[: self.live] = self.ts[at]
        v[: self.live] = self.v[at]
        self.ts, self.v = ts, v
        self.start[owners] = np.cumsum(counts) - counts
        self.used = self.live


def _starts(values: NDArray[Any]) -> NDArray[np.bool_]:
    """Where each run of equal values begins."""
    out = np.ones(len(values), np.bool_)
    np.not_equal(values[1:], values[:-1], out=out[1:])
    return out


def _runs(starts: Ints, counts: Ints, total: int) -> NDArray[np.intp]:
    """Buffer positions of the runs (start, count), one after the other."""
    offsets = np.cumsum(counts) - counts
    at: NDArray[np.intp] = np.arange(total) + np.repeat(starts - offsets, counts)
    return at


class _Rate(CompiledRule):
    """Rising rate over a sliding event-time window. The readings of the last window are
    carried from batch to batch (and in checkpoints) so a rise spanning batches counts."""

    rule: RateRule

    def __init__(self, rule: RateRule, policy: TierPolicy, order: int) -> None:
        super().__init__(rule, policy, order)
        self.windows = _Windows()

    def _compile_extra(self, profiles: Sequence[DeviceProfile], start: int) -> None:
        self.thr = np.where(self.enabled, self.thr, np.nan)
        self.windows.resize(len(profiles))

    def scores(self, rows: Rows) -> tuple[Floats, Floats, Floats | None] | None:
        value = rows.column(self.rule.field)
        if value is None:
            return None
        picked = np.flatnonzero(~np.isnan(value) & self.enabled[rows.dev])
        if picked.size == 0:
            return None
        # only the carried windows of devices in this batch take part; the others wait
        new_dev = rows.dev[picked].astype(np.int64)  # rows come sorted by device
        devices = new_dev[_starts(new_dev)]
        tail_dev, tail_ts, tail_v = self.windows.take(devices)
        n_tail = len(tail_dev)
        cd = np.concatenate([tail_dev, new_dev])
        ct = np.concatenate([tail_ts, rows.ts[picked]])
        cv = np.concatenate([tail_v, value[picked]])
        # carried readings of a device precede its new ones (all newer): a stable sort by
        # device keeps that order, and merges two sorted runs in linear time
        o = np.argsort(cd, kind="stable")
        cd, ct, cv = cd[o], ct[o], cv[o]
        m = len(cd)
        first = np.ones(m, np.bool_)
        first[1:] = cd[1:] != cd[:-1]
        starts = np.flatnonzero(first)
        group = np.cumsum(first) - 1
        window = round(self.rule.window_s * 1000)
        min_span = round(self.rule.min_span_s * 1000)
        score = np.full(len(rows), np.nan)
        # A reading can only reach the rate (or stay within the hysteresis of an open
        # episode) if it stands that far above its device's lowest value in reach. Most
        # readings do not, and skip the window search; they are judged below the rate.
        floor = np.minimum.reduceat(cv, starts)
        lowest = np.maximum(self.thr - self.hyst, 0.0)[cd[starts]]
        candidate = cv >= (floor + lowest * min_span / 60_000.0)[group]
        q = np.flatnonzero(candidate)
        if q.size:
            key = (cd << _DEV_SHIFT) + (ct - ct.min())
            start = np.maximum(np.searchsorted(key, key[q] - window), starts[group[q]])
            span = ct[q] - ct[start]
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = (cv[q] - cv[start]) * 60_000.0 / span
            rate[span < min_span] = np.nan
            new = o[q] >= n_tail
            score[picked[o[q][new] - n_tail]] = rate[new]
        unjudged = ~candidate & (o >= n_tail)
        # below the rate, not absent: an open episode must see these readings to clear
        score[picked[o[unjudged] - n_tail]] = 0.0
        last = np.ones(m, np.bool_)
        last[:-1] = first[1:]
        keep = np.flatnonzero(ct >= ct[last][group] - window)
        keep = keep[_thinned(cd[keep], ct[keep], cv[keep])]
        # each device's rows stay together and in time order, which is all `scores` needs
        self.windows.put(devices, cd[keep], ct[keep], cv[keep])
        return score, self.thr[rows.dev], score

    def extra_snapshot(self, device: int) -> dict[str, Any]:
        ts, v = self.windows.of(device)
        return {"window": [[t, x] for t, x in zip(ts, v, strict=True)]}

    def extra_restore(self, device: int, data: dict[str, Any]) -> None:
        points = data.get("window") or []
        self.windows.put(
            np.array([device], np.int64),
            np.full(len(points), device, np.int64),
            np.array([int(p[0]) for p in points], np.int64),
            np.array([float(p[1]) for p in points], np.float64),
        )


def _thinned(dev: Ints, ts: Ints, v: Floats, bucket_ms: int = 1000) -> NDArray[np.intp]:
    """The rows a carried rate window keeps: the lowest reading of each device and second,
    and each device's newest. A rise is measured from the lowest start in reach, so these
    give the same rates to within a second of start time, while a device reporting 80 times
    a second carries 60 points for a 60 s window instead of 4,800 (memory, the per-batch
    merge and the checkpoint all scale with it). Rows come sorted by device, then time."""
    n = len(dev)
    if n < 2:
        return np.arange(n)
    sec = ts // bucket_ms
    starts = np.ones(n, np.bool_)
    starts[1:] = (dev[1:] != dev[:-1]) | (sec[1:] != sec[:-1])
    if starts.all():
        return np.arange(n)
    first = np.flatnonzero(starts)
    gid = np.cumsum(starts) - 1
    # the first row of each group that holds its lowest value (linear: no sort)
    at_low = np.flatnonzero(v == np.minimum.reduceat(v, first)[gid])
    keep = np.zeros(n, np.bool_)
    keep[at_low[_starts(gid[at_low])]] = True
    newest = np.ones(n, np.bool_)
    newest[:-1] = dev[1:] != dev[:-1]
    keep |= newest  # each device's newest
    return np.flatnonzero(keep)


class _Stuck(CompiledRule):
    """Flat line: run lengths of identical values, carried across batches per device."""

    rule: StuckRule
    reports_level = False

    def __init__(self, rule: StuckRule, policy: TierPolicy, order: int) -> None:
        super().__init__(rule, policy, order)
        self.run_value: Floats = np.zeros(0)
        self.run_start: Ints = np.zeros(0, np.int64)
        self.run_count: Ints = np.zeros(0, np.int64)

    def _compile_extra(self, profiles: Sequence[DeviceProfile], start: int) -> None:
        n = len(profiles)
        self.thr = np.where(self.enabled, 0.5, np.nan)
        self.run_value = grown(self.run_value, n, fill=np.nan)
        self.run_start = grown(self.run_start, n, fill=0)
        self.run_count = grown(self.run_count, n, fill=0)

    def scores(self, rows: Rows) -> tuple[Floats, Floats, Floats | None] | None:
        value = rows.column(self.rule.field)
        if value is None:
            return None
        judged = ~rows.absent(self.rule.field) & self.enabled[rows.dev]
        if judged.all():  # the usual case: no gathers
            picked = np.arange(len(rows))
            d, t, x, first = rows.dev, rows.ts, value, rows.first
        else:
            picked = np.flatnonzero(judged)
            if picked.size == 0:
                return None
            d, t, x = rows.dev[picked], rows.ts[picked], value[picked]
            first = np.ones(len(d), np.bool_)
            first[1:] = d[1:] != d[:-1]
        m = len(d)
        prev = np.empty(m)
        prev[1:] = x[:-1]
        prev[first] = self.run_value[d[first]]
        same = x == prev
        positions = np.arange(m)
        start_at = np.maximum.accumulate(np.where(first | ~same, positions, 0))
        # only each device's first run can continue one from the previous batch
        carried = np.flatnonzero((first & same)[start_at])
        count = positions - start_at + 1
        count[carried] += self.run_count[d[carried]]
        since = t[start_at]
        since[carried] = self.run_start[d[carried]]
        stuck = (count >= self.rule.min_readings) & (
            t - since >= round(self.rule.min_duration_s * 1000)
        )
        if self.rule.min_value is not None:
            stuck &= x >= self.rule.min_value
        last = np.ones(m, np.bool_)
        last[:-1] = first[1:]
        self.run_value[d[last]] = x[last]
        self.run_start[d[last]] = since[last]
        self.run_count[d[last]] = count[last]
        score = np.full(len(rows), np.nan)
        score[picked] = stuck
        return score, self.thr[rows.dev], value

    def extra_snapshot(self, device: int) -> dict[str, Any]:
        v = float(self.run_value[device])
        if np.isnan(v):
            return {}
        return {
            "run": [v, int(self.run_start[device]), int(self.run_count[device])],
        }

    def extra_restore(self, device: int, data: dict[str, Any]) -> None:
        run = data.get("run") or [float("nan"), 0, 0]
        self.run_value[device] = float(run[0])
        self.run_start[device] = int(run[1])
        self.run_count[device] = int(run[2])


class _SeqGap(CompiledRule):
    rule: SeqGapRule

    def __init__(self, rule: SeqGapRule, policy: TierPolicy, order: int) -> None:
        super().__init__(rule, policy, order)
        self.last_seq: Ints = np.zeros(0, np.int64)

    def _compile_extra(self, profiles: Sequence[DeviceProfile], start: int) -> None:
        self.thr = np.where(self.enabled, self.thr, np.nan)
        self.last_seq = grown(self.last_seq, len(profiles), fill=-1)

    def scores(self, rows: Rows) -> tuple[Floats, Floats, Floats | None] | None:
        seq = rows.seq()
        prev = np.empty(len(seq), np.int64)
        prev[1:] = seq[:-1]
        prev[rows.first] = self.last_seq[rows.dev[rows.first]]
        missing = seq - prev - 1
        # unknown predecessor, or a restarted device counting from zero again
        missing[(prev < 0) | (missing < 0)] = 0
        self.last_seq[rows.dev[rows.last]] = seq[rows.last]
        score = missing.astype(np.float64)
        score[~self.enabled[rows.dev]] = np.nan
        return score, self.thr[rows.dev], score

    def extra_snapshot(self, device: int) -> dict[str, Any]:
        return {"last_seq": int(self.last_seq[device])}

    def extra_restore(self, device: int, data: dict[str, Any]) -> None:
        self.last_seq[device] = int(data.get("last_seq", -1))


def compile_rule(rule: Rule, policy: TierPolicy, order: int) -> CompiledRule | None:
    if isinstance(rule, LevelRule):
        return _Level(rule, policy, order)
    if isinstance(rule, ConditionRule):
        return _Condition(rule, policy, order)
    if isinstance(rule, RateRule):
        return _Rate(rule, policy, order)
    if isinstance(rule, StuckRule):
        return _Stuck(rule, policy, order)
    if isinstance(rule, SeqGapRule):
        return _SeqGap(rule, policy, order)
    assert isinstance(rule, FlappingRule)
    return None  # judged from status changes by FlappingDetector
