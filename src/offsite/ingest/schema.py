"""Schema migrations: numbered SQL files, applied once each, in order, at start-up.

A migration `NNNN_name.sql` runs everywhere; `NNNN_name.timescaledb.sql` and
`NNNN_name.postgres.sql` are the two variants of one step, chosen by the storage flavour
(TimescaleDB when the extension can be created, plain PostgreSQL otherwise).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import psycopg

from offsite.ingest.errors import MigrationError

Flavour = Literal["timescaledb", "postgres"]
_LOG = logging.getLogger(__name__)
_NAME = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<flavour>timescaledb|postgres))?\.sql$"
)
_LOCK_KEY = 0x0FF517E  # advisory lock: one migrator at a time across workers


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations(flavour: Flavour) -> list[Migration]:
    """The migrations that apply to `flavour`, in version order."""
    chosen: dict[int, Migration] = {}
    for entry in resources.files("offsite.ingest.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        file_flavour = match["flavour"]
        if file_flavour is not None and file_flavour != flavour:
            continue
        version = int(match["version"])
        if version in chosen:
            raise MigrationError(f"two migrations for version {version}")
        chosen[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [chosen[v] for v in sorted(chosen)]


def detect_flavour(conn: psycopg.Connection[object], wanted: str = "auto") -> Flavour:
    """TimescaleDB when asked for or available and loadable; plain PostgreSQL otherwise."""
    if wanted == "postgres":
        return "postgres"
    row = conn.execute(
        "SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None:
        if wanted == "timescaledb":
            raise MigrationError("OFFSITE_STORAGE=timescaledb but the extension is not available")
        return "postgres"
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        if wanted == "timescaledb":
            raise MigrationError(f"cannot create extension timescaledb: {exc}") from None
        _LOG.warning(
            "timescaledb is available but cannot be loaded (%s); using plain PostgreSQL", exc
        )
        return "postgres"
    return "timescaledb"


def migrate(conninfo: str, wanted_flavour: str = "auto") -> Flavour:
    """Bring the schema up to date; returns the storage flavour in use."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, flavour text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT version, flavour FROM schema_migrations").fetchall()
            applied = {int(v): str(f) for v, f in rows}
            flavour: Flavour
            if applied:
                recorded = {f for f in applied.values() if f != "any"}
                flavour = "timescaledb" if "timescaledb" in recorded else "postgres"
                if flavour == "timescaledb":
                    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            else:
                flavour = detect_flavour(conn, wanted_flavour)
            for migration in available_migrations(flavour):
                if migration.version in applied:
                    continue
                _LOG.info(
                    "applying migration %04d %s (%s)", migration.version, migration.name, flavour
                )
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, flavour)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, flavour),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d} {migration.name} failed: {exc}"
                    ) from None
            return flavour
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
