"""Migrations: applied once, in order; plain PostgreSQL partitions made ahead of the data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from offsite.ingest.schema import available_migrations, migrate


def test_migrations_apply_once(empty_database_url: str) -> None:
    assert migrate(empty_database_url) == "postgres"  # no timescaledb on this server
    assert migrate(empty_database_url) == "postgres"
    with psycopg.connect(empty_database_url) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [v for (v,) in versions] == [m.version for m in available_migrations("postgres")]


def test_each_flavour_has_a_telemetry_migration() -> None:
    plain = {m.version: m for m in available_migrations("postgres")}
    timescale = {m.version: m for m in available_migrations("timescaledb")}
    assert plain.keys() == timescale.keys()
    assert "create_hypertable" in timescale[2].sql
    assert "PARTITION BY RANGE" in plain[2].sql


def test_partitions_exist_ahead_and_rows_move_out_of_the_default(database_url: str) -> None:
    far = datetime.now(UTC) + timedelta(days=30)
    with psycopg.connect(database_url, autocommit=True) as conn:
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry_gas'::regclass"
        ).fetchone()
        assert parts is not None
        assert parts[0] >= 7  # default + two days back + today + three ahead
        conn.execute(
            "INSERT INTO telemetry_gas (time, device_id, seq, lel_pct, received_at)"
            " VALUES (%s, 'g', 1, 1.0, now())",
            (far,),
        )
        in_default = conn.execute("SELECT count(*) FROM telemetry_gas_default").fetchone()
        assert in_default == (1,)
        created = conn.execute(
            "SELECT offsite_ensure_partitions('telemetry_gas', %s::date, %s::date)",
            (far.date(), far.date()),
        ).fetchone()
        assert created == (1,)
        assert conn.execute("SELECT count(*) FROM telemetry_gas_default").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM telemetry_gas").fetchone() == (1,)
