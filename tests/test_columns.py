"""The gateway's columns of gas readings give the detectors the batch they would build
themselves, and the writer the same status and rollups."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from offsite.detectors.batch import batch_from_readings, gas_batch
from offsite.gateway.columns import GasColumns
from offsite.gateway.payloads import GasReading


def test_columns_make_the_same_batch_as_the_readings() -> None:
    rng = random.Random(5)
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    gas = []
    for i in range(500):
        ts = start + timedelta(microseconds=rng.randrange(0, 10**9))
        if i % 7 == 0:  # some with an offset other than UTC
            ts = ts.astimezone(timezone(timedelta(hours=8)))
        body: dict[str, object] = {"ts": ts.isoformat(), "seq": i, "lel_pct": rng.random() * 100}
        if i % 3:
            body["co_ppm"] = rng.random() * 50
        if i % 4 == 0:
            body["valve"] = rng.choice(["open", "closed"])
        if i % 11 == 0:
            body["fault"] = "E07"
        gas.append((f"gas-{rng.randrange(1, 30):04d}", GasReading.model_validate(body)))
    received = start + timedelta(hours=1)
    expected = batch_from_readings(gas, received)
    got = gas_batch(GasColumns.of(gas), received)
    assert got.device_ids == expected.device_ids
    for name in ("device", "ts_ms", "seq", "received_ms"):
        assert np.array_equal(getattr(got, name), getattr(expected, name)), name
    assert set(got.fields) == set(expected.fields)
    for name, column in expected.fields.items():
        assert np.array_equal(got.fields[name], column, equal_nan=True), name


def test_no_readings_no_columns() -> None:
    assert len(GasColumns.of([])) == 0


def test_columns_concatenated_are_the_columns_of_all_the_readings() -> None:
    """The writer merges batches judged apart: their columns, one after the other, must be
    the columns made from all their readings at once (devices shared and not, in any
    order; a part without readings)."""
    rng = random.Random(8)
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

    def reading(i: int) -> GasReading:
        body: dict[str, object] = {"ts": int(start.timestamp() * 1000) + i, "seq": i}
        body["lel_pct"] = rng.random() * 100
        if i % 5 == 0:
            body["fault"] = "E07"
        if i % 3 == 0:
            body["valve"] = "open"
        return GasReading.model_validate(body)

    parts = [
        [(f"gas-{rng.randrange(1, 12):04d}", reading(n * 100 + i)) for i in range(size)]
        for n, size in enumerate([40, 0, 1, 25, 60])
    ]
    whole = GasColumns.of([pair for part in parts for pair in part])
    merged = GasColumns.concat([GasColumns.of(part) for part in parts])
    assert [merged.devices[c] for c in merged.code] == [whole.devices[c] for c in whole.code]
    for name in ("ts_us", "ts_ms", "seq", "lel_pct", "co_ppm", "valve", "fault"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name), equal_nan=True), name
    assert merged.fault_text == whole.fault_text
    received = start + timedelta(hours=1)
    assert merged.copy_data(received) == whole.copy_data(received)
