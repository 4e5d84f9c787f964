"""The gateway's fast gas decoder (`GasWire`, msgspec) against the reference (`GasReading`,
pydantic): whatever the fast one takes, the reference takes too, with the same values to the
bit; whatever it does not take goes to the reference, so a sender sees one behaviour. And the
binary COPY rows the columns build store exactly what psycopg's own row writer stores."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from offsite.gateway.columns import GasColumns
from offsite.gateway.decode import KnownDevice, _gas_wire, decode_message
from offsite.gateway.payloads import GasReading, GasWire, epoch_us
from offsite.ingest import copy_binary
from tests.hostile import HUGE, MIN_MS, NOW, NOW_MS, json_values, valid_readings

REFERENCE: TypeAdapter[GasReading | list[GasReading]] = TypeAdapter(GasReading | list[GasReading])
FIELDS = ("seq", "lel_pct", "co_ppm", "valve", "fault")

# Values a device might send for each field: right, nearly right and wrong.
_TEXT_TIMES = st.sampled_from(
    [
        "2026-11-25T08:00:00Z",
        "2026-11-25t08:00:00z",
        "2026-11-25 08:00:00+08:00",
        "2026-11-25T08:00:00.123456789Z",  # beyond the microsecond: cut, not rounded
        "2026-11-25T08:00:00.9999995Z",
        "2026-11-25T08:00Z",
        "2026-11-25T08:00:00,5Z",
        "2026-11-25T08:00:00+0800",
        "2026-11-25T08:00:00",  # no offset
        "2026-11-25T08:00:60Z",
        "1999-12-31T23:59:59.999999Z",
        "0002-11-25T08:00:00Z",
        "1795593600000",  # epoch milliseconds as text
        "1795593600",
        "2026-11-25",
        "",
    ]
)
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ts": st.integers(MIN_MS - 2, MIN_MS + 2)
    | st.integers(NOW_MS - 10**6, NOW_MS + 10**6)
    | st.sampled_from([253_402_300_799_999, 253_402_300_800_000, -1, 0, 2**63, HUGE])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(float(NOW_MS))
    | _TEXT_TIMES
    | st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(datetime.isoformat)
    | st.booleans()
    | st.none(),
    "seq": st.integers(-2, 5)
    | st.sampled_from([2**63 - 1, 2**63, HUGE, 1.0, "1", True, None])
    | st.integers(),
    "lel_pct": st.floats(-1, 101)
    | st.sampled_from([0, 100, -0.0, 100.0000000000001, "5", True, None, HUGE])
    | st.integers(-5, 105),
    "co_ppm": st.floats(-1, 100_001)
    | st.sampled_from([0, 100_000, None, "1", False, HUGE])
    | st.integers(-5, 100_005),
    "valve": st.sampled_from(["open", "closed", "OPEN", "ajar", "", None, 1, True]),
    "fault": st.text(max_size=66) | st.sampled_from(["E07", "x" * 64, "x" * 65, None, 7]),
}


@st.composite
def _readings(draw: st.DrawFn) -> Any:
    def one() -> Any:
        if draw(st.integers(0, 9)) == 0:
            return draw(json_values)  # anything at all
        body: dict[str, Any] = {}
        for name, values in _FIELD_VALUES.items():
            if draw(st.integers(0, 7)) > 0:  # now and then a field is missing
                body[name] = draw(values)
        if draw(st.integers(0, 15)) == 0:
            body[draw(st.sampled_from(["device_id", "surplus", "Seq", ""]))] = 1
        return body

    if draw(st.booleans()):
        return one()
    return [one() for _ in range(draw(st.integers(0, 4)))]


def _same(fast: GasWire, reference: GasReading) -> None:
    assert epoch_us(fast.ts) == epoch_us(reference.ts)
    if isinstance(fast.ts, datetime):
        assert fast.ts.utcoffset() == reference.ts.utcoffset()
    for name in FIELDS:
        got, expected = getattr(fast, name), getattr(reference, name)
        assert type(got) is type(expected), name
        if isinstance(got, float):
            assert got.hex() == expected.hex(), name  # to the bit, the sign of zero included
        else:
            assert got == expected, name


def _compare(payload: bytes) -> bool:
    """True when the fast decoder took the payload."""
    taken = _gas_wire(payload)
    if taken is None:
        return False
    fast, newest_ms = taken
    try:
        reference = REFERENCE.validate_json(payload)
    except ValidationError as exc:
        pytest.fail(f"the fast decoder took what the reference refuses: {payload!r}: {exc}")
    references = reference if isinstance(reference, list) else [reference]
    assert len(fast) == len(references)
    for got, expected in zip(fast, references, strict=True):
        _same(got, expected)
    if references:
        assert abs(newest_ms * 1000 - max(epoch_us(r.ts) for r in references)) <= 1
    return True


@settings(max_examples=1500, deadline=None)
@given(document=_readings())
@example(document={"ts": "2026-11-25T08:00:00.9999995Z", "seq": 1, "lel_pct": 1.0})
@example(document={"ts": "1795593600000", "seq": 1, "lel_pct": -0.0})
def test_the_fast_decoder_never_differs_from_the_reference(document: Any) -> None:
    _compare(json.dumps(document, allow_nan=True).encode())


@settings(max_examples=200, deadline=None)
@given(readings=st.lists(valid_readings("gas_detector"), min_size=1, max_size=20))
def test_what_devices_send_takes_the_fast_path(readings: list[dict[str, Any]]) -> None:
    """Not vacuous: the readings devices send, in milliseconds or RFC 3339 with any
    offset, valve and fault included, are the fast decoder's."""
    assert _compare(json.dumps(readings).encode())


