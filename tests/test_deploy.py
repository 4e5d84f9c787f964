"""docker-compose cannot run here (no Docker engine): it is checked by reading it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from offsite.config import Settings
from offsite.embedded import mosquitto_config, project_mosquitto_conf

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_wires_timescaledb_mosquitto_and_offsite() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    mounted = services["mosquitto"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).resolve() == (ROOT / "src/offsite/deploy/mosquitto.conf").resolve()
    env = services["offsite"]["environment"]
    known = {f"OFFSITE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    assert env["OFFSITE_MODE"] == "production"
    assert env["OFFSITE_LEDGER_SIGNING_KEY"].startswith("${OFFSITE_LEDGER_SIGNING_KEY:?")
    assert env["OFFSITE_DATABASE_URL"].startswith("postgresql://")
    assert services["offsite"]["depends_on"]["registry"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["offsite"]["command"] == ["run"]


def test_mosquitto_settings_that_keep_qos1_messages() -> None:
    conf = project_mosquitto_conf()
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert settings["max_queued_messages"] == "0"  # not the default 1000 that discards
    assert int(settings["max_queued_bytes"]) >= 1_000_000_000
    assert settings["persistence"] == "true"
    assert settings["max_inflight_messages"] == "0"
    local = mosquitto_config(18830, Path("/tmp/x"))
    assert "listener 18830 127.0.0.1" in local
    assert "persistence_location /tmp/x/" in local
    assert "/mosquitto/data" not in local


def test_production_mode_refuses_the_default_token() -> None:
    with pytest.raises(pydantic.ValidationError, match="OFFSITE_BOOTSTRAP_TOKEN must be set"):
        Settings(mode="production")
    with pytest.raises(pydantic.ValidationError, match="at least 24"):
        Settings(mode="production", bootstrap_token="short")
    with pytest.raises(pydantic.ValidationError, match="OFFSITE_LEDGER_SIGNING_KEY must be set"):
        Settings(mode="production", bootstrap_token="x" * 32)
    key = base64.b64encode(bytes(range(32))).decode()
    secrets: dict[str, Any] = {"bootstrap_token": "x" * 32, "ledger_signing_key": key}
    with pytest.raises(pydantic.ValidationError, match="embedded services are for development"):
        Settings(mode="production", **secrets)
    services: dict[str, Any] = {
        "database_url": "postgresql://offsite:s3cret-Lh2@db/offsite",
        "mqtt_url": "mqtt://broker:1883",
    }
    assert Settings(mode="production", **secrets, **services).mode == "production"
    # development mode keeps accepting the defaults a laptop demo uses
    assert Settings(database_url="postgresql://offsite:offsite@db/x").mode == "development"
    for field, value, message in [
        ("database_url", "postgresql://offsite:offsite@db/offsite", "OFFSITE_DATABASE_URL"),
        ("database_url", "postgresql://postgres:postgres@db/offsite", "OFFSITE_DATABASE_URL"),
        ("mqtt_url", "mqtt://gw:public@broker:1883", "OFFSITE_MQTT_URL"),
        ("mqtt_password", "password", "OFFSITE_MQTT_PASSWORD"),
    ]:
        with pytest.raises(pydantic.ValidationError, match=f"{message} .*default password"):
            Settings(mode="production", **secrets, **{**services, field: value})
    with pytest.raises(pydantic.ValidationError, match="32-byte Ed25519 seed"):
        Settings(ledger_signing_key=base64.b64encode(b"short").decode())
    with pytest.raises(pydantic.ValidationError, match="must be base64"):
        Settings(ledger_signing_key="not base64!")
    with pytest.raises(pydantic.ValidationError, match="postgresql://"):
        Settings(database_url="mysql://x")
    with pytest.raises(pydantic.ValidationError, match="mqtt://host:port"):
        Settings(mqtt_url="http://x")
