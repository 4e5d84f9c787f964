"""A case's life after it is filed, and the tasks on it.

filed (立案) -> investigating -> decision -> rectification -> closed; closed straight from
investigating (nothing to answer) or from decision (nothing to rectify); transferred to
another department from any open step (the status stays); handed over to the judicial
authorities (移送) from any open step, which ends the case here with a record of what went.
Every step is a `case_events` row (who, when, why), a ledger entry and an alert, in the
transaction that makes it, as for clues (`lifecycle`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from offsite.casework import ledger
from offsite.casework.records import (
    CASE_COLUMNS,
    CaseDecisionPublic,
    CaseDetail,
    CaseEventPublic,
    CaseHandoverPublic,
    CasePublic,
    CaseTaskPublic,
)
from offsite.casework.service import append_alert, read_clue

_LOG = logging.getLogger(__name__)

Action = Literal["investigate", "decide", "rectify", "close", "transfer", "hand_over"]
DecisionKind = Literal["warning", "fine", "suspension", "revocation", "no_violation"]
"""警告, 罚款, 责令停产停业 (suspension), 吊销许可证照 (revocation), or 不予处罚."""

OPEN = frozenset({"filed", "investigating", "decision", "rectification"})
TRANSITIONS: dict[Action, tuple[frozenset[str], str | None]] = {
    "investigate": (frozenset({"filed"}), "investigating"),
    "decide": (frozenset({"investigating"}), "decision"),
    "rectify": (frozenset({"decision"}), "rectification"),
    "close": (frozenset({"investigating", "decision", "rectification"}), "closed"),
    # None: the status stays, the department changes.
    "transfer": (OPEN, None),
    "hand_over": (OPEN, "handed_over"),
}
"""Action: the statuses it is allowed from, and the status it leads to."""
_EVENT = {"transfer": "transferred", "hand_over": "handed_over"}
"""The event (and ledger action) of a step whose name is not its status."""


class CaseError(Exception):
    """A step that cannot be taken; `status` is the HTTP answer."""

    status = 409


class CaseNotFoundError(CaseError):
    status = 404


class TransitionRefusedError(CaseError):
    status = 409


class UnknownReferenceError(CaseError):
    status = 422


class InvalidDecisionError(CaseError):
    status = 422


@dataclass(frozen=True, slots=True)
class Decision:
    """What the decision step decides; `legal_basis` None means the matter's."""

    kind: DecisionKind
    amount_cny: Decimal | None = None
    legal_basis: tuple[str, ...] | None = None

    def problems(self) -> str | None:
        if self.kind == "fine":
            if self.amount_cny is None or self.amount_cny <= 0:
                return "a fine needs amount_cny above zero"
            if self.amount_cny != self.amount_cny.quantize(Decimal("0.01")):
                return "amount_cny has at most two decimal places (fen)"
        elif self.amount_cny is not None:
            return f"amount_cny is for a fine, not for {self.kind}"
        if self.legal_basis is not None and not all(b.strip() for b in self.legal_basis):
            return "legal_basis names no empty provision"
        return None


async def _record_decision(
    conn: psycopg.AsyncConnection[Any],
    case_id: str,
    decision: Decision,
    note: str | None,
    actor: str,
) -> dict[str, Any]:
    """Store the decision; returns it as recorded (the legal basis filled in), for the
    event and the ledger, the amount as exact decimal text."""
    problem = decision.problems()
    if problem is not None:
        raise InvalidDecisionError(problem)
    basis = list(decision.legal_basis) if decision.legal_basis is not None else None
    if basis is None:
        # The matter's current provisions; the case's own copy from its filing otherwise.
        cur = await conn.execute(
            "SELECT coalesce(nullif(m.legal_basis, '{}'), c.legal_basis) FROM cases c"
            " LEFT JOIN matters m ON m.id = c.matter_id WHERE c.id = %s",
            (case_id,),
        )
        row = await cur.fetchone()
        basis = list(row[0]) if row is not None and row[0] else []
        if not basis:
            raise InvalidDecisionError(
                f"case {case_id}'s matter names no legal basis: give legal_basis"
            )
    await conn.execute(
        "INSERT INTO case_decisions (case_id, kind, amount_cny, legal_basis, note, decided_by)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (case_id, decision.kind, decision.amount_cny, basis, note, actor),
    )
    amount = None if decision.amount_cny is None else f"{decision.amount_cny:.2f}"
    return {"kind": decision.kind, "amount_cny": amount, "legal_basis": basis}


