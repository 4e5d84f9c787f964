"""Typed models of what devices publish (DESIGN.md, MQTT topics)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_EPOCH_MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _parse_ts(value: object) -> object:
    """`ts` is an RFC 3339 string with an offset, or epoch milliseconds; nothing else."""
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value <= _EPOCH_MS_MAX:
            raise ValueError("ts in epoch milliseconds is out of range")
        return datetime.fromtimestamp(value / 1000.0, UTC)
    if isinstance(value, str):
        if len(value) > 40:
            raise ValueError("ts string is too long for RFC 3339")
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("ts must carry a UTC offset (RFC 3339)")
        return parsed.astimezone(UTC)
    raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")


EventTime = Annotated[datetime, BeforeValidator(_parse_ts)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Reading(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ts: EventTime = Field(description="event time at the device")
    # strict mode refuses booleans, strings and floats here without a Python hook
    seq: int = Field(ge=0, le=2**63 - 1, description="per-device sequence number")


class GasReading(_Reading):
    """One reading of a combustible-gas detector."""

    lel_pct: FiniteFloat = Field(ge=0.0, le=100.0, description="combustible gas, %LEL")
    co_ppm: FiniteFloat | None = Field(None, ge=0.0, le=100_000.0, description="carbon monoxide")
    valve: Literal["open", "closed"] | None = Field(None, description="shut-off valve state")
    fault: str | None = Field(None, max_length=64, description="sensor fault code")


DeviceStatus = Literal["online", "offline"]
