"""The numpy-built array parameters (ingest/arrays.py) reach PostgreSQL as the same arrays
psycopg's own list dumping sends: compared in the database, element for element."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import psycopg
import pytest

from offsite.ingest.arrays import Float8Array, Int8Array, TextArray


def _same_in_the_database(url: str, sql_type: str, ours: object, theirs: list[Any]) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT %b::{sql_type}[] IS NOT DISTINCT FROM %b::{sql_type}[],"
            f" cardinality(%b::{sql_type}[]), %b::{sql_type}[]",
            (ours, theirs, ours, ours),
        ).fetchone()
    assert row is not None
    assert row[0] is True, (row[3], theirs)
    assert row[1] == len(theirs)


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_int8_and_float8_arrays(database_url: str, n: int) -> None:
    rng = np.random.default_rng(n)
    ints = rng.integers(-(2**62), 2**62, n)
    _same_in_the_database(database_url, "int8", Int8Array(ints), ints.tolist())
    floats = rng.normal(0, 1e6, n)
    if n > 3:
        floats[:3] = [np.nan, np.inf, -np.inf]
    _same_in_the_database(database_url, "float8", Float8Array(floats), floats.tolist())


@pytest.mark.parametrize("n", [0, 1, 500])
def test_text_arrays(database_url: str, n: int) -> None:
    rng = random.Random(n)
    table = ["", "gas-0001", "燃氣-探測器-七", 'a,b{c}"d\\e', "x" * 300]
    codes = [rng.randrange(len(table)) for _ in range(n)]
    ours = TextArray(np.array(codes, np.int64), [t.encode() for t in table])
    _same_in_the_database(database_url, "text", ours, [table[c] for c in codes])
