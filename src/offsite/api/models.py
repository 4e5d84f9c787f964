"""Public shapes of registry and telemetry answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from offsite.casework.cases import DecisionKind
from offsite.casework.lifecycle import Channel, Disposition, Severity
from offsite.casework.records import ClueDetail


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class DepartmentPublic(_Public):
    id: str
    name: str
    name_zh: str
    active: bool


class MatterPublic(_Public):
    id: str
    name: str
    domain: str | None
    lead_department: str
    cooperating_departments: list[str]
    legal_basis: list[str]
    object_type: str
    inspection_method: str
    active: bool


class SubjectPublic(_Public):
    id: str
    name: str
    kind: str
    address: str
    tags: list[str]
    risk_tier: str = Field(description="declared in the registry")
    assessed_tier: str | None = Field(description="earned by its clues and cases this year")
    effective_tier: str = Field(description="the higher of the two: what detection uses")
    assessment: dict[str, Any] | None
    active: bool


class DevicePublic(_Public):
    id: str
    domain: str
    kind: str
    subject_id: str
    matter_id: str
    model: str
    expected_interval_s: float
    attributes: dict[str, Any]
    active: bool
    status: str | None
    status_at: datetime | None
    last_reading_ts: datetime | None
    last_seq: int | None


class GasPoint(_Public):
    ts: datetime
    seq: int
    lel_pct: float
    co_ppm: float | None
    valve: str | None
    fault: str | None
    received_at: datetime


class EquipmentPoint(_Public):
    """A special-equipment reading; the fields of its kind are set, the others null."""

    ts: datetime
    seq: int
    kind: str
    speed_mps: float | None = None
    rated_speed_mps: float | None = None
    floor: int | None = None
    door: str | None = None
    moving: bool | None = None
    in_door_zone: bool | None = None
    alarm_button: bool | None = None
    load_kg: float | None = None
    mains_power: bool | None = None
    pressure_mpa: float | None = None
    temp_c: float | None = None
    water_level_mm: float | None = None
    load_t: float | None = None
    rated_load_t: float | None = None
    wind_mps: float | None = None
    received_at: datetime


class GasBucket(_Public):
    bucket: datetime
    readings: int
    lel_avg: float
    lel_min: float
    lel_max: float
    co_max: float | None


class TelemetryPage(_Public):
    device_id: str
    domain: str
    bucket: Literal["raw", "1m", "1h"]
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    points: list[GasPoint | EquipmentPoint] = Field(
        description="raw readings, when bucket is raw (always for equipment)"
    )
    buckets: list[GasBucket] = Field(description="rollups, when bucket is 1m or 1h")


class QuarantinePublic(_Public):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    payload_size: int
    payload_preview: str


class Health(_Public):
    status: str
    database: bool
    mqtt: bool | None
    storage: str
    version: str


class InvalidField(_Public):
    """One problem FastAPI found in a request (its validation error item)."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(_Public):
    """An error answer: a sentence, or for a request that fails validation, one item per
    field."""

    detail: str | list[InvalidField]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Reason = Field(None, max_length=2000, description="why: kept in the clue's history")


class ClueTriage(_Request):
    reason: str | None = _Reason


class ClueAssign(_Request):
    department: str = Field(min_length=1, max_length=100)
    reason: str | None = _Reason


class ClueTransfer(_Request):
    to_department: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=2000, description="why it belongs elsewhere")


class ClueHandle(_Request):
    note: str = Field(min_length=1, max_length=4000, description="what was done (查处)")


class ClueClose(_Request):
    disposition: Disposition
    reason: str | None = _Reason


class ClueEscalate(_Request):
    reason: str | None = _Reason


class ClueReportCreate(_Request):
    """A clue from an outside channel: the 12345 hotline, a complaint, another department."""

    channel: Channel
    subject_id: str = Field(min_length=1, max_length=200)
    matter_id: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=10_000)
    reported_at: AwareDatetime
    reference: str | None = Field(
        None, max_length=200, description="the channel's own reference, e.g. a 12345 ticket"
    )
    severity: Severity = "yellow"

    @field_validator("reported_at")
    @classmethod
    def _not_ahead(cls, value: datetime) -> datetime:
        # a report dated ahead would also hold its merge window open into the future
        if value > datetime.now(UTC) + timedelta(days=1):
            raise ValueError("reported_at is more than a day ahead of the gateway")
        return value


