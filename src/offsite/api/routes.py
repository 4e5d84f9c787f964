"""`/api/v1`: registry, telemetry, clues, cases, evidence, quarantine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
import psycopg.rows
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from psycopg import sql

from offsite.access import scope
from offsite.api.auth import AUTH_RESPONSES, Actor, Principal, Reader, require_visible
from offsite.api.context import Api
from offsite.api.models import (
    CaseDecide,
    CaseHandOver,
    CaseStep,
    CaseTaskComplete,
    CaseTaskCreate,
    CaseTransfer,
    ClueAssign,
    ClueClose,
    ClueEscalate,
    ClueHandle,
    ClueReportCreate,
    ClueReportPublic,
    ClueTransfer,
    ClueTriage,
    CommandCreate,
    CommandPublic,
    DeadlineTablePublic,
    DepartmentDeadlinesPublic,
    DepartmentPublic,
    DevicePublic,
    EquipmentPoint,
    GasBucket,
    GasPoint,
    MatterPublic,
    QuarantinePublic,
    SubjectPublic,
    TelemetryPage,
)
from offsite.casework import cases as case_lifecycle
from offsite.casework import commands, lifecycle
from offsite.casework.alerts import read_alerts
from offsite.casework.deadlines import deadline_table
from offsite.casework.package import PackageError, build_package
from offsite.casework.records import (
    CASE_COLUMNS,
    CLUE_COLUMNS,
    CaseDetail,
    CasePublic,
    ClueDetail,
    ClueEventPublic,
    CluePublic,
    ClueSourcePublic,
    EvidencePublic,
    EvidenceVerification,
)
from offsite.casework.service import verify_evidence

router = APIRouter(prefix="/api/v1", responses=AUTH_RESPONSES)


async def _connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with request.app.state.api.pool.connection() as conn:
        yield conn


Db = Annotated[psycopg.AsyncConnection[Any], Depends(_connection)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


async def _rows(
    conn: psycopg.AsyncConnection[Any], query: str, *params: Any
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(query.encode(), params)
        return await cur.fetchall()


@router.get("/departments", response_model=list[DepartmentPublic], tags=["registry"])
async def departments(db: Db, _: Reader) -> list[dict[str, Any]]:
    return await _rows(db, "SELECT id, name, name_zh, active FROM departments ORDER BY id")


@router.get("/matters", response_model=list[MatterPublic], tags=["registry"])
async def matters(db: Db, _: Reader) -> list[dict[str, Any]]:
    return await _rows(
        db,
        "SELECT id, name, domain, lead_department, cooperating_departments, legal_basis,"
        " object_type, inspection_method, active FROM matters ORDER BY id",
    )


@router.get("/subjects", response_model=list[SubjectPublic], tags=["registry"])
async def subjects(db: Db, _: Reader) -> list[dict[str, Any]]:
    return await _rows(
        db,
        "SELECT id, name, kind, address, tags, risk_tier, assessed_tier,"
        " greatest(risk_tier, coalesce(assessed_tier, 'A')) AS effective_tier, assessment,"
        " active FROM subjects ORDER BY id",
    )


_DEVICE_QUERY = (
    "SELECT d.id, d.domain, d.kind, d.subject_id, d.matter_id, d.model,"
    " d.expected_interval_s, d.attributes, d.active, s.status, s.status_at,"
    " s.last_reading_ts, s.last_seq"
    " FROM devices d LEFT JOIN device_status s ON s.device_id = d.id"
)


@router.get("/devices", response_model=list[DevicePublic], tags=["registry"])
async def devices(
    db: Db, principal: Reader, domain: str | None = None, subject_id: str | None = None
) -> list[dict[str, Any]]:
    supervised = scope.device_supervised(principal.scope, sql.SQL("d.id")).as_string(db)
    return await _rows(
        db,
        _DEVICE_QUERY + " WHERE (%s::text IS NULL OR d.domain = %s)"
        f" AND (%s::text IS NULL OR d.subject_id = %s) AND {supervised} ORDER BY d.id",
        domain,
        domain,
        subject_id,
        subject_id,
    )


@router.get("/devices/{device_id}", response_model=DevicePublic, tags=["registry"])
async def device(db: Db, principal: Reader, device_id: str) -> dict[str, Any]:
    await require_visible(db, principal, "device", device_id)
    rows = await _rows(db, _DEVICE_QUERY + " WHERE d.id = %s", device_id)
    if not rows:
        raise HTTPException(404, f"no device {device_id!r}")
    return rows[0]


# `bucket=auto`: the finest resolution that keeps a range near the default 1000 points.
_AUTO_RAW = timedelta(hours=1)
_AUTO_1M = timedelta(hours=16)


@router.get(
    "/telemetry/{device_id}",
    response_model=TelemetryPage,
    response_model_by_alias=True,
    tags=["telemetry"],
)
async def telemetry(
    db: Db,
    principal: Reader,
    device_id: str,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    bucket: Annotated[Literal["auto", "raw", "1m", "1h"], Query()] = "auto",
    limit: Limit = 1000,
) -> TelemetryPage:
    """Readings of one device, oldest first; default: the last hour. Long ranges read the
    1-minute or 1-hour rollups (`bucket=auto` picks by the length of the range)."""
    await require_visible(db, principal, "device", device_id)
    rows = await _rows(db, "SELECT domain FROM devices WHERE id = %s", device_id)
    if not rows:
        raise HTTPException(404, f"no device {device_id!r}")
    domain = rows[0]["domain"]
    end = to or datetime.now(UTC)
    start = from_ or end - timedelta(hours=1)
    if start.tzinfo is None or end.tzinfo is None:
        raise HTTPException(422, "from and to must carry a UTC offset")
    if start > end:
        raise HTTPException(422, "from is after to")
    if bucket == "auto":
        span = end - start
        bucket = "raw" if span <= _AUTO_RAW else "1m" if span <= _AUTO_1M else "1h"
    page = TelemetryPage(
        device_id=device_id,
        domain=domain,
        bucket=bucket,
        from_=start,
        to=end,
        points=[],
        buckets=[],
    )
    if domain == "equipment":
        # equipment reports every few seconds: its raw rows serve any range, newest `limit`
        points = await _rows(
            db,
            "SELECT * FROM (SELECT time AS ts, seq, kind, speed_mps, rated_speed_mps, floor,"
            " door, moving, in_door_zone, alarm_button, load_kg, mains_power, pressure_mpa,"
            " temp_c, water_level_mm, load_t, rated_load_t, wind_mps, received_at"
            " FROM telemetry_equipment WHERE device_id = %s AND time >= %s AND time <= %s"
            " ORDER BY time DESC, seq DESC LIMIT %s) t ORDER BY ts, seq",
            device_id,
            start,
            end,
            limit,
        )
        return page.model_copy(
            update={"bucket": "raw", "points": [EquipmentPoint(**p) for p in points]}
        )
    if domain != "gas":
        return page
    if bucket == "raw":
        points = await _rows(
            db,
            "SELECT * FROM (SELECT time AS ts, seq, lel_pct, co_ppm, valve, fault, received_at"
            " FROM telemetry_gas WHERE device_id = %s AND time >= %s AND time <= %s"
            " ORDER BY time DESC, seq DESC LIMIT %s) t ORDER BY ts, seq",
            device_id,
            start,
            end,
            limit,
        )
        return page.model_copy(update={"points": [GasPoint(**p) for p in points]})
    relation = sql.Identifier(f"telemetry_gas_{bucket}")
    async with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT * FROM (SELECT bucket, readings, lel_avg, lel_min, lel_max, co_max"
                " FROM {} WHERE device_id = %s AND bucket >= %s AND bucket <= %s"
                " ORDER BY bucket DESC LIMIT %s) t ORDER BY bucket"
            ).format(relation),
            (device_id, start, end, limit),
        )
        buckets = [GasBucket(**r) for r in await cur.fetchall()]
    return page.model_copy(update={"buckets": buckets})


@router.get("/clues", response_model=list[CluePublic], tags=["clues"])
async def clues(
    db: Db,
    principal: Reader,
    device_id: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    domain: str | None = None,
    limit: Limit = 200,
) -> list[CluePublic]:
    cur = await db.execute(
        sql.SQL(
            "SELECT {} FROM clues WHERE (%s::text IS NULL OR device_id = %s)"
            " AND (%s::text IS NULL OR status = %s) AND (%s::text IS NULL OR severity = %s)"
            " AND (%s::timestamptz IS NULL OR opened_at >= %s)"
            " AND (%s::text IS NULL OR domain = %s) AND {}"
            " ORDER BY opened_at DESC, id LIMIT %s"
        ).format(CLUE_COLUMNS, scope.routed_to(principal.scope)),
        (
            device_id,
            device_id,
            status,
            status,
            severity,
            severity,
            since,
            since,
            domain,
            domain,
            limit,
        ),
    )
    return [CluePublic.from_row(r) for r in await cur.fetchall()]


async def _detail(db: psycopg.AsyncConnection[Any], clue_id: str) -> ClueDetail:
    cur = await db.execute(
        sql.SQL("SELECT {} FROM clues WHERE id = %s").format(CLUE_COLUMNS), (clue_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no clue {clue_id!r}")
    sources = await _rows(
        db,
        "SELECT id, channel, reference, description, reported_at, received_at, actor"
        " FROM clue_sources WHERE clue_id = %s ORDER BY id",
        clue_id,
    )
    events = await _rows(
        db,
        "SELECT id, at, actor, action, from_status, to_status, department, reason, details"
        " FROM clue_events WHERE clue_id = %s ORDER BY id",
        clue_id,
    )
    return ClueDetail(
        **CluePublic.from_row(row).model_dump(),
        sources=[ClueSourcePublic(**r) for r in sources],
        events=[ClueEventPublic(**r) for r in events],
    )


@router.get("/clues/{clue_id}", response_model=ClueDetail, tags=["clues"])
async def clue(db: Db, principal: Reader, clue_id: str) -> ClueDetail:
    """The clue with its sources and its history (every step: who, when, why)."""
    await require_visible(db, principal, "clue", clue_id)
    return await _detail(db, clue_id)


def _deadlines(request: Request) -> dict[str, float]:
    deadlines: dict[str, float] = request.app.state.api.settings.clue_deadlines_s()
    return deadlines


async def _step(
    request: Request,
    db: psycopg.AsyncConnection[Any],
    clue_id: str,
    action: lifecycle.Action,
    principal: Principal,
    **fields: Any,
) -> ClueDetail:
    try:
        async with db.transaction():
            await require_visible(db, principal, "clue", clue_id, lock=True)
            await lifecycle.step(
                db, clue_id, action, principal.actor, _deadlines(request), **fields
            )
    except lifecycle.ClueError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return await _detail(db, clue_id)


async def _matter_names(db: psycopg.AsyncConnection[Any], matter_id: str, department: str) -> None:
    """A department officer reports only on matters their department leads or cooperates
    on (the matters list is public, so saying no here leaks nothing)."""
    cur = await db.execute(
        "SELECT lead_department, cooperating_departments FROM matters WHERE id = %s",
        (matter_id,),
    )
    row = await cur.fetchone()
    if row is not None and department != row[0] and department not in row[1]:
        raise HTTPException(403, f"matter {matter_id!r} does not name department {department!r}")


@router.get("/deadlines", response_model=DeadlineTablePublic, tags=["clues"])
async def deadlines(request: Request, db: Db, _: Reader) -> DeadlineTablePublic:
    """How long each department has to close a clue of each severity: its own limit where
    it has one, else the settings' default."""
    defaults = _deadlines(request)
    table = await deadline_table(db, defaults)
    return DeadlineTablePublic(
        defaults=defaults,
        departments=[
            DepartmentDeadlinesPublic(
                department=d.department,
                name=d.name,
                active=d.active,
                within_s=d.within_s,
                overridden=d.overridden,
            )
            for d in table
        ],
    )


