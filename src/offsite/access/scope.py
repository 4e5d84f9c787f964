"""What a department officer may see: the clues and cases routed to their department.

A clue or case is in a department's scope when the department leads it (`department`) or
cooperates on it (`cooperating_departments`). Evidence, frames, exports and alerts follow
their clue; a command follows its case, or its device when it has none.

Devices (registry, telemetry, quarantine): a department supervises the devices registered
under a matter that names it (lead or cooperating; the matters list is what routes clues in
the first place), and any device with a clue in its scope (a clue transferred to it, say).
Subjects, departments and matters are the shared directory and are seen by everyone.

Everything here takes the department (`Principal.scope`); None means no restriction. The
department goes into the SQL as a quoted literal (`sql.Literal`), so that the fragments drop
into any query whatever its placeholders; it is a registry id (`[A-Za-z0-9_.-]`, no `%`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import psycopg
from psycopg import sql

Kind = Literal["clue", "case", "evidence", "device", "command"]


def routed_to(department: str | None, table: str = "") -> sql.Composable:
    """SQL true for rows of `clues` or `cases` (or an alias) routed to the department."""
    if department is None:
        return sql.SQL("true")
    dep = sql.Literal(department)
    prefix = sql.SQL(f"{table}." if table else "")
    return sql.SQL("({p}department = {d} OR {d} = ANY({p}cooperating_departments))").format(
        p=prefix, d=dep
    )


def device_supervised(department: str | None, device_column: sql.Composable) -> sql.Composable:
    """SQL true when the device whose id is `device_column` is supervised by the department.
    Qualify the column (`quarantine.device_id`): a bare `device_id` would be read as the
    inner `clues.device_id` and match every device."""
    if department is None:
        return sql.SQL("true")
    dep = sql.Literal(department)
    return sql.SQL(
        "(EXISTS (SELECT 1 FROM devices sd JOIN matters sm ON sm.id = sd.matter_id"
        " WHERE sd.id = {dev} AND (sm.lead_department = {d}"
        " OR {d} = ANY(sm.cooperating_departments)))"
        " OR EXISTS (SELECT 1 FROM clues sc WHERE sc.device_id = {dev} AND {clue}))"
    ).format(dev=device_column, d=dep, clue=routed_to(department, "sc"))


def command_routed(department: str | None, table: str) -> sql.Composable:
    """SQL true for rows of `device_commands` (aliased `table`) in the department's scope:
    by their case, or by their device when they have none."""
    if department is None:
        return sql.SQL("true")
    t = sql.Identifier(table)
    return sql.SQL(
        "(({t}.case_id IS NOT NULL AND EXISTS (SELECT 1 FROM cases sk"
        " WHERE sk.id = {t}.case_id AND {case}))"
        " OR ({t}.case_id IS NULL AND {device}))"
    ).format(
        t=t,
        case=routed_to(department, "sk"),
        device=device_supervised(department, sql.SQL("{}.device_id").format(t)),
    )


def _visible_query(kind: Kind, department: str) -> sql.Composed:
    match kind:
        case "clue":
            return sql.SQL("SELECT 1 FROM clues WHERE id = %s AND {}").format(routed_to(department))
        case "case":
            return sql.SQL("SELECT 1 FROM cases WHERE id = %s AND {}").format(routed_to(department))
        case "evidence":
            return sql.SQL(
                "SELECT 1 FROM evidence e JOIN clues c ON c.id = e.clue_id WHERE e.id = %s AND {}"
            ).format(routed_to(department, "c"))
        case "device":
            return sql.SQL("SELECT 1 FROM devices d WHERE d.id = %s AND {}").format(
                device_supervised(department, sql.SQL("d.id"))
            )
        case "command":
            return sql.SQL("SELECT 1 FROM device_commands dc WHERE dc.id = %s AND {}").format(
                command_routed(department, "dc")
            )


async def visible(
    conn: psycopg.AsyncConnection[Any],
    kind: Kind,
    department: str | None,
    object_id: str,
    *,
    lock: bool = False,
) -> bool:
    """Whether the object exists and is in the department's scope (any, for None). `lock`
    (in a transaction) keeps the row as judged until the transaction ends, so a transfer
    cannot slip between this check and the step that follows."""
    if department is None:
        return True
    query = _visible_query(kind, department)
    if lock:
        query = sql.SQL("{} FOR UPDATE").format(query)
    cur = await conn.execute(query, (object_id,))
    return await cur.fetchone() is not None


def _routed(department: str, record: object) -> bool:
    if not isinstance(record, Mapping):
        return False
    cooperating = record.get("cooperating_departments") or ()
    return record.get("department") == department or department in cooperating


def alert_visible(department: str | None, body: Mapping[str, Any]) -> bool:
    """An alert is in scope when the clue or the case it carries was routed to the
    department at the time it was raised."""
    if department is None:
        return True
    return _routed(department, body.get("clue")) or _routed(department, body.get("case"))


def alert_filter(department: str | None) -> sql.Composable:
    """`alert_visible` as SQL over the `alerts` table, for the replay."""
    if department is None:
        return sql.SQL("true")
    dep = sql.Literal(department)
    return sql.SQL(
        "(body->'clue'->>'department' = {d} OR body->'clue'->'cooperating_departments' ? {d}"
        " OR body->'case'->>'department' = {d}"
        " OR body->'case'->'cooperating_departments' ? {d})"
    ).format(d=dep)
