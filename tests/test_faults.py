"""Services that are missing or go away: a clear error at start, a resumed stream after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from offsite.cli import main
from offsite.embedded import free_port
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, gas_reading, publish, start_gateway


def test_run_without_a_broker_says_so(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("OFFSITE_DATABASE_URL", database_url)
    monkeypatch.setenv("OFFSITE_MQTT_URL", f"mqtt://127.0.0.1:{port}")
    monkeypatch.setenv("OFFSITE_HTTP_PORT", "0")
    assert main(["run"]) == 1
    assert f"no answer from MQTT broker at 127.0.0.1:{port}" in capsys.readouterr().err


def test_run_without_a_database_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("OFFSITE_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/x")
    monkeypatch.setenv("OFFSITE_MQTT_URL", "mqtt://127.0.0.1:1")
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("offsite: ")
    assert str(port) in err


def test_invalid_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OFFSITE_HTTP_PORT", "http")
    assert main(["migrate"]) == 1
    assert "http_port" in capsys.readouterr().err


async def test_gateway_reconnects_after_a_broker_restart_and_resumes(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        base = int(datetime.now(UTC).timestamp() * 1000) - 60_000
        publish(broker.port, "offsite/v1/gas/gas-0001/telemetry", [gas_reading(base, 1, 1.0)])
        await eventually(lambda: _points(gw, 1))
        broker.stop()
        await eventually(lambda: _disconnected(gw))
        broker.start()
        await eventually(lambda: _connected(gw), timeout=40)
        publish(
            broker.port,
            "offsite/v1/gas/gas-0001/telemetry",
            [gas_reading(base + i * 1000, i + 1, 1.0) for i in range(1, 10)],
        )
        await eventually(lambda: _points(gw, 10))


async def _points(gw: Any, n: int) -> bool:
    page = (
        await gw.http.get(
            "/api/v1/telemetry/gas-0001", params={"from": "2000-01-01T00:00:00Z", "bucket": "raw"}
        )
    ).json()
    return len(page["points"]) == n


async def _disconnected(gw: Any) -> bool:
    return gw.runtime.gateway is not None and not gw.runtime.gateway.connected


async def _connected(gw: Any) -> bool:
    return gw.runtime.gateway is not None and gw.runtime.gateway.connected
