"""Typed models of what devices publish (DESIGN.md, MQTT topics)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# Epoch numbers are milliseconds (DESIGN.md); pydantic's default would guess the unit from
# the magnitude. Parsing stays in pydantic's core: a Python validator here cost a third of
# the gateway's time under load. Offsets are kept as sent; everything downstream compares
# instants, and keys are written in UTC (detectors/findings.py).
EventTime = Annotated[
    AwareDatetime,
    Field(
        strict=False,
        ge=datetime(2000, 1, 1, tzinfo=UTC),  # a device clock that was never set
        description="RFC 3339 with an offset, or epoch milliseconds",
    ),
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NO_NUL: Final = r"^[^\x00]*$"
"""PostgreSQL text cannot hold a NUL: a reading carrying one would make its whole batch fail
at COPY. Refused here instead, as that one reading's fault."""


class Reading(BaseModel):
    """What every reading carries: event time and the device's sequence number."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, val_temporal_unit="milliseconds"
    )

    ts: EventTime = Field(description="event time at the device")
    # strict mode refuses booleans, strings and floats here without a Python hook
    seq: int = Field(ge=0, le=2**63 - 1, description="per-device sequence number")


class GasReading(Reading):
    """One reading of a combustible-gas detector."""

    lel_pct: FiniteFloat = Field(ge=0.0, le=100.0, description="combustible gas, %LEL")
    co_ppm: FiniteFloat | None = Field(None, ge=0.0, le=100_000.0, description="carbon monoxide")
    valve: Literal["open", "closed"] | None = Field(None, description="shut-off valve state")
    fault: str | None = Field(None, max_length=64, pattern=NO_NUL, description="sensor fault code")


DeviceStatus = Literal["online", "offline"]


class CommandAck(BaseModel):
    """A device's answer to a command on `.../cmd/ack`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    command_id: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    ok: bool = Field(description="the device carried the command out")
    detail: str | None = Field(None, max_length=500, pattern=NO_NUL)
