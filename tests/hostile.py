"""Hypothesis strategies for hostile device input: valid readings of each kind, readings
with one thing wrong, and any JSON at all."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
MIN_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)

# Each field of each kind with a value inside and values outside its range.
FLOATS: dict[str, dict[str, tuple[float, float]]] = {
    "gas_detector": {"lel_pct": (0.0, 100.0), "co_ppm": (0.0, 100_000.0)},
    "elevator": {
        "speed_mps": (0.0, 30.0),
        "rated_speed_mps": (0.1, 30.0),
        "load_kg": (0.0, 100_000.0),
    },
    "boiler": {
        "pressure_mpa": (0.0, 100.0),
        "temp_c": (-50.0, 1_000.0),
        "water_level_mm": (-10_000.0, 10_000.0),
    },
    "pressure_vessel": {"pressure_mpa": (0.0, 1_000.0), "temp_c": (-273.0, 1_500.0)},
    "crane": {"load_t": (0.0, 100_000.0), "rated_load_t": (0.1, 100_000.0), "wind_mps": (0, 100)},
}
REQUIRED = {
    "gas_detector": {"lel_pct": 1.0},
    "elevator": {"speed_mps": 0.0, "moving": False},
    "boiler": {"pressure_mpa": 1.0},
    "pressure_vessel": {"pressure_mpa": 1.0},
    "crane": {"load_t": 1.0},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


@st.composite
def valid_readings(
    draw: st.DrawFn, kind: str, seq: int | None = None, now_ms: int = NOW_MS
) -> dict[str, Any]:
    """A reading its kind's model accepts, with the device's clock at most a day ahead."""
    ts_ms = draw(st.integers(MIN_MS, now_ms + 86_400_000))
    reading: dict[str, Any] = {
        "ts": draw(
            st.sampled_from(
                [
                    ts_ms,
                    datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(),
                    datetime.fromtimestamp(ts_ms / 1000, timezone(timedelta(hours=8))).isoformat(),
                ]
            )
        ),
        "seq": seq if seq is not None else draw(st.integers(0, 2**63 - 1)),
        **REQUIRED[kind],
    }
    for name, (low, high) in FLOATS[kind].items():
        if name in REQUIRED[kind] or draw(st.booleans()):
            reading[name] = draw(st.floats(low, high))
    if kind == "gas_detector" and draw(st.booleans()):
        reading["valve"] = draw(st.sampled_from(["open", "closed"]))
        reading["fault"] = draw(st.text(max_size=64).filter(lambda t: "\x00" not in t))
    if kind == "elevator":
        reading["moving"] = draw(st.booleans())
        if draw(st.booleans()):
            reading["door"] = draw(st.sampled_from(["open", "closed"]))
            reading["floor"] = draw(st.integers(-20, 300))
            reading["in_door_zone"] = draw(st.booleans())
    return reading


HUGE = 10**400
"""An integer no float or int64 holds: JSON allows it, Python's json reads it exactly."""


def _broken_values(kind: str, now_ms: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [
        ("seq", -1),
        ("seq", True),
        ("seq", "1"),
        ("seq", 2**63),
        ("seq", HUGE),
        ("ts", MIN_MS - 1),
        ("ts", HUGE),
        ("ts", -HUGE),
        ("ts", "2026-11-25T08:00:00"),  # no offset
        ("ts", now_ms + 86_400_001 + 60_000),  # more than a day ahead
        ("ts", None),
        ("ts", 253_402_300_800_000),  # year 10000
        ("surplus", 1),
    ]
    for name, (low, high) in FLOATS[kind].items():
        out += [
            (name, math.nan),
            (name, math.inf),
            (name, -math.inf),
            (name, HUGE),
            (name, high * 2 + 1),
            (name, low - 1),
            (name, str(low)),
        ]
    if kind == "gas_detector":
        out += [("fault", "E\x001"), ("valve", "ajar"), ("fault", "x" * 65)]
    return out


@st.composite
def broken_readings(draw: st.DrawFn, kind: str, seq: int, now_ms: int = NOW_MS) -> dict[str, Any]:
    """A reading of its kind with exactly one thing wrong."""
    reading = draw(valid_readings(kind, seq, now_ms))
    name, value = draw(st.sampled_from(_broken_values(kind, now_ms)))
    if name == "seq":
        reading["seq"] = value
    else:
        reading[name] = value
    if draw(st.booleans()):
        del reading["ts"]  # a missing required field is one more way to be wrong
    return reading


def dumps(value: Any) -> bytes:
    """As a device might send it: NaN and Infinity literals included."""
    return json.dumps(value, allow_nan=True).encode()