class ClueReportPublic(_Public):
    clue: ClueDetail
    source_id: int
    merged: bool
    joined_clue_id: str | None = Field(description="the open clue the report joined, if any")


_CaseReason = Field(None, max_length=2000, description="why: kept in the case's history")


class CaseStep(_Request):
    """investigate, decide, rectify or close a case."""

    reason: str | None = _CaseReason


class CaseDecide(_Request):
    """The decision that ends an investigation: 警告 (warning), 罚款 (fine), 责令停产停业
    (suspension), 吊销许可证照 (revocation), or 不予处罚 (no_violation)."""

    kind: DecisionKind
    amount_cny: Decimal | None = Field(
        None,
        gt=0,
        max_digits=14,
        decimal_places=2,
        description="the fine in yuan, at most two decimals: required for a fine, refused"
        " otherwise",
    )
    legal_basis: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=500)]], Field(min_length=1)]
        | None
    ) = Field(None, max_length=50, description="the provisions applied; default: the matter's")
    reason: str | None = Field(
        None, max_length=4000, description="notes on the decision: kept in the case's history"
    )

    @model_validator(mode="after")
    def _amount_for_a_fine(self) -> Self:
        if self.kind == "fine" and self.amount_cny is None:
            raise ValueError("a fine needs amount_cny")
        if self.kind != "fine" and self.amount_cny is not None:
            raise ValueError(f"amount_cny is for a fine, not for {self.kind}")
        return self


class CaseTransfer(_Request):
    to_department: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=2000, description="why it belongs elsewhere")


class CaseHandOver(_Request):
    """移送: to the judicial authorities (police, procuratorate); ends the case here."""

    recipient: str = Field(min_length=1, max_length=200, description="who receives the case")
    reason: str = Field(min_length=1, max_length=4000, description="why it is a judicial matter")


class CaseTaskCreate(_Request):
    title: str = Field(min_length=1, max_length=500)
    assignee: str = Field(min_length=1, max_length=200, description="the officer or unit")
    due_at: AwareDatetime


class CaseTaskComplete(_Request):
    note: str | None = Field(None, max_length=4000, description="what was done")


class CommandCreate(_Request):
    """A command to a device (远程执法处置): close a gas valve, take an elevator out of
    service; tracked until the device acknowledges it or `allowed_s` runs out."""

    device_id: str = Field(min_length=1, max_length=64)
    command: str = Field(
        min_length=1, max_length=64, description="by device kind, e.g. close_valve"
    )
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    case_id: str | None = Field(None, description="the case it enforces")
    reason: str | None = Field(None, max_length=2_000)
    allowed_s: float = Field(30.0, gt=0, le=86_400, description="time for the device to answer")


class CommandPublic(_Public):
    id: str
    device_id: str
    command: str
    params: dict[str, Any]
    case_id: str | None
    status: str = Field(description="sent, acked, failed or timed_out")
    reason: str | None
    issued_by: str
    issued_at: datetime
    deadline_at: datetime
    answered_at: datetime | None
    answer: dict[str, Any] | None


class DepartmentDeadlinesPublic(_Public):
    department: str
    name: str
    active: bool
    within_s: dict[Severity, float] = Field(
        description="seconds from a clue's opening (from its transfer, once transferred) to"
        " close or escalate it, by severity"
    )
    overridden: list[Severity] = Field(
        description="severities whose limit is the department's own (clue_deadlines), not"
        " the default"
    )


class DeadlineTablePublic(_Public):
    """The clue deadlines in force, department by severity (read-only)."""

    defaults: dict[Severity, float] = Field(
        description="the settings' limits (OFFSITE_CLUE_DEADLINE_RED_S, ...), seconds"
    )
    departments: list[DepartmentDeadlinesPublic]
