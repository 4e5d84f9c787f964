"""Public shapes of clues, evidence and cases, and how they are read from the database."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from psycopg import sql
from pydantic import BaseModel, ConfigDict, PlainSerializer

CLUE_FIELDS = (
    "id",
    "rule",
    "severity",
    "domain",
    "device_id",
    "subject_id",
    "matter_id",
    "department",
    "cooperating_departments",
    "status",
    "title",
    "triggered_at",
    "opened_at",
    "last_at",
    "cleared_at",
    "value",
    "peak",
    "threshold",
    "updates",
    "evidence_id",
    "case_id",
    "details",
    "source",
    "deadline_at",
    "overdue",
    "disposition",
    "closed_at",
    "acknowledged_at",
    "acknowledged_by",
)
CLUE_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, CLUE_FIELDS))
CASE_FIELDS = (
    "id",
    "number",
    "title",
    "status",
    "matter_id",
    "subject_id",
    "department",
    "cooperating_departments",
    "legal_basis",
    "opened_at",
    "opened_by",
    "closed_at",
)
CASE_COLUMNS = sql.SQL(", ").join(
    [
        *map(sql.Identifier, CASE_FIELDS),
        sql.SQL(
            "ARRAY(SELECT clue_id FROM case_clues cc WHERE cc.case_id = cases.id ORDER BY clue_id)"
        ),
    ]
)


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class CluePublic(_Public):
    id: str
    rule: str
    severity: Literal["red", "orange", "yellow", "blue"]
    domain: str
    device_id: str | None
    subject_id: str | None
    matter_id: str | None
    department: str
    cooperating_departments: list[str]
    status: str
    title: str
    triggered_at: datetime
    opened_at: datetime
    last_at: datetime
    cleared_at: datetime | None
    value: float | None
    peak: float | None
    threshold: float | None
    updates: int
    evidence_id: str | None
    case_id: str | None
    details: dict[str, Any]
    source: str
    """`detector`, or the outside channel of the report that opened it."""
    deadline_at: datetime | None
    overdue: bool
    disposition: str | None
    closed_at: datetime | None
    acknowledged_at: datetime | None
    """When a duty officer first acknowledged the alert (签收); None until then."""
    acknowledged_by: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> CluePublic:
        return cls.model_validate(dict(zip(CLUE_FIELDS, row, strict=True)))


class ClueEventPublic(_Public):
    id: int
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str
    department: str | None
    reason: str | None
    details: dict[str, Any]


class ClueSourcePublic(_Public):
    id: int
    channel: str
    reference: str | None
    description: str
    reported_at: datetime
    received_at: datetime
    actor: str


class ClueDetail(CluePublic):
    """A clue with every source that reported it and every step taken on it, oldest first."""

    sources: list[ClueSourcePublic]
    events: list[ClueEventPublic]


class CasePublic(_Public):
    id: str
    number: str
    title: str
    status: str
    matter_id: str | None
    subject_id: str | None
    department: str
    cooperating_departments: list[str]
    legal_basis: list[str]
    opened_at: datetime
    opened_by: str
    closed_at: datetime | None
    """When it was closed or handed over; None while it is open."""
    clue_ids: list[str]

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> CasePublic:
        return cls.model_validate(dict(zip((*CASE_FIELDS, "clue_ids"), row, strict=True)))


class CaseEventPublic(_Public):
    id: int
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str
    department: str | None
    reason: str | None
    details: dict[str, Any]


class CaseTaskPublic(_Public):
    id: int
    title: str
    assignee: str
    due_at: datetime
    created_at: datetime
    created_by: str
    completed_at: datetime | None
    completed_by: str | None
    note: str | None
    overdue_at: datetime | None
    """When the deadline sweep found it past due and alerted (once); kept once completed."""
    overdue: bool
    """Not completed and past its due time, as of the read."""


class CaseHandoverPublic(_Public):
    """What went to the judicial authorities (移送), and the ledger head just before."""

    at: datetime
    actor: str
    recipient: str
    reason: str
    clue_ids: list[str]
    evidence_ids: list[str]
    ledger_head_seq: int
    ledger_head_hash: str
    ledger_seq: int
    """The hand-over's own ledger entry."""


class CaseDecisionPublic(_Public):
    """The case's decision (处罚决定, or 不予处罚)."""

    kind: Literal["warning", "fine", "suspension", "revocation", "no_violation"]
    amount_cny: Annotated[Decimal, PlainSerializer(float, return_type=float)] | None
    """The fine, in yuan (two decimals); only for a fine."""
    legal_basis: list[str]
    """The provisions it rests on: as given, else the matter's."""
    note: str | None
    decided_at: datetime
    decided_by: str


class CaseDetail(CasePublic):
    """A case with every step taken on it and its tasks, oldest first."""

    events: list[CaseEventPublic]
    tasks: list[CaseTaskPublic]
    handover: CaseHandoverPublic | None
    decision: CaseDecisionPublic | None


class EvidencePublic(_Public):
    id: str
    clue_id: str
    kind: str
    created_at: datetime
    window_from: datetime
    window_to: datetime
    item_count: int
    sha256: str
    content: dict[str, Any]


class EvidenceVerification(_Public):
    evidence_id: str
    valid: bool
    stored_sha256: str
    computed_sha256: str
    source_intact: bool
    """The telemetry rows it was made from still read the same in the database."""
    problems: list[str]
