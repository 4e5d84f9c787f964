"""A clue's life after it is opened, and clues reported from outside channels.

new -> triaged (研判) -> assigned (分办) -> transferred (转办, any number of times) ->
handled (查处) -> closed with a disposition; escalated to a case from any open step; a
false alarm found at triage is closed there. Every step is a `clue_events` row (who, when,
why), a ledger entry and an alert, in the transaction that makes it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from offsite.casework import ledger
from offsite.casework.canonical import sha256_hex
from offsite.casework.records import CluePublic
from offsite.casework.service import (
    DEADLINE_SQL,
    CaseFacts,
    add_source,
    append_alert,
    clue_id_for,
    merge_lock,
    open_or_join_case,
    read_clue,
    record_event,
)

_LOG = logging.getLogger(__name__)
DEADLINE_ACTOR = "offsite:deadlines"

Action = Literal["triage", "assign", "transfer", "handle", "close", "escalate"]
Disposition = Literal["no_violation", "rectified", "penalized", "merged", "false_alarm"]
Channel = Literal["hotline_12345", "complaint", "department", "inspection", "other"]
Severity = Literal["red", "orange", "yellow", "blue"]

TRANSITIONS: dict[Action, tuple[frozenset[str], str]] = {
    "triage": (frozenset({"new"}), "triaged"),
    "assign": (frozenset({"triaged"}), "assigned"),
    "transfer": (frozenset({"assigned", "transferred"}), "transferred"),
    "handle": (frozenset({"assigned", "transferred"}), "handled"),
    # From triage: a clue found to be a false alarm or a duplicate needs no department.
    "close": (frozenset({"triaged", "handled"}), "closed"),
    "escalate": (frozenset({"new", "triaged", "assigned", "transferred", "handled"}), "escalated"),
}
"""Action: the statuses it is allowed from, and the status it leads to."""
FINISHED = ("closed", "escalated")
"""Statuses no deadline runs for: the clue is done, or its case has taken over."""


class ClueError(Exception):
    """A step that cannot be taken; `status` is the HTTP answer."""

    status = 409


class ClueNotFoundError(ClueError):
    status = 404


class TransitionRefusedError(ClueError):
    status = 409


class UnknownReferenceError(ClueError):
    """A department, subject or matter the registry does not have."""

    status = 422


@dataclass(frozen=True, slots=True)
class _Locked:
    status: str
    department: str
    severity: str
    subject_id: str | None
    matter_id: str | None
    case_id: str | None
    title: str
    opened_at: datetime
    cooperating_departments: list[str]


async def _lock(conn: psycopg.AsyncConnection[Any], clue_id: str) -> _Locked:
    cur = await conn.execute(
        "SELECT status, department, severity, subject_id, matter_id, case_id, title, opened_at,"
        " cooperating_departments FROM clues WHERE id = %s FOR UPDATE",
        (clue_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise ClueNotFoundError(f"no clue {clue_id!r}")
    return _Locked(*row)


async def _active_department(conn: psycopg.AsyncConnection[Any], department: str) -> None:
    cur = await conn.execute("SELECT active FROM departments WHERE id = %s", (department,))
    row = await cur.fetchone()
    if row is None or not row[0]:
        raise UnknownReferenceError(f"no active department {department!r}")


async def step(
    conn: psycopg.AsyncConnection[Any],
    clue_id: str,
    action: Action,
    actor: str,
    deadlines: Mapping[str, float],
    *,
    reason: str | None = None,
    department: str | None = None,
    disposition: Disposition | None = None,
) -> CluePublic:
    """Take one step in the caller's open transaction; the clue row is locked for it, so two
    officers acting at once are serialised and the second sees the first's result."""
    clue = await _lock(conn, clue_id)
    allowed, to_status = TRANSITIONS[action]
    if clue.status not in allowed:
        raise TransitionRefusedError(
            f"cannot {action} clue {clue_id} while it is {clue.status};"
            f" {action} is allowed from {', '.join(sorted(allowed))}"
        )
    payload: dict[str, Any] = {
        "clue_id": clue_id,
        "from_status": clue.status,
        "to_status": to_status,
        "reason": reason,
    }
    drafts: list[ledger.Draft] = []
    new_department = clue.department
    if action in ("assign", "transfer"):
        assert department is not None
        await _active_department(conn, department)
        if action == "transfer" and department == clue.department:
            raise TransitionRefusedError(f"clue {clue_id} is already with {department}")
        new_department = department
        # Assigned, the clock runs from when the clue came in: triage buys no time. Handed
        # on to another department, a new clock starts for it: it cannot be late for the
        # time the clue spent with the wrong one. Either way the overdue flag belonged to the
        # old deadline; the sweep flags the clue again if the new one has passed too.
        start = clue.opened_at if action == "assign" else datetime.now(UTC)
        cur = await conn.execute(
            sql.SQL(
                "UPDATE clues c SET department = %s, deadline_at = {}, overdue = false"
                " FROM (SELECT overdue FROM clues WHERE id = %s) old WHERE c.id = %s"
                " RETURNING c.deadline_at, old.overdue"
            ).format(DEADLINE_SQL),
            (
                department,
                start,
                department,
                clue.severity,
                deadlines[clue.severity],
                clue_id,
                clue_id,
            ),
        )
        changed = await cur.fetchone()
        assert changed is not None
        payload["from_department"] = clue.department
        payload["department"] = department
        payload["deadline_at"] = changed[0]
        payload["overdue_cleared"] = bool(changed[1])
    elif action == "close":
        assert disposition is not None
        await conn.execute(
            "UPDATE clues SET disposition = %s, closed_at = now() WHERE id = %s",
            (disposition, clue_id),
        )
        payload["disposition"] = disposition
    elif action == "escalate":
        if clue.case_id is not None:
            raise TransitionRefusedError(f"clue {clue_id} is already in case {clue.case_id}")
        if clue.subject_id is None or clue.matter_id is None:
            raise TransitionRefusedError(f"clue {clue_id} names no subject and matter to case")
        cur = await conn.execute(
            "SELECT s.name, m.legal_basis FROM subjects s, matters m WHERE s.id = %s AND m.id = %s",
            (clue.subject_id, clue.matter_id),
        )
        found = await cur.fetchone()
        if found is None:
            raise UnknownReferenceError(
                f"subject {clue.subject_id!r} or matter {clue.matter_id!r} is not registered"
            )
        case_id = await open_or_join_case(
            conn,
            clue_id,
            CaseFacts(
                title=f"{clue.title}: {found[0]}",
                subject_id=clue.subject_id,
                matter_id=clue.matter_id,
                # The department holding the clue now, after any transfer.
                department=clue.department,
                cooperating_departments=tuple(clue.cooperating_departments),
                legal_basis=tuple(found[1]),
            ),
            datetime.now(UTC),
            actor,
            drafts,
        )
        await conn.execute("UPDATE clues SET case_id = %s WHERE id = %s", (case_id, clue_id))
        payload["case_id"] = case_id
    await conn.execute("UPDATE clues SET status = %s WHERE id = %s", (to_status, clue_id))
    details: dict[str, Any] = {k: payload[k] for k in ("disposition", "case_id") if k in payload}
    if "deadline_at" in payload:
        details["deadline_at"] = payload["deadline_at"].isoformat()
        if payload["overdue_cleared"]:
            details["overdue_cleared"] = True
    await record_event(
        conn, clue_id, actor, to_status, clue.status, to_status, new_department, reason, details
    )
    # The clue's own entry first: it says why the case entries after it exist.
    drafts.insert(0, ledger.Draft(actor, f"clue.{to_status}", "clue", clue_id, payload))
    await ledger.append(conn, drafts)
    result = await read_clue(conn, clue_id)
    await append_alert(conn, f"clue.{to_status}", result, {"actor": actor, "reason": reason})
    _LOG.info("clue %s %s by %s", clue_id, to_status, actor)
    return result


