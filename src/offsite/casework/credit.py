"""A subject's risk tier from its own record (信用分级分类, with 信用修复).

Points over the last `window` (a year by default), by clue severity: red 4, orange 2,
yellow 1, blue 0; halved for a clue closed as rectified (the subject put it right), none for
one closed as a false alarm, no violation or merged into another; plus 4 for each case still
open. Tiers: under 2 points A, under 6 B, under 12 C, else D. Detection uses the higher of
this and the registry's declared tier, so a good record brings a subject back down to what
was declared, never below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SEVERITY_POINTS = {"red": 4.0, "orange": 2.0, "yellow": 1.0, "blue": 0.0}
OPEN_CASE_POINTS = 4.0
TIER_LIMITS = ((2.0, "A"), (6.0, "B"), (12.0, "C"))
"""Below each limit, that tier; at or above the last, D."""
_CLEARED = {"false_alarm": 0.0, "no_violation": 0.0, "merged": 0.0, "rectified": 0.5}


def tier_for(points: float) -> str:
    for limit, tier in TIER_LIMITS:
        if points < limit:
            return tier
    return "D"


@dataclass(frozen=True, slots=True)
class Assessment:
    subject_id: str
    tier: str
    points: float
    clues: int
    open_cases: int


async def assess(
    conn: psycopg.AsyncConnection[Any], now: datetime, window: timedelta = timedelta(days=365)
) -> list[Assessment]:
    """Recompute every active subject's assessed tier; returns those whose tier changed.
    Runs in the caller's connection, one transaction."""
    since = now - window
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT s.id, s.assessed_tier,"
            " coalesce((SELECT array_agg(c.severity || ':' || coalesce(c.disposition, ''))"
            "           FROM clues c WHERE c.subject_id = s.id AND c.opened_at >= %s"
            "           AND c.opened_at <= %s), '{}'),"
            " (SELECT count(*) FROM cases k WHERE k.subject_id = s.id"
            "  AND k.status NOT IN ('closed', 'handed_over'))"
            " FROM subjects s WHERE s.active ORDER BY s.id",
            (since, now),
        )
        changed: list[Assessment] = []
        for subject_id, before, clues, open_cases in await cur.fetchall():
            points = 0.0
            for item in clues:
                severity, _, disposition = str(item).partition(":")
                weight = _CLEARED.get(disposition, 1.0)
                points += SEVERITY_POINTS.get(severity, 0.0) * weight
            points += OPEN_CASE_POINTS * int(open_cases)
            tier = tier_for(points)
            detail = {"points": points, "clues": len(clues), "open_cases": int(open_cases)}
            await conn.execute(
                "UPDATE subjects SET assessed_tier = %s, assessed_at = %s, assessment = %s"
                " WHERE id = %s",
                (tier, now, Jsonb(detail | {"window_days": window.days}), subject_id),
            )
            if tier != before:
                changed.append(Assessment(subject_id, tier, points, len(clues), int(open_cases)))
        if changed:
            # running gateways reload their directory and judge by the new tiers
            await conn.execute("SELECT pg_notify('offsite_registry', 'credit')")
    return changed