def test_duplicate_keys_and_raw_json_text_agree() -> None:
    """JSON text json.dumps cannot produce: a key twice, exponents, escapes, whitespace."""
    for raw in (
        b'{"ts":1795593600000,"seq":1,"lel_pct":1,"seq":2}',
        b'{"ts":1795593600000,"seq":1e2,"lel_pct":1}',
        b'{"ts":1795593600000,"seq":1,"lel_pct":1e400}',
        b'{"ts":1795593600000,"seq":1,"lel_pct":1E1}',
        b'{"ts":1795593600000,"seq":1,"lel_pct":NaN}',
        b'{"ts":1795593600000,"seq":1,"lel_pct":1,"fault":"\\ud800"}',
        b'{"ts":1795593600000,"seq":1,"lel_pct":1,"fault":"\\u0000"}',
        b'{"ts":1795593600000,"seq":1,"lel_pct":1,"valve":"op\\u0065n"}',
        b' [ {"ts" : 1795593600000 , "seq":01,"lel_pct":1} ] ',
        b'\xef\xbb\xbf{"ts":1795593600000,"seq":1,"lel_pct":1}',
        b'{"ts":1795593600000,"seq":1,"lel_pct":1}{}',
        b'{"ts":1795593600000.0,"seq":1,"lel_pct":1}',
    ):
        _compare(raw)


def test_the_gateway_decodes_a_message_once_whichever_path_takes_it() -> None:
    devices = {"gas-0001": KnownDevice("gas-0001", "gas", "gas_detector")}
    topic = "offsite/v1/gas/gas-0001/telemetry"
    mixed = [
        {"ts": NOW_MS, "seq": 1, "lel_pct": 1.0},
        {"ts": float(NOW_MS), "seq": 2, "lel_pct": 2.0},  # only the reference takes a float
        {"ts": NOW_MS, "seq": -3, "lel_pct": 3.0},  # refused with its reason
    ]
    out = decode_message(
        topic, json.dumps(mixed).encode(), devices, NOW, max_payload_bytes=4096, max_readings=9
    )
    assert [r.seq for _, r in out.gas] == [1, 2]
    assert all(isinstance(r, GasWire) for _, r in out.gas)
    assert [r.reason for r in out.refusals] == [
        "item 2: invalid seq: Input should be greater than or equal to 0"
    ]


