"""A batch of gas readings as columns, made once after decoding and used by the writer
(the rows of its COPY, device status, rollup deltas) and by the detectors alike: each
walked the readings on its own, and at tens of thousands of readings a second those walks
were a third of the gateway's time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from offsite.gateway.payloads import epoch_us
from offsite.ingest import copy_binary
from offsite.ingest.copy_binary import Fixed, Text

_VALVE_TEXT: Final = (b"closed", b"open")
"""Indexed by the valve's code: 1 open, 0 closed, as the detectors code it
(detectors/batch.py, CODES)."""


class GasLike(Protocol):
    """A decoded gas reading: `GasWire` from the gateway, `GasReading` elsewhere."""

    @property
    def ts(self) -> int | datetime: ...
    @property
    def seq(self) -> int: ...
    @property
    def lel_pct(self) -> float: ...
    @property
    def co_ppm(self) -> float | None: ...
    @property
    def valve(self) -> str | None: ...
    @property
    def fault(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class GasColumns:
    devices: tuple[str, ...]
    """The batch's devices; `code` indexes into it."""
    code: NDArray[np.int32]
    ts_us: NDArray[np.int64]
    """Event time in epoch microseconds, as sent (to the microsecond)."""
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
    fault_text: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.code)

    @classmethod
    def of(cls, gas: Sequence[tuple[str, GasLike]]) -> GasColumns:
        """Columns of (device, reading) pairs."""
        runs: list[tuple[str, int]] = []
        for device_id, _ in gas:
            if runs and runs[-1][0] == device_id:
                runs[-1] = (device_id, runs[-1][1] + 1)
            else:
                runs.append((device_id, 1))
        return cls.of_runs(runs, [r for _, r in gas])

    @classmethod
    def of_runs(cls, runs: Sequence[tuple[str, int]], readings: Sequence[GasLike]) -> GasColumns:
        """Columns of readings given with their devices as runs, (device, count) each in
        reading order: the gateway's batches, one run a message."""
        n = len(readings)
        index: dict[str, int] = {}
        run_codes = [index.setdefault(d, len(index)) for d, _ in runs]
        code = np.repeat(np.array(run_codes, np.int32), [c for _, c in runs])
        if len(code) != n:
            raise ValueError(f"runs cover {len(code)} readings, not {n}")
        # one list per field, each made in C, then every column in one conversion; the
        # fields most readings leave out (CO, valve, fault) are looked at once when none has
        # them
        stamps = [r.ts for r in readings]
        try:
            ts_us = np.array(stamps, np.int64) * 1000  # all in epoch milliseconds
        except TypeError:  # some sent as text
            ts_us = epoch_us_of(stamps)
        cos = [r.co_ppm for r in readings]
        valves = [r.valve for r in readings]
        faults = [r.fault for r in readings]
        if valves.count(None) == n:
            valve = np.full(n, math.nan)
        else:
            coded = np.array(valves, object)
            valve = np.where(coded == "open", 1.0, np.where(coded == "closed", 0.0, math.nan))
        return cls(
            devices=tuple(index),
            code=code,
            ts_us=ts_us,
            ts_ms=np.floor_divide(ts_us, 1000),
            seq=np.array([r.seq for r in readings], np.int64),
            lel_pct=np.array([r.lel_pct for r in readings], np.float64),
            co_ppm=np.full(n, math.nan) if cos.count(None) == n else np.array(cos, np.float64),
            valve=valve,
            fault=(
                np.zeros(n)
                if faults.count(None) == n
                else np.fromiter((f is not None for f in faults), np.float64, n)
            ),
            fault_text=tuple(faults),
        )

    @classmethod
    def concat(cls, parts: Sequence[GasColumns]) -> GasColumns:
        """Batches' columns one after the other, as if made from all their readings at once
        (the writer merges batches judged apart)."""
        if len(parts) == 1:
            return parts[0]
        index: dict[str, int] = {}
        codes = []
        for part in parts:
            remap = np.array([index.setdefault(d, len(index)) for d in part.devices], np.int32)
            codes.append(remap[part.code])
        return cls(
            devices=tuple(index),
            code=np.concatenate(codes),
            ts_us=np.concatenate([p.ts_us for p in parts]),
            ts_ms=np.concatenate([p.ts_ms for p in parts]),
            seq=np.concatenate([p.seq for p in parts]),
            lel_pct=np.concatenate([p.lel_pct for p in parts]),
            co_ppm=np.concatenate([p.co_ppm for p in parts]),
            valve=np.concatenate([p.valve for p in parts]),
            fault=np.concatenate([p.fault for p in parts]),
            fault_text=tuple(f for p in parts for f in p.fault_text),
        )

    def copy_data(self, received_at: datetime) -> bytes:
        """The batch as PostgreSQL binary COPY data for the columns of `writer.GAS_COLUMNS`
        (time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at), built a column
        at a time (ingest/copy_binary.py)."""
        n = len(self)
        valve = np.where(np.isnan(self.valve), -1, self.valve).astype(np.int64)
        faults: dict[str, int] = {}
        if self.fault.any():
            fault = np.fromiter(
                (-1 if f is None else faults.setdefault(f, len(faults)) for f in self.fault_text),
                np.int64,
                n,
            )
        else:
            fault = np.full(n, -1, np.int64)
        return copy_binary.copy_data(
            n,
            [
                Fixed(self.ts_us, "timestamptz"),
                Text(self.code, [d.encode() for d in self.devices]),
                Fixed(self.seq, "int8"),
                Fixed(self.lel_pct, "float4"),
                Fixed(self.co_ppm, "float4", nullable=True),
                Text(valve, _VALVE_TEXT),
                Text(fault, [f.encode() for f in faults]),
                Fixed(np.full(n, epoch_us(received_at), np.int64), "timestamptz"),
            ],
        )


def epoch_us_of(stamps: Sequence[int | datetime]) -> NDArray[np.int64]:
    """Epoch microseconds of event times given as epoch milliseconds or datetimes.

    Through float seconds (`datetime.timestamp`, a third of the cost of exact datetime
    arithmetic): exact to the microsecond before 2**32 s (the year 2106), the float's error
    staying under half a microsecond; exact arithmetic past that."""
    n = len(stamps)
    seconds = np.fromiter(
        (t / 1000 if isinstance(t, int) else t.timestamp() for t in stamps), np.float64, n
    )
    if n and (seconds.max() >= 2.0**32 or seconds.min() < 0):
        return np.fromiter(map(epoch_us, stamps), np.int64, n)
    return np.round(seconds * 1e6).astype(np.int64)