@router.post(
    "/clues",
    response_model=ClueReportPublic,
    status_code=201,
    tags=["clues"],
    responses={200: {"model": ClueReportPublic, "description": "joined an open clue"}},
)
async def report_clue(
    request: Request, response: Response, db: Db, principal: Actor, body: ClueReportCreate
) -> ClueReportPublic:
    """A clue from an outside channel, routed by the matters list (lead department; the
    cooperating departments recorded). A report about the subject and matter of an open
    clue active within `OFFSITE_CLUE_MERGE_WINDOW_S` joins it (200, `merged`) instead of
    opening another (201)."""
    settings = request.app.state.api.settings
    try:
        async with db.transaction():
            if principal.scope is not None:
                await _matter_names(db, body.matter_id, principal.scope)
            reported = await lifecycle.report(
                db,
                lifecycle.Report(
                    channel=body.channel,
                    subject_id=body.subject_id,
                    matter_id=body.matter_id,
                    description=body.description,
                    reported_at=body.reported_at,
                    reference=body.reference,
                    severity=body.severity,
                ),
                principal.actor,
                timedelta(seconds=settings.clue_merge_window_s),
                settings.clue_deadlines_s(),
            )
            if not await scope.visible(db, "clue", principal.scope, reported.clue.id):
                raise HTTPException(
                    403, "the open clue on this subject and matter is with another department"
                )
    except lifecycle.ClueError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    if reported.merged:
        response.status_code = 200
    return ClueReportPublic(
        clue=await _detail(db, reported.clue.id),
        source_id=reported.source_id,
        merged=reported.merged,
        joined_clue_id=reported.clue.id if reported.merged else None,
    )


