"""`offsite bench ingest` in a short run: figures are not checked here (they belong to the
benchmark), the accounting is: every reading published is stored or quarantined."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_ingest_accounts_for_every_reading(pg_admin_url: str) -> None:
    env = os.environ | {"OFFSITE_DATABASE_URL": pg_admin_url}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "offsite.cli",
            "bench",
            "ingest",
            "--devices",
            "50",
            "--rate",
            "20",
            "--duration",
            "2",
            "--readings-per-message",
            "5",
            "--limit-messages",
            "2000",
            "--probes",
            "3",
            "--publishers",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    sustained = result["sustained"]
    assert sustained["messages_published"] == 2000
    assert sustained["readings_published"] == 10_000
    assert sustained["readings_stored"] + sustained["readings_quarantined"] == 10_000
    assert sustained["lost"] == 0
    assert sustained["readings_quarantined"] == 0
    limits = result["limits"]
    assert limits["broker_delivery"]["delivered"] == limits["broker_delivery"]["messages"] == 2000
    assert limits["postgres_copy"]["rows"] == 10_000
    assert result["publish_to_alert"]["alerts"] == 3
    for figure in ("p50_ms", "p99_ms"):
        assert sustained["publish_to_commit"][figure] is not None
        assert result["publish_to_alert"][figure] is not None
    assert set(sustained["cpu_seconds"]) == {"gateway", "broker", "database", "publishers"}
