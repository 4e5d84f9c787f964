"""Array parameters for `unnest(...)` statements, encoded from numpy in one step.

psycopg dumps a Python list element by element; for the per-device and per-minute arrays a
batch writes (a few thousand elements a transaction) that was a tenth of the gateway's time
under load. These wrappers carry numpy columns (or encoded text) and are dumped in
PostgreSQL's binary array format, built as one numpy record array: a header (dimensions,
NULL flag, element type, length, lower bound), then each element as its length and its
bytes in network order. Pass them as binary parameters (`%b`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format


@dataclass(frozen=True, slots=True)
class Int8Array:
    """An `int8[]` parameter."""

    values: NDArray[np.integer[Any]]


@dataclass(frozen=True, slots=True)
class Float8Array:
    """A `float8[]` parameter; NaN and infinities go as such (not as NULL)."""

    values: NDArray[np.floating[Any]]


@dataclass(frozen=True, slots=True)
class TextArray:
    """A `text[]` parameter: `table[codes[i]]` is element i, each already UTF-8 encoded."""

    codes: NDArray[np.integer[Any]]
    table: Sequence[bytes]


def _header(oid: int, n: int) -> bytes:
    if n == 0:
        return struct.pack("!iii", 0, 0, oid)  # no dimensions: the empty array
    return struct.pack("!iiiii", 1, 0, oid, n, 1)


def fixed_array(values: NDArray[Any], oid: int, dtype: str) -> bytes:
    """A one-dimensional array of a fixed-width type, without NULLs."""
    n = len(values)
    body = np.empty(n, [("length", ">i4"), ("value", dtype)])
    body["length"] = np.dtype(dtype).itemsize
    body["value"] = values
    return _header(oid, n) + body.tobytes()


def text_array(codes: NDArray[Any], table: Sequence[bytes]) -> bytes:
    """A one-dimensional text array, without NULLs."""
    framed = [struct.pack("!i", len(item)) + item for item in table]
    return _header(_TEXT, len(codes)) + b"".join([framed[c] for c in codes.tolist()])


_TEXT: Final = postgres.types["text"].oid
_INT8: Final = postgres.types["int8"].oid
_FLOAT8: Final = postgres.types["float8"].oid


class _Int8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = postgres.types["int8"].array_oid

    def dump(self, obj: Int8Array) -> bytes:
        return fixed_array(obj.values, _INT8, ">i8")


class _Float8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = postgres.types["float8"].array_oid

    def dump(self, obj: Float8Array) -> bytes:
        return fixed_array(obj.values, _FLOAT8, ">f8")


class _TextArrayDumper(Dumper):
    format = Format.BINARY
    oid = postgres.types["text"].array_oid

    def dump(self, obj: TextArray) -> bytes:
        return text_array(obj.codes, obj.table)


psycopg.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
psycopg.adapters.register_dumper(Float8Array, _Float8ArrayDumper)
psycopg.adapters.register_dumper(TextArray, _TextArrayDumper)