@router.post("/clues/{clue_id}/acknowledge", response_model=ClueDetail, tags=["clues"])
async def acknowledge_clue(db: Db, principal: Actor, clue_id: str) -> ClueDetail:
    """签收: a duty officer has seen the alert. Idempotent: a second acknowledgement keeps
    the first officer and time (`acknowledged_by`, `acknowledged_at`)."""
    try:
        async with db.transaction():
            await require_visible(db, principal, "clue", clue_id, lock=True)
            await lifecycle.acknowledge(db, clue_id, principal.actor)
    except lifecycle.ClueError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return await _detail(db, clue_id)


@router.post("/clues/{clue_id}/triage", response_model=ClueDetail, tags=["clues"])
async def triage_clue(
    request: Request, db: Db, principal: Actor, clue_id: str, body: ClueTriage
) -> ClueDetail:
    """研判: a new clue has been looked at."""
    return await _step(request, db, clue_id, "triage", principal, reason=body.reason)


@router.post("/clues/{clue_id}/assign", response_model=ClueDetail, tags=["clues"])
async def assign_clue(
    request: Request, db: Db, principal: Actor, clue_id: str, body: ClueAssign
) -> ClueDetail:
    """分办: a triaged clue goes to the department that will handle it."""
    return await _step(
        request, db, clue_id, "assign", principal, department=body.department, reason=body.reason
    )


