"""Device status from the retained status topic, silence, registry reloads while running,
and the gas simulator publishing like a real device."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from offsite.registry.store import load_registry
from offsite.simulators.gas import LeakScript, run_gas
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, gas_reading, publish, start_gateway
from tests.test_registry import SMALL


async def test_retained_status_is_tracked(database_url: str, broker: BrokerProcess) -> None:
    # Published before the gateway exists: retained, so it still learns it on subscribe.
    publish(broker.port, "offsite/v1/gas/gas-0001/status", [b"offline"], retain=True)
    async with start_gateway(database_url, broker.url) as gw:

        async def status(expected: str) -> dict[str, Any] | None:
            device: dict[str, Any] = (await gw.http.get("/api/v1/devices/gas-0001")).json()
            return device if device["status"] == expected else None

        await eventually(lambda: status("offline"))
        publish(broker.port, "offsite/v1/gas/gas-0001/status", [b"online"], retain=True)
        device = await eventually(lambda: status("online"))
        assert device["status_at"] is not None


async def test_registry_reload_reaches_a_running_gateway_and_silence_is_detected(
    database_url: str, broker: BrokerProcess, tmp_path: Path
) -> None:
    async with start_gateway(database_url, broker.url, silent_sweep_s=0.1) as gw:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        publish(broker.port, "offsite/v1/gas/g1/telemetry", [gas_reading(now_ms, 1, 1.0)])

        async def quarantined() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = (await gw.http.get("/api/v1/quarantine")).json()
            return rows or None

        [row] = await eventually(quarantined)
        assert row["reason"] == "unknown device 'g1'"

        path = tmp_path / "small.toml"
        path.write_text(SMALL)  # registers g1, reporting every 0.5 s
        with psycopg.connect(database_url) as conn:
            load_registry(conn, path)
        await eventually(lambda: _known(gw.runtime.directory, "g1"))
        publish(broker.port, "offsite/v1/gas/g1/telemetry", [gas_reading(now_ms + 1, 2, 1.0)])

        async def silent() -> dict[str, Any] | None:
            clues: list[dict[str, Any]] = (
                await gw.http.get("/api/v1/clues", params={"device_id": "g1"})
            ).json()
            return clues[0] if clues else None

        clue = await eventually(silent, timeout=10)
        assert (clue["rule"], clue["severity"], clue["cleared_at"]) == (
            "device.silent",
            "blue",
            None,
        )
        assert clue["department"] == "housing"
        publish(broker.port, "offsite/v1/gas/g1/telemetry", [gas_reading(now_ms + 2, 3, 1.0)])

        async def cleared() -> dict[str, Any] | None:
            found = await silent()
            return found if found and found["cleared_at"] else None

        assert (await eventually(cleared))["id"] == clue["id"]


async def _known(directory: dict[str, Any], device_id: str) -> bool:
    return device_id in directory


def test_leak_script_crosses_both_levels_then_recovers() -> None:
    script = LeakScript(start_s=5.0)
    assert script.level(4.0) is None
    levels = [script.level(5.0 + t) for t in range(0, 80)]
    assert max(v for v in levels if v is not None) > 60
    first_above_25 = next(t for t, v in enumerate(levels) if v is not None and v >= 25)
    first_above_50 = next(t for t, v in enumerate(levels) if v is not None and v >= 50)
    assert first_above_25 < first_above_50 < 25
    assert levels[-1] is None


async def test_simulated_leak_becomes_a_red_clue_with_a_case(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, gas_confirm_s=2) as gw:
        stop = threading.Event()
        sim = asyncio.create_task(
            asyncio.to_thread(
                run_gas,
                "127.0.0.1",
                broker.port,
                devices=3,
                rate_hz=5.0,
                scenario="leak",
                duration_s=60.0,
                protocol="5",
                stop=stop,
            )
        )
        try:

            async def red() -> dict[str, Any] | None:
                clues: list[dict[str, Any]] = (
                    await gw.http.get("/api/v1/clues", params={"severity": "red"})
                ).json()
                return clues[0] if clues and clues[0]["case_id"] else None

            clue = await eventually(red, timeout=45)
            assert clue["device_id"] == "gas-0001"
            assert clue["case_id"] is not None
            device = (await gw.http.get("/api/v1/devices/gas-0002")).json()
            assert device["status"] == "online"
            assert device["last_seq"] is not None
        finally:
            stop.set()
            published = await sim
        assert published > 0
        # A clean stop publishes `offline`, retained.
        await eventually(lambda: _status(gw.http, "gas-0003", "offline"))
        quarantine = (await gw.http.get("/api/v1/quarantine")).json()
        assert quarantine == []


async def _status(http: Any, device_id: str, expected: str) -> bool:
    device = (await http.get(f"/api/v1/devices/{device_id}")).json()
    return bool(device["status"] == expected)
