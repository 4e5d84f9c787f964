"""Readings as columns: the form the scalar detector engine works on.

One row per reading. Every field is a float64 column where NaN means "absent in this
reading"; booleans are 0/1 and enumerations are coded (`CODES`), so that a condition over a
million readings is a handful of numpy operations rather than a million Python calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from offsite.gateway.columns import GasColumns, epoch_us_of
from offsite.gateway.payloads import EPOCH

CODES: dict[str, dict[str, float]] = {
    "door": {"closed": 0.0, "open": 1.0},
    "valve": {"closed": 0.0, "open": 1.0},
}
"""How enumerated fields are coded as numbers."""

PRESENCE_FIELDS = frozenset({"fault"})
"""Fields whose content is a code: the column says whether one is present (1) or not (0),
because an absent fault code means "no fault", not "unknown"."""

_NOT_FIELDS = frozenset({"ts", "seq"})


def to_ms(when: datetime) -> int:
    """Event time in epoch milliseconds (the engine's resolution)."""
    return (when - EPOCH) // timedelta(milliseconds=1)


def _epoch_ms(stamps: Sequence[datetime]) -> NDArray[np.int64]:
    """`to_ms` of many: to the microsecond first (`epoch_us_of`), then floored."""
    return np.floor_divide(epoch_us_of(stamps), 1000)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Readings of any devices, in any order (the engine sorts them by device and time)."""

    device_ids: tuple[str, ...]
    """The devices this batch speaks of; `device` indexes into it."""
    device: NDArray[np.int32]
    ts_ms: NDArray[np.int64]
    """Event time at the device, epoch milliseconds."""
    seq: NDArray[np.int64]
    received_ms: NDArray[np.int64]
    """Gateway receive time, epoch milliseconds (clock skew is judged against it)."""
    fields: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.device)
        columns = [self.ts_ms, self.seq, self.received_ms, *self.fields.values()]
        if any(len(c) != n for c in columns):
            raise ValueError("every column of a batch must have one value per reading")

    def __len__(self) -> int:
        return len(self.device)


def code(name: str, value: Any) -> float:
    """One field's value as the engine's float (NaN: absent)."""
    if name in PRESENCE_FIELDS:
        return 0.0 if value is None else 1.0
    if value is None:
        return float("nan")
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        try:
            return CODES[name][value]
        except KeyError:
            raise ValueError(f"field {name!r} has no code for {value!r}") from None
    return float(value)


def batch_from_readings(
    readings: Sequence[tuple[str, BaseModel]], received: datetime | Sequence[datetime]
) -> ReadingBatch:
    """Columns from decoded payload models (`GasReading`, `ElevatorReading`, ...), given as
    (device_id, reading) with one receive time for all or one per reading. Models of
    different kinds may be mixed: a field a model lacks is absent (NaN) in its rows."""
    n = len(readings)
    index: dict[str, int] = {}
    device = np.fromiter((index.setdefault(d, len(index)) for d, _ in readings), np.int32, n)
    ts = _epoch_ms([getattr(r, "ts") for _, r in readings])  # noqa: B009
    seq = np.fromiter((getattr(r, "seq") for _, r in readings), np.int64, n)  # noqa: B009
    if isinstance(received, datetime):
        received_ms = np.full(n, to_ms(received), np.int64)
    else:
        if len(received) != n:
            raise ValueError("one receive time per reading, or one for all")
        received_ms = np.fromiter((to_ms(r) for r in received), np.int64, n)
    # column by column for each payload model: one Python pass per field, not per value
    by_model: dict[type[BaseModel], list[int]] = {}
    for row, (_, reading) in enumerate(readings):
        by_model.setdefault(type(reading), []).append(row)
    columns: dict[str, NDArray[np.float64]] = {}
    for model, rows in by_model.items():
        taken = np.array(rows, np.intp)
        for name in model.model_fields:
            if name in _NOT_FIELDS:
                continue
            column = columns.get(name)
            if column is None:
                column = columns[name] = np.full(n, 0.0 if name in PRESENCE_FIELDS else np.nan)
            column[taken] = _coded(name, [getattr(readings[row][1], name) for row in rows])
    return ReadingBatch(tuple(index), device, ts, seq, received_ms, columns)


def _coded(name: str, values: list[Any]) -> NDArray[np.float64]:
    if name in PRESENCE_FIELDS:
        return np.fromiter((v is not None for v in values), np.float64, len(values))
    if name in CODES:
        return np.fromiter((code(name, v) for v in values), np.float64, len(values))
    # numbers and booleans, None as NaN, in one conversion
    return np.array(values, np.float64)


def gas_batch(columns: GasColumns, received: datetime) -> ReadingBatch:
    """A batch from the gateway's columns of gas readings, without another pass over them."""
    return ReadingBatch(
        columns.devices,
        columns.code,
        columns.ts_ms,
        columns.seq,
        np.full(len(columns), to_ms(received), np.int64),
        {
            "lel_pct": columns.lel_pct,
            "co_ppm": columns.co_ppm,
            "valve": columns.valve,
            "fault": columns.fault,
        },
    )


def concat_batches(batches: Sequence[ReadingBatch]) -> ReadingBatch:
    """One batch from several (device tables merged, absent columns NaN)."""
    index: dict[str, int] = {}
    parts_dev: list[NDArray[np.int32]] = []
    for b in batches:
        remap = np.array([index.setdefault(d, len(index)) for d in b.device_ids], np.int32)
        parts_dev.append(remap[b.device] if len(b) else np.empty(0, np.int32))
    names = sorted({name for b in batches for name in b.fields})
    fields = {
        name: np.concatenate(
            [b.fields.get(name, np.full(len(b), np.nan)) for b in batches] or [np.empty(0)]
        )
        for name in names
    }

    def cat(parts: list[NDArray[np.int64]]) -> NDArray[np.int64]:
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    return ReadingBatch(
        tuple(index),
        np.concatenate(parts_dev) if parts_dev else np.empty(0, np.int32),
        cat([b.ts_ms for b in batches]),
        cat([b.seq for b in batches]),
        cat([b.received_ms for b in batches]),
        fields,
    )