@router.post("/clues/{clue_id}/transfer", response_model=ClueDetail, tags=["clues"])
async def transfer_clue(
    request: Request, db: Db, principal: Actor, clue_id: str, body: ClueTransfer
) -> ClueDetail:
    """转办: an assigned clue belongs to another department; the reason is required."""
    return await _step(
        request,
        db,
        clue_id,
        "transfer",
        principal,
        department=body.to_department,
        reason=body.reason,
    )


@router.post("/clues/{clue_id}/handle", response_model=ClueDetail, tags=["clues"])
async def handle_clue(
    request: Request, db: Db, principal: Actor, clue_id: str, body: ClueHandle
) -> ClueDetail:
    """查处: the department has dealt with it; the note says how."""
    return await _step(request, db, clue_id, "handle", principal, reason=body.note)


@router.post("/clues/{clue_id}/close", response_model=ClueDetail, tags=["clues"])
async def close_clue(
    request: Request, db: Db, principal: Actor, clue_id: str, body: ClueClose
) -> ClueDetail:
    """Closed with a disposition, after handling (or at triage, e.g. a false alarm)."""
    return await _step(
        request, db, clue_id, "close", principal, disposition=body.disposition, reason=body.reason
    )


@router.post("/clues/{clue_id}/escalate", response_model=ClueDetail, tags=["clues"])
async def escalate_clue(
    request: Request, db: Db, principal: Actor, clue_id: str, body: ClueEscalate
) -> ClueDetail:
    """Escalated to a case: filed with the department holding the clue, or joining the open
    case of the same subject and matter."""
    return await _step(request, db, clue_id, "escalate", principal, reason=body.reason)


