"""Typed models of what devices publish (DESIGN.md, MQTT topics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec
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
EPOCH_MS_MIN: Final = 946_684_800_000
"""2000-01-01T00:00:00Z in epoch milliseconds: the floor of `EventTime`."""
EPOCH_MS_MAX: Final = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant a Python datetime holds."""
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


class GasWire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The gateway's fast decoder of a gas reading: the same fields and bounds as
    `GasReading`, decoded by msgspec at a tenth of the cost (the gas stream is the
    gateway's bulk). It never decides anything `GasReading` would decide otherwise: a
    payload it does not take whole goes to `GasReading`, which keeps the good readings and
    says what is wrong with the others, and a test holds the two to the same values
    (tests/test_wire_decoder.py).

    `ts` is taken as epoch milliseconds in the range `GasReading` accepts, or as text,
    which is then parsed by pydantic's own datetime parser (gateway/decode.py), so that
    text is read exactly as `GasReading` reads it."""

    if TYPE_CHECKING:
        ts: int | datetime
        """Epoch milliseconds, or the datetime the decoder parsed from text."""
    else:
        # msgspec takes one string-like type per union: text comes in as `str` and the
        # decoder puts the parsed datetime in its place before anything else sees it
        ts: Annotated[int, msgspec.Meta(ge=EPOCH_MS_MIN, le=EPOCH_MS_MAX)] | str
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    lel_pct: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
    co_ppm: Annotated[float, msgspec.Meta(ge=0.0, le=100_000.0)] | None = None
    valve: Literal["open", "closed"] | None = None
    fault: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)] | None = None

    @classmethod
    def of(cls, reading: GasReading) -> GasWire:
        """The same reading, from the reference decoder."""
        return cls(
            ts=reading.ts,
            seq=reading.seq,
            lel_pct=reading.lel_pct,
            co_ppm=reading.co_ppm,
            valve=reading.valve,
            fault=reading.fault,
        )


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def epoch_us(ts: int | datetime) -> int:
    """An event time as epoch microseconds, exact: `ts` in epoch milliseconds, or aware."""
    if isinstance(ts, int):
        return ts * 1000
    return (ts - EPOCH) // _MICROSECOND