async def acknowledge(
    conn: psycopg.AsyncConnection[Any], clue_id: str, actor: str
) -> tuple[CluePublic, bool]:
    """A duty officer has seen the alert (签收), in the caller's open transaction; returns the
    clue and whether this call acknowledged it. Only the first acknowledgement counts: a
    second (another console, a double click) changes nothing and records nothing, so who
    answered first and when stays on record. Allowed at any status: seeing an alert is not a
    lifecycle step."""
    cur = await conn.execute(
        "SELECT status, department, acknowledged_at FROM clues WHERE id = %s FOR UPDATE",
        (clue_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise ClueNotFoundError(f"no clue {clue_id!r}")
    status, department, acknowledged_at = str(row[0]), str(row[1]), row[2]
    if acknowledged_at is not None:
        return await read_clue(conn, clue_id), False
    cur = await conn.execute(
        "UPDATE clues SET acknowledged_at = now(), acknowledged_by = %s WHERE id = %s"
        " RETURNING acknowledged_at",
        (actor, clue_id),
    )
    stamped = await cur.fetchone()
    assert stamped is not None
    await record_event(conn, clue_id, actor, "acknowledged", status, status, department, None)
    await ledger.append(
        conn,
        [
            ledger.Draft(
                actor,
                "clue.acknowledged",
                "clue",
                clue_id,
                {
                    "clue_id": clue_id,
                    "status": status,
                    "department": department,
                    "acknowledged_at": stamped[0],
                },
            )
        ],
    )
    clue = await read_clue(conn, clue_id)
    # The clue again, acknowledged, as one more alert: every console updates its row, and
    # one that reconnects learns it from the sequence like any other alert.
    await append_alert(conn, "clue.acknowledged", clue, {"actor": actor})
    _LOG.info("clue %s acknowledged by %s", clue_id, actor)
    return clue, True


@dataclass(frozen=True, slots=True)
class Report:
    """A clue from an outside channel, as received."""

    channel: Channel
    subject_id: str
    matter_id: str
    description: str
    reported_at: datetime
    reference: str | None = None
    severity: Severity = "yellow"


@dataclass(frozen=True, slots=True)
class Reported:
    clue: CluePublic
    source_id: int
    merged: bool
    """True when the report joined an open clue rather than opening one."""


async def report(
    conn: psycopg.AsyncConnection[Any],
    r: Report,
    actor: str,
    merge_window: timedelta,
    deadlines: Mapping[str, float],
) -> Reported:
    """Record an outside report in the caller's open transaction: it joins the open clue of
    the same subject and matter active within the window (from a detector or another
    report), or opens a clue routed to the matter's lead department."""
    cur = await conn.execute(
        "SELECT lead_department, cooperating_departments, domain FROM matters"
        " WHERE id = %s AND active",
        (r.matter_id,),
    )
    matter = await cur.fetchone()
    if matter is None:
        raise UnknownReferenceError(f"no active matter {r.matter_id!r}")
    cur = await conn.execute("SELECT name FROM subjects WHERE id = %s", (r.subject_id,))
    subject = await cur.fetchone()
    if subject is None:
        raise UnknownReferenceError(f"no subject {r.subject_id!r}")
    await merge_lock(conn, r.subject_id, r.matter_id)
    cur = await conn.execute(
        "SELECT id, status, department FROM clues WHERE subject_id = %s AND matter_id = %s"
        " AND status <> 'closed' AND last_at >= %s::timestamptz - %s"
        " ORDER BY opened_at LIMIT 1 FOR UPDATE",
        (r.subject_id, r.matter_id, r.reported_at, merge_window),
    )
    existing = await cur.fetchone()
    source_payload = {
        "channel": r.channel,
        "reference": r.reference,
        "reported_at": r.reported_at,
        "description_sha256": sha256_hex(r.description.encode()),
    }
    if existing is not None:
        clue_id, status, department = str(existing[0]), str(existing[1]), str(existing[2])
        source_id = await add_source(
            conn, clue_id, r.channel, r.reference, r.description, r.reported_at, actor
        )
        await conn.execute(
            "UPDATE clues SET last_at = greatest(last_at, %s), updates = updates + 1 WHERE id = %s",
            (r.reported_at, clue_id),
        )
        await record_event(
            conn,
            clue_id,
            actor,
            "source_added",
            status,
            status,
            department,
            None,
            {"source_id": source_id, "channel": r.channel},
        )
        await ledger.append(
            conn,
            [
                ledger.Draft(
                    actor,
                    "clue.source_added",
                    "clue",
                    clue_id,
                    {"clue_id": clue_id, "source_id": source_id, **source_payload},
                )
            ],
        )
        clue = await read_clue(conn, clue_id)
        await append_alert(conn, "clue.source_added", clue, {"channel": r.channel})
        return Reported(clue, source_id, merged=True)

    department, cooperating, domain = str(matter[0]), list(matter[1]), matter[2]
    key = f"report|{r.channel}|{uuid.uuid4()}"
    opened_at = datetime.now(UTC)
    clue_id = clue_id_for(key)
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO clues (id, key, rule, severity, domain, subject_id, matter_id,"
            " department, cooperating_departments, title, triggered_at, opened_at, last_at,"
            " details, source, deadline_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {})"
            " RETURNING deadline_at"
        ).format(DEADLINE_SQL),
        (
            clue_id,
            key,
            f"report.{r.channel}",
            r.severity,
            domain or "other",
            r.subject_id,
            r.matter_id,
            department,
            cooperating,
            f"{r.channel} report: {subject[0]}",
            r.reported_at,
            opened_at,
            r.reported_at,
            Jsonb({"description": r.description, "reference": r.reference}),
            r.channel,
            opened_at,
            department,
            r.severity,
            deadlines[r.severity],
        ),
    )
    inserted = await cur.fetchone()
    assert inserted is not None
    source_id = await add_source(
        conn, clue_id, r.channel, r.reference, r.description, r.reported_at, actor
    )
    await record_event(
        conn, clue_id, actor, "opened", None, "new", department, None, {"channel": r.channel}
    )
    await ledger.append(
        conn,
        [
            ledger.Draft(
                actor,
                "clue.opened",
                "clue",
                clue_id,
                {
                    "clue_id": clue_id,
                    "key": key,
                    "severity": r.severity,
                    "subject_id": r.subject_id,
                    "matter_id": r.matter_id,
                    "department": department,
                    "cooperating_departments": cooperating,
                    "opened_at": opened_at,
                    "deadline_at": inserted[0],
                    "source_id": source_id,
                    **source_payload,
                },
            )
        ],
    )
    clue = await read_clue(conn, clue_id)
    await append_alert(conn, "clue.opened", clue, {"channel": r.channel})
    _LOG.info("clue %s opened from %s, routed to %s", clue_id, r.channel, department)
    return Reported(clue, source_id, merged=False)


async def mark_overdue(conn: psycopg.AsyncConnection[Any], now: datetime) -> list[str]:
    """Flag every running clue past its deadline, in one transaction of the caller's idle
    connection; returns their ids. Each gets an event, a ledger entry and an alert for the
    console. Rows another sweep holds are skipped: it flags them."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id, status, department, deadline_at FROM clues"
            " WHERE NOT overdue AND status NOT IN ('closed', 'escalated') AND deadline_at < %s"
            " ORDER BY deadline_at LIMIT 500 FOR UPDATE SKIP LOCKED",
            (now,),
        )
        rows = await cur.fetchall()
        if not rows:
            return []
        drafts: list[ledger.Draft] = []
        for clue_id, status, department, deadline_at in rows:
            await conn.execute("UPDATE clues SET overdue = true WHERE id = %s", (clue_id,))
            reason = f"deadline {deadline_at.isoformat()} passed"
            await record_event(
                conn, clue_id, DEADLINE_ACTOR, "overdue", status, status, department, reason
            )
            drafts.append(
                ledger.Draft(
                    DEADLINE_ACTOR,
                    "clue.overdue",
                    "clue",
                    clue_id,
                    {
                        "clue_id": clue_id,
                        "status": status,
                        "department": department,
                        "deadline_at": deadline_at,
                    },
                )
            )
        await ledger.append(conn, drafts)
        ids = [str(r[0]) for r in rows]
        for clue_id in ids:
            clue = await read_clue(conn, clue_id)
            await append_alert(conn, "clue.overdue", clue, {})
    _LOG.warning("%d clue(s) overdue: %s", len(ids), ", ".join(ids))
    return ids