@router.get("/cases", response_model=list[CasePublic], tags=["cases"])
async def cases(
    db: Db,
    principal: Reader,
    status: str | None = None,
    department: str | None = None,
    limit: Limit = 200,
) -> list[CasePublic]:
    cur = await db.execute(
        sql.SQL(
            "SELECT {} FROM cases WHERE (%s::text IS NULL OR status = %s)"
            " AND (%s::text IS NULL OR department = %s) AND {}"
            " ORDER BY opened_at DESC LIMIT %s"
        ).format(CASE_COLUMNS, scope.routed_to(principal.scope)),
        (status, status, department, department, limit),
    )
    return [CasePublic.from_row(r) for r in await cur.fetchall()]


async def _case_detail(db: psycopg.AsyncConnection[Any], case_id: str) -> CaseDetail:
    try:
        return await case_lifecycle.read_detail(db, case_id)
    except case_lifecycle.CaseError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/cases/{case_id}", response_model=CaseDetail, tags=["cases"])
async def case(db: Db, principal: Reader, case_id: str) -> CaseDetail:
    """The case with its clues, its history (every step: who, when, why), its tasks (the
    overdue ones flagged) and, once handed over, the record of what went."""
    await require_visible(db, principal, "case", case_id)
    return await _case_detail(db, case_id)


async def _case_step(
    db: psycopg.AsyncConnection[Any],
    case_id: str,
    action: case_lifecycle.Action,
    principal: Principal,
    **fields: Any,
) -> CaseDetail:
    try:
        async with db.transaction():
            await require_visible(db, principal, "case", case_id, lock=True)
            await case_lifecycle.step(db, case_id, action, principal.actor, **fields)
    except case_lifecycle.CaseError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return await _case_detail(db, case_id)


@router.post("/cases/{case_id}/investigate", response_model=CaseDetail, tags=["cases"])
async def investigate_case(db: Db, principal: Actor, case_id: str, body: CaseStep) -> CaseDetail:
    """A filed case is being investigated."""
    return await _case_step(db, case_id, "investigate", principal, reason=body.reason)


@router.post("/cases/{case_id}/decide", response_model=CaseDetail, tags=["cases"])
async def decide_case(db: Db, principal: Actor, case_id: str, body: CaseDecide) -> CaseDetail:
    """The investigation ends in a decision: its kind, the amount of a fine, the legal
    basis (default: the matter's); the reason holds the notes."""
    decision = case_lifecycle.Decision(
        kind=body.kind,
        amount_cny=body.amount_cny,
        legal_basis=None if body.legal_basis is None else tuple(body.legal_basis),
    )
    return await _case_step(db, case_id, "decide", principal, reason=body.reason, decision=decision)


@router.post("/cases/{case_id}/rectify", response_model=CaseDetail, tags=["cases"])
async def rectify_case(db: Db, principal: Actor, case_id: str, body: CaseStep) -> CaseDetail:
    """The subject is rectifying what the decision ordered."""
    return await _case_step(db, case_id, "rectify", principal, reason=body.reason)


@router.post("/cases/{case_id}/close", response_model=CaseDetail, tags=["cases"])
async def close_case(db: Db, principal: Actor, case_id: str, body: CaseStep) -> CaseDetail:
    """Closed: after rectification, after a decision needing none, or after an
    investigation finding nothing to answer."""
    return await _case_step(db, case_id, "close", principal, reason=body.reason)


@router.post("/cases/{case_id}/transfer", response_model=CaseDetail, tags=["cases"])
async def transfer_case(db: Db, principal: Actor, case_id: str, body: CaseTransfer) -> CaseDetail:
    """To another department; the status stays, the reason is required."""
    return await _case_step(
        db, case_id, "transfer", principal, department=body.to_department, reason=body.reason
    )


