"""The README's first command: `offsite demo` on embedded services, and the broker fallback
for machines without mosquitto."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from offsite.cli import demo_clip
from offsite.config import Settings
from offsite.embedded import free_port, start_amqtt
from tests.fixtures.gateway import eventually, gas_reading, publish, start_gateway


@pytest.mark.slow
def test_demo_runs_on_embedded_services_and_the_leak_becomes_a_case(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OFFSITE_DATABASE_URL", "OFFSITE_MQTT_URL")
    }
    port = free_port()
    env |= {"OFFSITE_DATA_DIR": str(tmp_path / "data"), "OFFSITE_HTTP_PORT": str(port)}
    log = (tmp_path / "demo.log").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-m", "offsite.cli", "demo", "--devices", "3", "--rate", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        token = _wait_for_console(tmp_path / "demo.log", demo)
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        red: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not red:
            red = httpx.get(
                f"{base}/api/v1/clues",
                params={"severity": "red", "device_id": "gas-0001"},
                headers=headers,
            ).json()
            red = [c for c in red if c["case_id"]]  # announced, then cased
            time.sleep(1)
        assert red, "no red clue within 90 s of start"
        clue = red[0]
        assert clue["device_id"] == "gas-0001"
        case = httpx.get(f"{base}/api/v1/cases/{clue['case_id']}", headers=headers).json()
        assert case["department"] == "housing"
        verify = httpx.get(
            f"{base}/api/v1/evidence/{clue['evidence_id']}/verify", headers=headers
        ).json()
        assert verify["valid"] is True
        # The demo's detector takes the command the README shows, tied to the case.
        sent = httpx.post(
            f"{base}/api/v1/commands",
            json={"device_id": "gas-0001", "command": "close_valve", "case_id": case["id"]},
            headers=headers,
        ).json()
        command: dict[str, Any] = sent
        for _ in range(100):
            if command["status"] != "sent":
                break
            time.sleep(0.1)
            command = httpx.get(f"{base}/api/v1/commands/{sent['id']}", headers=headers).json()
        assert (command["status"], command["case_id"]) == ("acked", case["id"])
        assert command["answer"]["detail"].startswith("valve closed at ")
        # the equipment simulator's incidents came in meanwhile, and the camera's visits
        rules = {c["rule"] for c in httpx.get(f"{base}/api/v1/clues", headers=headers).json()}
        assert {"elevator.overspeed.tier2", "boiler.overpressure"} <= rules
        if demo_clip(Settings()).is_file():
            assert "video.presence.view" in rules
        health = httpx.get(f"{base}/healthz").json()
        assert health["database"]
        assert health["mqtt"]
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(30)
    assert code == 0
    # The embedded PostgreSQL was stopped with it.
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()


def _wait_for_console(path: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = path.read_text()
        match = re.search(r"API token: (\S+)\)", text)
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise AssertionError(f"demo exited early:\n{text}")
        time.sleep(0.2)
    raise AssertionError(f"demo did not start:\n{path.read_text()}")


async def test_gateway_works_on_the_amqtt_fallback_broker(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    broker = start_amqtt(port, tmp_path / "amqtt")
    try:
        async with start_gateway(
            database_url, f"mqtt://127.0.0.1:{port}", mqtt_protocol="3.1.1"
        ) as gw:
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            publish(port, "offsite/v1/gas/gas-0001/telemetry", [gas_reading(now_ms, 1, 2.0)])

            async def stored() -> list[dict[str, Any]] | None:
                page = (await gw.http.get("/api/v1/telemetry/gas-0001")).json()
                points: list[dict[str, Any]] = page["points"]
                return points or None

            [point] = await eventually(stored)
            assert point["seq"] == 1
    finally:
        broker.terminate()
        broker.wait(10)
