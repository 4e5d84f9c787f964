"""The clue deadline table in force: how long each department has to close (or escalate)
a clue of each severity. A department's own `clue_deadlines` row wins; otherwise the
settings' limit for the severity (`OFFSITE_CLUE_DEADLINE_RED_S`, ...). The same rule as
`service.DEADLINE_SQL`, which stamps each clue's `deadline_at`, read for every department at
once so that officers can see what they are held to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

SEVERITIES = ("red", "orange", "yellow", "blue")


@dataclass(frozen=True, slots=True)
class DepartmentDeadlines:
    department: str
    name: str
    active: bool
    within_s: dict[str, float]
    """Every severity, in seconds."""
    overridden: list[str]
    """The severities whose limit is the department's own row rather than the default."""


async def deadline_table(
    conn: psycopg.AsyncConnection[Any], defaults: Mapping[str, float]
) -> list[DepartmentDeadlines]:
    """Every registered department (inactive ones too: they may still hold clues) by
    severity, red first."""
    cur = await conn.execute(
        "SELECT d.id, d.name, d.active, s.severity, cd.within_s"
        " FROM departments d CROSS JOIN unnest(%s::text[]) WITH ORDINALITY s(severity, n)"
        " LEFT JOIN clue_deadlines cd ON cd.department = d.id AND cd.severity = s.severity"
        " ORDER BY d.id, s.n",
        (list(SEVERITIES),),
    )
    table: dict[str, DepartmentDeadlines] = {}
    for department, name, active, severity, own in await cur.fetchall():
        row = table.setdefault(department, DepartmentDeadlines(department, name, active, {}, []))
        if own is None:
            row.within_s[severity] = float(defaults[severity])
        else:
            row.within_s[severity] = float(own)
            row.overridden.append(severity)
    return list(table.values())
