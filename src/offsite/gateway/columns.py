"""A batch of gas readings as columns, made once after decoding and used by the writer
(the rows of its COPY, device status, rollup deltas) and by the detectors alike: each
walked the readings on its own, and at tens of thousands of readings a second those walks
were a third of the gateway's time."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from offsite.gateway.payloads import epoch_us

_VALVE = {"open": 1.0, "closed": 0.0}
"""As the detectors code it (detectors/batch.py, CODES)."""
_VALVE_TEXT: Final = {1: b"open", 0: b"closed"}
_PG_EPOCH_US: Final = 946_684_800_000_000
"""PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC."""
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER: Final = struct.pack("!h", -1)
_NULL: Final = -1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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

    def stamp(self, row: int) -> datetime:
        """The event time of one reading, in UTC."""
        return _EPOCH + timedelta(microseconds=int(self.ts_us[row]))

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
            ts_us = _epoch_us(stamps)
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

    def copy_data(self, received_at: datetime) -> bytes:
        """The batch as PostgreSQL binary COPY data for the columns of `writer._COLUMNS`
        (time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at).

        Built column by column: rows of the same layout (device id length, CO present or
        not, valve, fault length) form a group whose rows are fixed-width, so a group is one
        numpy record array filled a column at a time. A COPY's row order does not matter."""
        n = len(self)
        if n == 0:
            return _COPY_HEADER + _COPY_TRAILER
        device_bytes = [d.encode() for d in self.devices]
        device_len = np.array([len(b) for b in device_bytes], np.int64)[self.code]
        if self.fault.any():
            fault_len = np.fromiter(
                (_NULL if f is None else len(f.encode()) for f in self.fault_text), np.int64, n
            )
        else:
            fault_len = np.full(n, _NULL, np.int64)
        co_null = np.isnan(self.co_ppm)
        valve_kind = np.where(np.isnan(self.valve), 2, self.valve).astype(np.int64)
        # fault codes are at most 64 characters, 256 bytes: the layout fits one integer
        layout = (device_len << 20) | (co_null << 19) | (valve_kind << 16) | (fault_len + 1)
        kinds, group = np.unique(layout, return_inverse=True)
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(len(kinds) + 1))
        received = _pg_us(received_at)
        parts = [_COPY_HEADER]
        for g in range(len(kinds)):
            rows = order[bounds[g] : bounds[g + 1]]
            first = int(rows[0])
            parts.append(
                self._group(
                    rows,
                    device_bytes,
                    int(device_len[first]),
                    bool(co_null[first]),
                    int(valve_kind[first]),
                    int(fault_len[first]),
                    received,
                )
            )
        parts.append(_COPY_TRAILER)
        return b"".join(parts)

    def _group(
        self,
        rows: NDArray[np.intp],
        device_bytes: list[bytes],
        device_len: int,
        co_null: bool,
        valve_kind: int,
        fault_len: int,
        received: int,
    ) -> bytes:
        valve = _VALVE_TEXT.get(valve_kind)
        # each field is its length (-1 for NULL) then its bytes, in network order
        fields: list[tuple[str, str]] = [
            ("n", ">i2"),
            *(("l_ts", ">i4"), ("ts", ">i8")),
            *(("l_dev", ">i4"), ("dev", f"S{device_len}")),
            *(("l_seq", ">i4"), ("seq", ">i8")),
            *(("l_lel", ">i4"), ("lel", ">f4")),
            ("l_co", ">i4"),
        ]
        if not co_null:
            fields.append(("co", ">f4"))
        fields.append(("l_valve", ">i4"))
        if valve is not None:
            fields.append(("valve", f"S{len(valve)}"))
        fields.append(("l_fault", ">i4"))
        if fault_len > 0:
            fields.append(("fault", f"S{fault_len}"))
        fields += [("l_rec", ">i4"), ("rec", ">i8")]
        out = np.empty(len(rows), np.dtype(fields))
        out["n"] = 8
        out["l_ts"] = out["l_seq"] = out["l_rec"] = 8
        out["ts"] = self.ts_us[rows] - _PG_EPOCH_US
        out["l_dev"] = device_len
        out["dev"] = np.array(device_bytes, f"S{device_len}")[self.code[rows]]
        out["seq"] = self.seq[rows]
        out["l_lel"] = 4
        out["lel"] = self.lel_pct[rows]
        if co_null:
            out["l_co"] = _NULL
        else:
            out["l_co"] = 4
            out["co"] = self.co_ppm[rows]
        if valve is None:
            out["l_valve"] = _NULL
        else:
            out["l_valve"] = len(valve)
            out["valve"] = valve
        out["l_fault"] = fault_len
        if fault_len > 0:
            texts = self.fault_text
            out["fault"] = [str(texts[i]).encode() for i in rows.tolist()]
        out["rec"] = received
        return out.tobytes()


def _epoch_us(stamps: list[int | datetime]) -> NDArray[np.int64]:
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


def _pg_us(at: datetime) -> int:
    return epoch_us(at) - _PG_EPOCH_US