async def _lock(conn: psycopg.AsyncConnection[Any], case_id: str) -> tuple[str, str]:
    """The case's status and department, its row locked to the end of the transaction."""
    cur = await conn.execute(
        "SELECT status, department FROM cases WHERE id = %s FOR UPDATE", (case_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise CaseNotFoundError(f"no case {case_id!r}")
    return str(row[0]), str(row[1])


async def _record_event(
    conn: psycopg.AsyncConnection[Any],
    case_id: str,
    actor: str,
    action: str,
    from_status: str,
    to_status: str,
    department: str,
    reason: str | None,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO case_events (case_id, actor, action, from_status, to_status, department,"
        " reason, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (case_id, actor, action, from_status, to_status, department, reason, Jsonb(details)),
    )


async def _alert(
    conn: psycopg.AsyncConnection[Any], kind: str, case_id: str, extra: dict[str, Any]
) -> None:
    """On the live stream like a clue alert, carrying the case's first clue (consoles key
    alerts by clue) and the case itself."""
    case = await read_case(conn, case_id)
    if not case.clue_ids:
        return
    clue = await read_clue(conn, case.clue_ids[0])
    await append_alert(conn, kind, clue, {"case": case.model_dump(mode="json"), **extra})


async def step(
    conn: psycopg.AsyncConnection[Any],
    case_id: str,
    action: Action,
    actor: str,
    *,
    reason: str | None = None,
    department: str | None = None,
    recipient: str | None = None,
    decision: Decision | None = None,
) -> CasePublic:
    """Take one step in the caller's open transaction; the case row is locked for it, so two
    officers acting at once are serialised and the second sees the first's result."""
    status, current_department = await _lock(conn, case_id)
    allowed, to = TRANSITIONS[action]
    if status not in allowed:
        raise TransitionRefusedError(
            f"cannot {action.replace('_', '-')} case {case_id} while it is {status};"
            f" allowed from {', '.join(sorted(allowed))}"
        )
    to_status = to or status
    event = _EVENT.get(action, to_status)
    payload: dict[str, Any] = {
        "case_id": case_id,
        "from_status": status,
        "to_status": to_status,
        "reason": reason,
    }
    details: dict[str, Any] = {}
    new_department = current_department
    if action == "transfer":
        assert department is not None
        cur = await conn.execute("SELECT active FROM departments WHERE id = %s", (department,))
        found = await cur.fetchone()
        if found is None or not found[0]:
            raise UnknownReferenceError(f"no active department {department!r}")
        if department == current_department:
            raise TransitionRefusedError(f"case {case_id} is already with {department}")
        new_department = department
        await conn.execute("UPDATE cases SET department = %s WHERE id = %s", (department, case_id))
        payload |= {"from_department": current_department, "department": department}
        details = {"from_department": current_department}
    elif action == "decide":
        assert decision is not None
        recorded = await _record_decision(conn, case_id, decision, reason, actor)
        payload["decision"] = recorded
        details = dict(recorded)
    elif action == "rectify":
        cur = await conn.execute("SELECT kind FROM case_decisions WHERE case_id = %s", (case_id,))
        decided = await cur.fetchone()
        if decided is not None and decided[0] == "no_violation":
            raise TransitionRefusedError(
                f"case {case_id} was decided no_violation: there is nothing to rectify; close it"
            )
    elif action == "hand_over":
        assert recipient is not None
        assert reason is not None
        cur = await conn.execute(
            "SELECT coalesce(array_agg(cc.clue_id ORDER BY cc.clue_id), '{}'),"
            " coalesce(array_agg(c.evidence_id ORDER BY c.evidence_id)"
            " FILTER (WHERE c.evidence_id IS NOT NULL), '{}')"
            " FROM case_clues cc JOIN clues c ON c.id = cc.clue_id WHERE cc.case_id = %s",
            (case_id,),
        )
        handed = await cur.fetchone()
        assert handed is not None
        clue_ids, evidence_ids = list(handed[0]), list(handed[1])
        payload |= {"recipient": recipient, "clue_ids": clue_ids, "evidence_ids": evidence_ids}
        details = {"recipient": recipient}
    if to_status != status:
        await conn.execute(
            "UPDATE cases SET status = %s,"
            " closed_at = CASE WHEN %s IN ('closed', 'handed_over') THEN now() END"
            " WHERE id = %s",
            (to_status, to_status, case_id),
        )
    await _record_event(
        conn, case_id, actor, event, status, to_status, new_department, reason, details
    )
    # Last in the transaction but for the records that cite the entry: the ledger's lock is
    # held from here to the commit.
    entries = await ledger.append(
        conn, [ledger.Draft(actor, f"case.{event}", "case", case_id, payload)]
    )
    if action == "hand_over":
        entry = entries[0]
        # The entry's predecessor is the head at the hand-over: the chain up to it is what
        # went with the case.
        await conn.execute(
            "INSERT INTO case_handovers (case_id, actor, recipient, reason, clue_ids,"
            " evidence_ids, ledger_head_seq, ledger_head_hash, ledger_seq)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                case_id,
                actor,
                recipient,
                reason,
                payload["clue_ids"],
                payload["evidence_ids"],
                entry.seq - 1,
                entry.prev_hash,
                entry.seq,
            ),
        )
    await _alert(conn, f"case.{event}", case_id, {"actor": actor, "reason": reason})
    _LOG.info("case %s %s by %s", case_id, event, actor)
    return await read_case(conn, case_id)


async def add_task(
    conn: psycopg.AsyncConnection[Any],
    case_id: str,
    actor: str,
    title: str,
    assignee: str,
    due_at: datetime,
) -> int:
    """A task on an open case, in the caller's open transaction; returns its id."""
    status, department = await _lock(conn, case_id)
    if status not in OPEN:
        raise TransitionRefusedError(f"case {case_id} is {status}: it takes no more tasks")
    cur = await conn.execute(
        "INSERT INTO case_tasks (case_id, title, assignee, due_at, created_by)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (case_id, title, assignee, due_at, actor),
    )
    row = await cur.fetchone()
    assert row is not None
    task_id = int(row[0])
    details = {"task_id": task_id, "title": title, "assignee": assignee, "due_at": due_at}
    await _record_event(
        conn,
        case_id,
        actor,
        "task_created",
        status,
        status,
        department,
        None,
        {**details, "due_at": due_at.isoformat()},
    )
    await ledger.append(
        conn,
        [
            ledger.Draft(
                actor, "case.task_created", "case", case_id, {"case_id": case_id, **details}
            )
        ],
    )
    await _alert(conn, "case.task_created", case_id, {"actor": actor, "task_id": task_id})
    return task_id


async def complete_task(
    conn: psycopg.AsyncConnection[Any],
    case_id: str,
    task_id: int,
    actor: str,
    note: str | None,
) -> None:
    status, department = await _lock(conn, case_id)
    cur = await conn.execute(
        "SELECT completed_at FROM case_tasks WHERE id = %s AND case_id = %s FOR UPDATE",
        (task_id, case_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise CaseNotFoundError(f"no task {task_id} on case {case_id}")
    if row[0] is not None:
        raise TransitionRefusedError(f"task {task_id} was completed at {row[0].isoformat()}")
    if status not in OPEN:
        raise TransitionRefusedError(f"case {case_id} is {status}: its tasks are frozen")
    await conn.execute(
        "UPDATE case_tasks SET completed_at = now(), completed_by = %s, note = %s WHERE id = %s",
        (actor, note, task_id),
    )
    await _record_event(
        conn,
        case_id,
        actor,
        "task_completed",
        status,
        status,
        department,
        note,
        {"task_id": task_id},
    )
    await ledger.append(
        conn,
        [
            ledger.Draft(
                actor,
                "case.task_completed",
                "case",
                case_id,
                {"case_id": case_id, "task_id": task_id, "note": note},
            )
        ],
    )
    await _alert(conn, "case.task_completed", case_id, {"actor": actor, "task_id": task_id})


DEADLINE_ACTOR = "offsite:deadlines"


async def mark_overdue_tasks(conn: psycopg.AsyncConnection[Any], now: datetime) -> list[int]:
    """Flag every task of an open case past its due time and not completed, in one
    transaction of the caller's idle connection; returns their ids. Each is flagged once
    (`overdue_at`) with a `task_overdue` event, a `case.task_overdue` ledger entry and an
    alert for the console. Rows another sweep holds are skipped: it flags them. The tasks
    of a closed or handed-over case are frozen and raise nothing."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT t.id, t.case_id, t.title, t.assignee, t.due_at, c.status, c.department"
            " FROM case_tasks t JOIN cases c ON c.id = t.case_id"
            " WHERE t.completed_at IS NULL AND t.overdue_at IS NULL AND t.due_at < %s"
            " AND c.status = ANY(%s)"
            " ORDER BY t.due_at, t.id LIMIT 500 FOR UPDATE OF t SKIP LOCKED",
            (now, sorted(OPEN)),
        )
        rows = await cur.fetchall()
        if not rows:
            return []
        drafts: list[ledger.Draft] = []
        for task_id, case_id, title, assignee, due_at, status, department in rows:
            await conn.execute(
                "UPDATE case_tasks SET overdue_at = %s WHERE id = %s", (now, task_id)
            )
            details = {"task_id": task_id, "title": title, "assignee": assignee}
            await _record_event(
                conn,
                case_id,
                DEADLINE_ACTOR,
                "task_overdue",
                status,
                status,
                department,
                f"task due {due_at.isoformat()} not completed",
                {**details, "due_at": due_at.isoformat()},
            )
            drafts.append(
                ledger.Draft(
                    DEADLINE_ACTOR,
                    "case.task_overdue",
                    "case",
                    case_id,
                    {"case_id": case_id, **details, "due_at": due_at},
                )
            )
        await ledger.append(conn, drafts)
        for task_id, case_id, title, assignee, due_at, *_ in rows:
            await _alert(
                conn,
                "case.task_overdue",
                case_id,
                {
                    "task_id": task_id,
                    "title": title,
                    "assignee": assignee,
                    "due_at": due_at.isoformat(),
                },
            )
    ids = [int(r[0]) for r in rows]
    _LOG.warning("%d case task(s) overdue: %s", len(ids), ", ".join(map(str, ids)))
    return ids


async def read_case(conn: psycopg.AsyncConnection[Any], case_id: str) -> CasePublic:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM cases WHERE id = %s").format(CASE_COLUMNS), (case_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise CaseNotFoundError(f"no case {case_id!r}")
    return CasePublic.from_row(row)


async def read_detail(conn: psycopg.AsyncConnection[Any], case_id: str) -> CaseDetail:
    """The case with its history, its tasks (overdue ones flagged as of now) and its
    hand-over record, if it went to the judicial authorities."""
    case = await read_case(conn, case_id)
    cur = await conn.execute(
        "SELECT id, at, actor, action, from_status, to_status, department, reason, details"
        " FROM case_events WHERE case_id = %s ORDER BY id",
        (case_id,),
    )
    event_fields = CaseEventPublic.model_fields.keys()
    events = [
        CaseEventPublic.model_validate(dict(zip(event_fields, r, strict=True)))
        for r in await cur.fetchall()
    ]
    cur = await conn.execute(
        "SELECT id, title, assignee, due_at, created_at, created_by, completed_at,"
        " completed_by, note, overdue_at, completed_at IS NULL AND due_at < now()"
        " FROM case_tasks WHERE case_id = %s ORDER BY id",
        (case_id,),
    )
    task_fields = CaseTaskPublic.model_fields.keys()
    tasks = [
        CaseTaskPublic.model_validate(dict(zip(task_fields, r, strict=True)))
        for r in await cur.fetchall()
    ]
    cur = await conn.execute(
        "SELECT at, actor, recipient, reason, clue_ids, evidence_ids, ledger_head_seq,"
        " ledger_head_hash, ledger_seq FROM case_handovers WHERE case_id = %s",
        (case_id,),
    )
    row = await cur.fetchone()
    handover = (
        CaseHandoverPublic.model_validate(
            dict(zip(CaseHandoverPublic.model_fields.keys(), row, strict=True))
        )
        if row is not None
        else None
    )
    cur = await conn.execute(
        "SELECT kind, amount_cny, legal_basis, note, decided_at, decided_by"
        " FROM case_decisions WHERE case_id = %s",
        (case_id,),
    )
    row = await cur.fetchone()
    decision = (
        CaseDecisionPublic.model_validate(
            dict(zip(CaseDecisionPublic.model_fields.keys(), row, strict=True))
        )
        if row is not None
        else None
    )
    return CaseDetail(
        **case.model_dump(), events=events, tasks=tasks, handover=handover, decision=decision
    )
