"""PostgreSQL binary COPY data built from numpy columns, without a Python step per row.

A row of the binary format is its field count, then each field as a length (-1 for NULL) and
its bytes in network order. Rows whose fields have the same lengths (the same text lengths,
the same NULLs) share one fixed-width layout, so they are one numpy record array, filled a
column at a time; a COPY's row order does not matter, so the rows go out grouped by layout.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

PG_EPOCH_US: Final = 946_684_800_000_000
"""PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC."""
_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER: Final = struct.pack("!h", -1)
_NULL: Final = -1


@dataclass(frozen=True, slots=True)
class Text:
    """A text column as codes into a table of encoded values; code -1 is NULL."""

    codes: NDArray[np.integer]
    table: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class Fixed:
    """A fixed-width column: `kind` is int8, float8, float4 or timestamptz (epoch
    microseconds). With `nullable`, NaN is NULL (float kinds only)."""

    values: NDArray[np.generic]
    kind: str
    nullable: bool = False


_FIXED: Final = {"int8": ">i8", "float8": ">f8", "float4": ">f4", "timestamptz": ">i8"}

Column = Text | Fixed


def copy_data(n: int, columns: Sequence[Column]) -> bytes:
    """`n` rows of `columns` as binary COPY data, header and trailer included."""
    if n == 0:
        return _HEADER + _TRAILER
    parts: list[NDArray[np.int64]] = []  # per row, what decides its layout
    lengths: list[NDArray[np.int64] | None] = []
    for column in columns:
        if isinstance(column, Text):
            table_len = np.array([len(b) for b in column.table] + [_NULL], np.int64)
            length = table_len[np.where(column.codes < 0, len(column.table), column.codes)]
            parts.append(length)
            lengths.append(length)
        elif column.nullable:
            null = np.isnan(column.values.astype(np.float64)).astype(np.int64)
            parts.append(null)
            lengths.append(None)
        else:
            lengths.append(None)
    layouts, group = _layouts(n, parts)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(len(layouts) + 1))
    out = [_HEADER]
    for g in range(len(layouts)):
        rows = order[bounds[g] : bounds[g + 1]]
        out.append(_group(columns, rows, layouts[g]))
    out.append(_TRAILER)
    return b"".join(out)


def _layouts(n: int, parts: list[NDArray[np.int64]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The distinct layouts (one row of parts each) and each row's index into them."""
    if not parts:
        return np.zeros((1, 0), np.int64), np.zeros(n, np.int64)
    shifted = [p + 1 for p in parts]  # lengths -1.. become 0..
    spans = [int(p.max()) + 1 for p in shifted]
    if float(np.prod(np.array(spans, np.float64))) < 2.0**62:
        # one integer a row, sorted in one pass: the usual case
        key = np.zeros(n, np.int64)
        for p, span in zip(shifted, spans, strict=True):
            key = key * span + p
        keys, group = np.unique(key, return_inverse=True)
        layouts = np.empty((len(keys), len(parts)), np.int64)
        for j in range(len(parts) - 1, -1, -1):
            keys, layouts[:, j] = np.divmod(keys, spans[j])
        return layouts - 1, group.reshape(-1)
    layouts, group = np.unique(np.stack(shifted, axis=1), axis=0, return_inverse=True)
    return layouts - 1, group.reshape(-1)


def _group(columns: Sequence[Column], rows: NDArray[np.intp], layout: NDArray[np.int64]) -> bytes:
    """Rows that share one layout: one record array."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    fill: list[tuple[int, str, int, Column]] = []
    part = 0
    for i, column in enumerate(columns):
        fields.append((f"l{i}", ">i4"))
        if isinstance(column, Text):
            width = int(layout[part])
            part += 1
            if width > 0:
                fields.append((f"v{i}", f"S{width}"))
            fill.append((i, "text", width, column))
        else:
            null = False
            if column.nullable:
                null = bool(layout[part] == 1)
                part += 1
            if not null:
                fields.append((f"v{i}", _FIXED[column.kind]))
            fill.append(
                (i, "null" if null else "fixed", np.dtype(_FIXED[column.kind]).itemsize, column)
            )
    out = np.empty(len(rows), np.dtype(fields))
    out["n"] = len(columns)
    for i, how, width, column in fill:
        if how == "null":
            out[f"l{i}"] = _NULL
        elif how == "text":
            assert isinstance(column, Text)
            out[f"l{i}"] = width
            if width > 0:
                table = np.array(list(column.table) or [b""], f"S{width}")
                out[f"v{i}"] = table[column.codes[rows]]
        else:
            assert isinstance(column, Fixed)
            out[f"l{i}"] = width
            values = column.values[rows]
            out[f"v{i}"] = values - PG_EPOCH_US if column.kind == "timestamptz" else values
    return out.tobytes()
