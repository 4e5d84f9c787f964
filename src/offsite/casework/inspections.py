"""Joint random inspections (双随机, 一公开): subjects drawn at random, weighted by their risk
tier, and inspectors drawn at random from the qualified roster of the matter's departments,
reproducibly from a seed, and recorded (with a ledger entry) before anyone acts on it.

The draw is pure (`draw`); `plan` reads its inputs from the database and records the result.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from offsite.casework import ledger
from offsite.casework.canonical import canonical_json, sha256_hex

TIER_WEIGHTS: dict[str, float] = {"A": 1.0, "B": 2.0, "C": 4.0, "D": 8.0}
"""A D subject is eight times as likely to be drawn as an A one (信用分级分类监管)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    risk_tier: str


@dataclass(frozen=True, slots=True)
class Inspector:
    id: str
    department: str


class InspectionError(Exception):
    """The draw cannot be made as asked (nothing to draw from, too few inspectors)."""


def _rng(seed: str, purpose: str) -> random.Random:
    # one stream per purpose, so the subjects drawn do not depend on the roster's size
    digest = hashlib.sha256(f"{purpose}\0{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311 - a public draw, not a secret


def draw(
    subjects: list[Candidate],
    inspectors: list[Inspector],
    *,
    lead_department: str,
    count: int,
    per_subject: int,
    seed: str,
) -> list[dict[str, Any]]:
    """`count` subjects without replacement, each subject's chance in proportion to its
    tier's weight (keys u^(1/w), the largest win); for each, `per_subject` distinct
    inspectors: one from the lead department, the others from other departments where the
    roster allows (a joint inspection), else from the lead department."""
    if not subjects:
        raise InspectionError("no subject under this matter to draw from")
    leads = sorted((i for i in inspectors if i.department == lead_department), key=lambda i: i.id)
    others = sorted((i for i in inspectors if i.department != lead_department), key=lambda i: i.id)
    if not leads:
        raise InspectionError(f"no qualified inspector in the lead department {lead_department!r}")
    if per_subject > len(leads) + len(others):
        raise InspectionError(f"{per_subject} inspectors a subject, {len(inspectors)} qualified")
    pick = _rng(seed, "subjects")
    ordered = sorted(subjects, key=lambda s: s.id)  # the input order must not matter
    keyed = [(pick.random() ** (1.0 / TIER_WEIGHTS.get(s.risk_tier, 1.0)), s) for s in ordered]
    chosen = [s for _, s in sorted(keyed, key=lambda k: k[0], reverse=True)[:count]]
    team_rng = _rng(seed, "inspectors")
    plan: list[dict[str, Any]] = []
    for subject in chosen:
        team = [team_rng.choice(leads)]
        pool = [i for i in others if i.department not in {t.department for t in team}]
        while len(team) < per_subject:
            if not pool:
                pool = [i for i in leads + others if i not in team]
            member = team_rng.choice(pool)
            team.append(member)
            pool = [i for i in pool if i != member and i.department != member.department]
        plan.append(
            {
                "subject_id": subject.id,
                "risk_tier": subject.risk_tier,
                "inspectors": [{"id": i.id, "department": i.department} for i in team],
            }
        )
    return plan


async def plan(
    conn: psycopg.AsyncConnection[Any],
    matter_id: str,
    *,
    count: int,
    per_subject: int,
    seed: str,
    actor: str,
) -> dict[str, Any]:
    """Draw for a matter from the active registry, record the draw and its ledger entry in
    one transaction, return it."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT lead_department FROM matters WHERE id = %s AND active", (matter_id,)
        )
        row = await cur.fetchone()
        if row is None:
            raise InspectionError(f"no active matter {matter_id!r}")
        lead = str(row[0])
        cur = await conn.execute(
            "SELECT DISTINCT s.id, s.risk_tier FROM subjects s JOIN devices d"
            " ON d.subject_id = s.id WHERE d.matter_id = %s AND d.active AND s.active",
            (matter_id,),
        )
        subjects = [Candidate(r[0], r[1]) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT id, department FROM inspectors WHERE active AND %s = ANY(qualified_matters)",
            (matter_id,),
        )
        inspectors = [Inspector(r[0], r[1]) for r in await cur.fetchall()]
        drawn = draw(
            subjects,
            inspectors,
            lead_department=lead,
            count=count,
            per_subject=per_subject,
            seed=seed,
        )
        cur = await conn.execute(
            "SELECT version, sha256 FROM registry_loads ORDER BY loaded_at DESC, id DESC LIMIT 1"
        )
        registry = await cur.fetchone()
        params = {"count": count, "per_subject": per_subject, "lead_department": lead}
        record = {
            "matter_id": matter_id,
            "seed": seed,
            "params": params,
            "registry": {"version": registry[0], "sha256": registry[1]} if registry else None,
            "candidates": len(subjects),
            "inspectors_qualified": len(inspectors),
            "plan": drawn,
        }
        body = canonical_json(record)
        digest = sha256_hex(body)
        plan_id = "insp_" + digest[:20]
        cur = await conn.execute(
            "INSERT INTO inspection_plans (id, matter_id, seed, params, plan, sha256)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
            (plan_id, matter_id, seed, Jsonb(params), body.decode(), digest),
        )
        if await cur.fetchone() is not None:
            # the same draw again (same seed, same registry) is the same plan, recorded once
            await ledger.append(
                conn,
                [
                    ledger.Draft(
                        actor=actor,
                        action="inspection.planned",
                        object_kind="inspection_plan",
                        object_id=plan_id,
                        payload={"sha256": digest, "matter_id": matter_id, "seed": seed},
                    )
                ],
            )
    return {"id": plan_id, "sha256": digest, **record}