def _sample_readings(n: int) -> list[tuple[str, GasWire]]:
    rng = random.Random(11)
    devices = ["g1", "gas-0002", "燃气-03", "gas-" + "x" * 40]  # lengths and UTF-8 vary
    faults = [None, None, None, "", "E07", "传感器故障", "F" * 64]
    out = []
    for i in range(n):
        when = NOW + timedelta(microseconds=rng.randrange(-(10**10), 10**10))
        ts: int | datetime
        if i % 3 == 0:
            ts = epoch_us(when) // 1000
        else:
            ts = when.astimezone(timezone(timedelta(minutes=rng.randrange(-720, 720))))
        out.append(
            (
                rng.choice(devices),
                GasWire(
                    ts=ts,
                    seq=rng.randrange(0, 2**63),
                    lel_pct=rng.choice([0.0, -0.0, 100.0, rng.random() * 100, 1e-40]),
                    co_ppm=rng.choice([None, 0.0, rng.random() * 1e5]),
                    valve=rng.choice([None, "open", "closed"]),
                    fault=rng.choice(faults),
                ),
            )
        )
    return out


def test_binary_copy_rows_store_what_psycopg_stores(database_url: str) -> None:
    gas = _sample_readings(3000)
    received = datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=UTC)
    columns = "time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at"
    with psycopg.connect(database_url) as conn:
        for name in ("built", "reference"):
            conn.execute(f"CREATE TEMP TABLE {name} (LIKE telemetry_gas)")
        with conn.cursor().copy(f"COPY built ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(GasColumns.of(gas).copy_data(received))
        with conn.cursor().copy(f"COPY reference ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(
                ["timestamptz", "text", "int8", "float4", "float4", "text", "text", "timestamptz"]
            )
            for device_id, r in gas:
                ts = (
                    r.ts
                    if isinstance(r.ts, datetime)
                    else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=r.ts)
                )
                copy.write_row(
                    (ts, device_id, r.seq, r.lel_pct, r.co_ppm, r.valve, r.fault, received)
                )
        # every column compared as text, NULLs and the sign of zero included
        query = f"SELECT {columns}, lel_pct::text, co_ppm::text FROM {{}} ORDER BY seq, device_id"
        built = conn.execute(query.format("built")).fetchall()
        reference = conn.execute(query.format("reference")).fetchall()
    assert len(built) == len(gas)
    assert built == reference


def test_no_readings_make_an_empty_copy(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE built (LIKE telemetry_gas)")
        with conn.cursor().copy("COPY built FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(GasColumns.of([]).copy_data(NOW))
        assert conn.execute("SELECT count(*) FROM built").fetchone() == (0,)


def test_columns_keep_the_microsecond() -> None:
    gas = _sample_readings(200)
    cols = GasColumns.of(gas)
    for row, (_, r) in enumerate(gas):
        assert int(cols.ts_us[row]) == epoch_us(r.ts)
        assert math.isnan(cols.co_ppm[row]) == (r.co_ppm is None)


def test_copy_data_of_many_layouts_matches_psycopg(database_url: str) -> None:
    """Seventy nullable columns make more layouts than one integer key can tell apart: the
    encoder then groups rows by the layout rows themselves, with the same result."""
    rng = np.random.default_rng(3)
    n, width = 400, 70
    values = rng.random((n, width))
    values[rng.random((n, width)) < 0.3] = np.nan
    texts = [b"", "文本".encode(), b"x" * 300]
    codes = rng.integers(-1, len(texts), n)
    columns: list[copy_binary.Column] = [copy_binary.Text(codes, texts)]
    columns += [copy_binary.Fixed(values[:, j], "float8", nullable=True) for j in range(width)]
    names = ["t", *(f"c{j}" for j in range(width))]
    with psycopg.connect(database_url) as conn:
        ddl = ", ".join(["t text", *(f"c{j} float8" for j in range(width))])
        for table in ("built", "reference"):
            conn.execute(f"CREATE TEMP TABLE {table} (row_no serial, {ddl})")
        target = ", ".join(names)
        with conn.cursor().copy(f"COPY built ({target}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(copy_binary.copy_data(n, columns))
        with conn.cursor().copy(f"COPY reference ({target}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", *(["float8"] * width)])
            for i in range(n):
                text = None if codes[i] < 0 else texts[codes[i]].decode()
                row = [None if math.isnan(v) else float(v) for v in values[i]]
                copy.write_row([text, *row])
        query = f"SELECT {target} FROM {{}} ORDER BY {target}"
        built = conn.execute(query.format("built")).fetchall()
        reference = conn.execute(query.format("reference")).fetchall()
    assert len(built) == n
    assert built == reference
