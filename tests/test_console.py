"""The duty console in a real browser (headless Chromium driven by Playwright): a red clue
from a leak through the broker is listed on top, the severity filter works, its detail shows
the case and verified evidence with a chart, and a dropped live stream reconnects and resumes
after the last alert it saw. A screenshot is kept with the test's files."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import TOKEN, eventually, gas_reading, publish, start_gateway

HARNESS = Path(__file__).parent / "console"


@pytest.fixture(scope="module")
def harness() -> Path:
    if shutil.which("node") is None:
        pytest.fail("Node.js is required (./test.sh installs the Debian packages nodejs and npm)")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is required (./test.sh installs the Debian package chromium)")
    if not (HARNESS / "node_modules" / "playwright-core").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is on PATH but npm is not (Debian package npm)"
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=HARNESS,
            check=True,
            timeout=300,
        )
    return HARNESS


async def test_the_console_shows_a_leak_live_with_its_case_and_evidence(
    database_url: str, broker: BrokerProcess, harness: Path, tmp_path: Path
) -> None:
    base = int((datetime.now(UTC) - timedelta(minutes=2)).timestamp() * 1000)
    leak = [gas_reading(base + i * 1000, i, 2.0 if i < 10 else 60.0) for i in range(40)]
    async with start_gateway(database_url, broker.url, gas_confirm_s=10) as gw:
        publish(broker.port, "offsite/v1/gas/gas-0001/telemetry", leak)

        async def red() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = (
                await gw.http.get("/api/v1/clues", params={"severity": "red"})
            ).json()
            return found if found and found[0]["case_id"] else None

        [clue] = await eventually(red)
        await asyncio.sleep(1.0)  # the rest of the episode's alerts
        alerts = (await gw.http.get("/api/v1/alerts", params={"after": "0"})).json()
        newest = max(alerts, key=lambda a: a["seq"])["clue"]["id"]
        shot = tmp_path / "console.png"
        proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node",
            str(harness / "check-console.mjs"),
            gw.base_url + "/",
            TOKEN,
            str(shot),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["errors"] == []
    severities = [a["severity"] for a in result["alerts"]]
    assert result["alerts"][0]["id"] == "a-" + newest  # newest first
    assert {"red", "orange"} <= set(severities)
    assert set(result["visible_when_red"]) == {"red"}
    # gas clues are led by housing; market cooperates and sees them too
    assert result["visible_for_market"] == len(result["alerts"])
    detail = result["detail"]
    assert clue["id"] in detail
    assert "verified" in detail
    assert clue["case_id"] is not None
    assert "housing" in detail
    assert result["chart"] >= 1
    assert result["reconnected"] is True
    assert result["seen_after"] >= result["seen_before"]
    assert result["listed_after"] == len(result["alerts"])
    assert shot.stat().st_size > 20_000
