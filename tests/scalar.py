"""Helpers for the scalar engine tests: batches from short literal series."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from offsite.detectors.batch import ReadingBatch, to_ms
from offsite.detectors.engine import ScalarEngine
from offsite.detectors.rulepack import DeviceProfile, Override, RulePack, load_pack

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


Row = tuple[str, float, dict[str, float]]
"""(device, seconds after T0, fields)"""


def batch(
    rows: Sequence[Row], seqs: Sequence[int] | None = None, lag_s: float = 0.0
) -> ReadingBatch:
    """Rows as a batch; seq counts per device unless given; received `lag_s` after ts."""
    index: dict[str, int] = {}
    counters: dict[str, int] = {}
    names = sorted({k for _, _, fields in rows for k in fields})
    columns = {name: np.full(len(rows), np.nan) for name in names}
    device = np.empty(len(rows), np.int32)
    ts = np.empty(len(rows), np.int64)
    seq = np.empty(len(rows), np.int64)
    for i, (dev, seconds, fields) in enumerate(rows):
        device[i] = index.setdefault(dev, len(index))
        ts[i] = to_ms(at(seconds))
        if seqs is None:
            seq[i] = counters.get(dev, 0)
            counters[dev] = seq[i] + 1
        else:
            seq[i] = seqs[i]
        for name, value in fields.items():
            columns[name][i] = value
    received = ts + round(lag_s * 1000)
    return ReadingBatch(tuple(index), device, ts, seq, received, columns)


def series(
    device: str, field: str, values: Sequence[float], start: float = 0.0, step: float = 1.0
) -> list[Row]:
    return [(device, start + i * step, {field: v}) for i, v in enumerate(values)]


def engine(
    pack: str | RulePack,
    only: Sequence[str] | None = None,
    devices: Sequence[DeviceProfile] = (),
    overrides: Sequence[Override] = (),
) -> ScalarEngine:
    loaded = load_pack(pack) if isinstance(pack, str) else pack
    return ScalarEngine([loaded], devices, overrides, only=only)
