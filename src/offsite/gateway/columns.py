"""A batch of gas readings as columns, made once after decoding and used by the writer
(device status, rollup deltas) and by the detectors alike: each walked the readings on its
own, and at tens of thousands of readings a second those walks were a third of the
gateway's time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from offsite.gateway.payloads import GasReading

_VALVE = {"open": 1.0, "closed": 0.0}
"""As the detectors code it (detectors/batch.py, CODES)."""


@dataclass(frozen=True, slots=True)
class GasColumns:
    devices: tuple[str, ...]
    """The batch's devices; `code` indexes into it."""
    code: NDArray[np.int32]
    stamps: list[datetime]
    """Event times as decoded (the database takes them as they are)."""
    ts_ms: NDArray[np.int64]
    """Event time in epoch milliseconds, floored."""
    seq: NDArray[np.int64]
    lel_pct: NDArray[np.float64]
    co_ppm: NDArray[np.float64]
    """NaN where a reading has none."""
    valve: NDArray[np.float64]
    """1 open, 0 closed, NaN not reported."""
    fault: NDArray[np.float64]
    """1 where a fault code is reported."""

    def __len__(self) -> int:
        return len(self.code)

    @classmethod
    def of(cls, gas: Sequence[tuple[str, GasReading]]) -> GasColumns:
        n = len(gas)
        if n == 0:
            empty = np.empty(0)
            return cls((), np.empty(0, np.int32), [], np.empty(0, np.int64),
                       np.empty(0, np.int64), empty, empty, empty, empty)  # fmt: skip
        # one pass over the models, then every column in C
        devs, stamps, seqs, lels, cos, valves, faults = zip(
            *((d, r.ts, r.seq, r.lel_pct, r.co_ppm, r.valve, r.fault) for d, r in gas),
            strict=True,
        )
        index: dict[str, int] = {}
        code = np.fromiter((index.setdefault(d, len(index)) for d in devs), np.int32, n)
        seconds = np.fromiter((t.timestamp() for t in stamps), np.float64, n)
        # rounded to the microsecond first: exact below 2**53 µs, past the year 2200
        ts_ms = np.floor_divide(np.round(seconds * 1e6).astype(np.int64), 1000)
        return cls(
            devices=tuple(index),
            code=code,
            stamps=list(stamps),
            ts_ms=ts_ms,
            seq=np.fromiter(seqs, np.int64, n),
            lel_pct=np.fromiter(lels, np.float64, n),
            co_ppm=np.fromiter((math.nan if c is None else c for c in cos), np.float64, n),
            valve=np.fromiter((_VALVE.get(v, math.nan) for v in valves), np.float64, n),
            fault=np.fromiter((f is not None for f in faults), np.float64, n),
        )
