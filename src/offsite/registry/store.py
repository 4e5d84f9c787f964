"""Registry in the database: load a file, read it back."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from offsite.registry.models import Registry


class RegistryError(Exception):
    """A registry file that cannot be loaded."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    version: str
    sha256: str
    departments: int
    matters: int
    subjects: int
    devices: int


def demo_registry_path() -> Path:
    return Path(str(resources.files("offsite.registry").joinpath("demo.toml")))


def parse_registry(raw: bytes, source: str) -> Registry:
    """A registry file (TOML) validated into models; every problem named at once."""
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"{source}: not a TOML file: {exc}") from None
    try:
        return Registry.model_validate(document)
    except ValidationError as exc:
        raise RegistryError(f"{source}: {exc}") from None


def load_registry(conn: psycopg.Connection[Any], path: Path) -> LoadReport:
    """Upsert a registry file in one transaction; entries absent from it become inactive."""
    raw = path.read_bytes()
    registry = parse_registry(raw, str(path))
    digest = hashlib.sha256(raw).hexdigest()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO departments (id, name, name_zh, active) VALUES (%s, %s, %s, true)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, name_zh = excluded.name_zh,"
            " active = true",
            [(d.id, d.name, d.name_zh) for d in registry.departments],
        )
        cur.executemany(
            "INSERT INTO matters (id, name, domain, lead_department, cooperating_departments,"
            " legal_basis, object_type, inspection_method, active)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, domain = excluded.domain,"
            " lead_department = excluded.lead_department,"
            " cooperating_departments = excluded.cooperating_departments,"
            " legal_basis = excluded.legal_basis, object_type = excluded.object_type,"
            " inspection_method = excluded.inspection_method, active = true",
            [
                (
                    m.id,
                    m.name,
                    m.domain,
                    m.lead_department,
                    list(m.cooperating_departments),
                    list(m.legal_basis),
                    m.object_type,
                    m.inspection_method,
                )
                for m in registry.matters
            ],
        )
        cur.executemany(
            "INSERT INTO subjects (id, name, kind, address, tags, risk_tier, active)"
            " VALUES (%s, %s, %s, %s, %s, %s, true)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,"
            " address = excluded.address, tags = excluded.tags,"
            " risk_tier = excluded.risk_tier, active = true",
            [
                (s.id, s.name, s.kind, s.address, list(s.tags), s.risk_tier)
                for s in registry.subjects
            ],
        )
        cur.executemany(
            "INSERT INTO devices (id, domain, kind, subject_id, matter_id, model,"
            " expected_interval_s, attributes, active)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true)"
            " ON CONFLICT (id) DO UPDATE SET domain = excluded.domain, kind = excluded.kind,"
            " subject_id = excluded.subject_id, matter_id = excluded.matter_id,"
            " model = excluded.model, expected_interval_s = excluded.expected_interval_s,"
            " attributes = excluded.attributes, active = true",
            [
                (
                    d.id,
                    d.domain,
                    d.kind,
                    d.subject_id,
                    registry.matter_for(d).id,
                    d.model,
                    d.expected_interval_s,
                    Jsonb(d.stored_attributes()),
                )
                for d in registry.devices
            ],
        )
        cur.executemany(
            "INSERT INTO inspectors (id, name, department, qualified_matters, active)"
            " VALUES (%s, %s, %s, %s, true)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            " department = excluded.department,"
            " qualified_matters = excluded.qualified_matters, active = true",
            [(i.id, i.name, i.department, list(i.qualified_matters)) for i in registry.inspectors],
        )
        for table, ids in (
            ("inspectors", [i.id for i in registry.inspectors]),
            ("devices", [d.id for d in registry.devices]),
            ("subjects", [s.id for s in registry.subjects]),
            ("matters", [m.id for m in registry.matters]),
            ("departments", [d.id for d in registry.departments]),
        ):
            cur.execute(
                sql.SQL("UPDATE {} SET active = false WHERE NOT (id = ANY(%s))").format(
                    sql.Identifier(table)
                ),
                (ids,),
            )
        report = LoadReport(
            registry.version,
            digest,
            len(registry.departments),
            len(registry.matters),
            len(registry.subjects),
            len(registry.devices),
        )
        cur.execute(
            "INSERT INTO registry_loads (version, sha256, source, counts) VALUES (%s, %s, %s, %s)",
            (
                registry.version,
                digest,
                str(path),
                Jsonb(
                    {
                        k: getattr(report, k)
                        for k in ("departments", "matters", "subjects", "devices")
                    }
                ),
            ),
        )
        cur.execute("SELECT pg_notify('offsite_registry', %s)", (registry.version,))
    return report