@router.post("/cases/{case_id}/hand-over", response_model=CaseDetail, tags=["cases"])
async def hand_over_case(db: Db, principal: Actor, case_id: str, body: CaseHandOver) -> CaseDetail:
    """移送 to the judicial authorities: ends the case here, recording its clues, their
    evidence, the recipient, the reason and the ledger head at the hand-over."""
    return await _case_step(
        db, case_id, "hand_over", principal, recipient=body.recipient, reason=body.reason
    )


@router.post("/cases/{case_id}/tasks", response_model=CaseDetail, status_code=201, tags=["cases"])
async def add_case_task(db: Db, principal: Actor, case_id: str, body: CaseTaskCreate) -> CaseDetail:
    """A task on an open case: a title, an assignee and a due time."""
    try:
        async with db.transaction():
            await require_visible(db, principal, "case", case_id)
            await case_lifecycle.add_task(
                db, case_id, principal.actor, body.title, body.assignee, body.due_at
            )
    except case_lifecycle.CaseError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return await _case_detail(db, case_id)


@router.post("/cases/{case_id}/tasks/{task_id}/complete", response_model=CaseDetail, tags=["cases"])
async def complete_case_task(
    db: Db, principal: Actor, case_id: str, task_id: int, body: CaseTaskComplete
) -> CaseDetail:
    try:
        async with db.transaction():
            await require_visible(db, principal, "case", case_id)
            await case_lifecycle.complete_task(db, case_id, task_id, principal.actor, body.note)
    except case_lifecycle.CaseError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return await _case_detail(db, case_id)


@router.get(
    "/evidence/{evidence_id}/frames/{index}",
    tags=["evidence"],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the frame as sent"}},
)
async def evidence_frame(db: Db, principal: Reader, evidence_id: str, index: int) -> Response:
    """One camera frame fixed in a clue's evidence, byte for byte as the camera sent it;
    its SHA-256 is in the evidence content and in the `ETag`."""
    missing = f"no frame {index} in evidence {evidence_id!r}"
    await require_visible(db, principal, "evidence", evidence_id, missing)
    cur = await db.execute(
        "SELECT jpeg, sha256, ts FROM evidence_frames WHERE evidence_id = %s AND idx = %s",
        (evidence_id, index),
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, missing)
    return Response(
        bytes(row[0]),
        media_type="image/jpeg",
        headers={"ETag": f'"{row[1]}"', "X-Offsite-Frame-Time": row[2].isoformat()},
    )


