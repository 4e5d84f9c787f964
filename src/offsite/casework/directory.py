"""The registry as the running gateway sees it: a snapshot read from the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    domain: str
    kind: str
    subject_id: str
    subject_name: str
    risk_tier: str
    matter_id: str
    department: str
    cooperating_departments: tuple[str, ...]
    legal_basis: tuple[str, ...]
    expected_interval_s: float
    attributes: dict[str, Any]


# The tier detection uses: the higher (A < B < C < D) of the declared and the assessed one.
_QUERY = """
SELECT d.id, d.domain, d.kind, d.subject_id, s.name,
       greatest(s.risk_tier, coalesce(s.assessed_tier, 'A')), d.matter_id,
       m.lead_department, m.cooperating_departments, m.legal_basis, d.expected_interval_s,
       d.attributes
FROM devices d JOIN subjects s ON s.id = d.subject_id JOIN matters m ON m.id = d.matter_id
WHERE d.active
"""


async def read_directory(conn: psycopg.AsyncConnection[Any]) -> dict[str, DeviceInfo]:
    cur = await conn.execute(_QUERY)
    return {
        row[0]: DeviceInfo(
            id=row[0],
            domain=row[1],
            kind=row[2],
            subject_id=row[3],
            subject_name=row[4],
            risk_tier=row[5],
            matter_id=row[6],
            department=row[7],
            cooperating_departments=tuple(row[8]),
            legal_basis=tuple(row[9]),
            expected_interval_s=float(row[10]),
            attributes=dict(row[11]),
        )
        for row in await cur.fetchall()
    }