@router.get("/evidence/{evidence_id}", response_model=EvidencePublic, tags=["evidence"])
async def evidence(db: Db, principal: Reader, evidence_id: str) -> EvidencePublic:
    await require_visible(db, principal, "evidence", evidence_id)
    cur = await db.execute(
        "SELECT id, clue_id, kind, created_at, window_from, window_to, item_count, sha256,"
        " content FROM evidence WHERE id = %s",
        (evidence_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no evidence {evidence_id!r}")
    try:
        content = json.loads(row[8])
    except ValueError:
        content = {"unreadable": row[8][:1000]}
    return EvidencePublic(
        id=row[0],
        clue_id=row[1],
        kind=row[2],
        created_at=row[3],
        window_from=row[4],
        window_to=row[5],
        item_count=row[6],
        sha256=row[7],
        content=content,
    )


@router.get(
    "/evidence/{evidence_id}/verify", response_model=EvidenceVerification, tags=["evidence"]
)
async def evidence_verify(db: Db, principal: Reader, evidence_id: str) -> dict[str, Any]:
    """Recompute the SHA-256 over the stored content and compare; re-read the source."""
    await require_visible(db, principal, "evidence", evidence_id)
    result = await verify_evidence(db, evidence_id)
    if result is None:
        raise HTTPException(404, f"no evidence {evidence_id!r}")
    return result


@router.get(
    "/evidence/{evidence_id}/export",
    tags=["evidence"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the package"}},
)
async def evidence_export(
    request: Request, db: Db, principal: Reader, evidence_id: str
) -> Response:
    """A zip that `offsite evidence verify` checks with no database: manifest (signed),
    the items, the ledger entries that fixed them and a signed checkpoint covering them
    (made now if none covers them yet)."""
    await require_visible(db, principal, "evidence", evidence_id)
    try:
        package = await build_package(db, evidence_id, request.app.state.api.runtime.ledger_key)
    except PackageError as exc:
        raise HTTPException(409, str(exc)) from None
    if package is None:
        raise HTTPException(404, f"no evidence {evidence_id!r}")
    return Response(
        package,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{evidence_id}.zip"'},
    )


@router.get("/quarantine", response_model=list[QuarantinePublic], tags=["ingest"])
async def quarantine(
    db: Db, principal: Reader, device_id: str | None = None, limit: Limit = 100
) -> list[QuarantinePublic]:
    cur = await db.execute(
        sql.SQL(
            "SELECT id, received_at, topic, device_id, reason, payload FROM quarantine"
            " WHERE (%s::text IS NULL OR device_id = %s) AND {} ORDER BY id DESC LIMIT %s"
        ).format(scope.device_supervised(principal.scope, sql.SQL("quarantine.device_id"))),
        (device_id, device_id, limit),
    )
    return [
        QuarantinePublic(
            id=r[0],
            received_at=r[1],
            topic=r[2],
            device_id=r[3],
            reason=r[4],
            payload_size=len(r[5]),
            payload_preview=bytes(r[5][:256]).decode("utf-8", errors="replace"),
        )
        for r in await cur.fetchall()
    ]


@router.get("/alerts", tags=["alerts"])
async def alerts(
    db: Db, principal: Reader, after: Annotated[int, Query(ge=0)] = 0, limit: Limit = 1000
) -> list[dict[str, Any]]:
    """Alerts after a sequence number: what a console missed while away."""
    return [a.to_json() for a in await read_alerts(db, after, limit, principal.scope)]


def _command_public(cmd: commands.Command) -> CommandPublic:
    return CommandPublic(
        id=cmd.id,
        device_id=cmd.device_id,
        command=cmd.command,
        params=cmd.params,
        case_id=cmd.case_id,
        status=cmd.status,
        reason=cmd.reason,
        issued_by=cmd.issued_by,
        issued_at=cmd.issued_at,
        deadline_at=cmd.deadline_at,
        answered_at=cmd.answered_at,
        answer=cmd.answer,
    )


@router.post("/commands", response_model=CommandPublic, status_code=201, tags=["commands"])
async def send_command(
    request: Request, db: Db, principal: Actor, body: CommandCreate
) -> CommandPublic:
    """Send a command to a device; the device answers on `.../cmd/ack`."""
    await require_visible(db, principal, "device", body.device_id)
    if body.case_id is not None:
        await require_visible(db, principal, "case", body.case_id)
    api: Api = request.app.state.api
    try:
        cmd = await api.send_command(
            device_id=body.device_id,
            command=body.command,
            params=dict(body.params),
            case_id=body.case_id,
            reason=body.reason,
            actor=principal.actor,
            allowed_s=body.allowed_s,
        )
    except commands.CommandError as exc:
        raise HTTPException(422, str(exc)) from None
    return _command_public(cmd)


@router.get("/commands", response_model=list[CommandPublic], tags=["commands"])
async def list_commands(
    db: Db,
    principal: Reader,
    case_id: str | None = None,
    device_id: str | None = None,
    limit: Limit = 200,
) -> list[CommandPublic]:
    """Commands sent, newest first: those enforcing one case, or sent to one device (a
    department officer's: those in their scope)."""
    found = await commands.find(
        db,
        scope.command_routed(principal.scope, "c"),
        case_id=case_id,
        device_id=device_id,
        limit=limit,
    )
    return [_command_public(c) for c in found]


@router.get("/commands/{command_id}", response_model=CommandPublic, tags=["commands"])
async def command(db: Db, principal: Reader, command_id: str) -> CommandPublic:
    await require_visible(db, principal, "command", command_id)
    cmd = await commands.read(db, command_id)
    if cmd is None:
        raise HTTPException(404, f"no command {command_id!r}")
    return _command_public(cmd)
