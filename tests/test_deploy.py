"""docker-compose cannot run here (no Docker engine): it is checked by reading it."""

from __future__ import annotations

import base64
import ssl
import subprocess
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
    secure = ROOT / "src/offsite/deploy/mosquitto-secure.conf"
    assert (ROOT / mounted).resolve() == secure.resolve()
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


def test_compose_uses_tls_and_the_exported_credentials() -> None:
    """The broker listens with TLS only and reads the files the export job writes; the
    gateway connects over TLS with its own user and serves HTTPS."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    conf = dict(
        line.split(None, 1)
        for line in (ROOT / "src/offsite/deploy/mosquitto-secure.conf").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert conf["allow_anonymous"] == "false"
    assert conf["listener"] == "8883"
    assert conf["per_listener_settings"] == "true"
    mosquitto = services["mosquitto"]
    assert mosquitto["ports"] == ["8883:8883"]  # no plain-TCP listener published

    def mounts(service: dict[str, object]) -> dict[str, str]:
        volumes = service["volumes"]
        assert isinstance(volumes, list)
        return {v.split(":")[1]: v.split(":")[0] for v in volumes}

    broker_mounts = mounts(mosquitto)
    for key in ("cafile", "certfile", "keyfile"):
        directory = conf[key].rsplit("/", 1)[0]
        assert broker_mounts[directory] == "./secrets/certs", key
    auth = services["mosquitto-auth"]
    command = auth["command"]
    assert command[:3] == ["devices", "credentials", "export-mosquitto"]
    assert command[command.index("--passwd") + 1] == conf["password_file"]
    assert command[command.index("--acl") + 1] == conf["acl_file"]
    auth_dir = conf["password_file"].rsplit("/", 1)[0]
    assert mounts(auth)[auth_dir] == broker_mounts[auth_dir] == "mosquitto-auth"
    assert mosquitto["depends_on"]["mosquitto-auth"]["condition"] == (
        "service_completed_successfully"
    )
    env = services["offsite"]["environment"]
    assert env["OFFSITE_MQTT_URL"].startswith("mqtts://mosquitto:8883")
    assert env["OFFSITE_MQTT_PASSWORD"].startswith("${OFFSITE_MQTT_PASSWORD:?")
    certs = mounts(services["offsite"])
    for key in (
        "OFFSITE_MQTT_TLS_CA_FILE",
        "OFFSITE_HTTP_TLS_CERT_FILE",
        "OFFSITE_HTTP_TLS_KEY_FILE",
    ):
        assert certs[env[key].rsplit("/", 1)[0]] == "./secrets/certs", key
    given = {  # what an operator's .env would hold
        "OFFSITE_BOOTSTRAP_TOKEN": "t" * 32,
        "OFFSITE_LEDGER_SIGNING_KEY": base64.b64encode(bytes(32)).decode(),
        "OFFSITE_MQTT_PASSWORD": "p" * 24,
        "OFFSITE_DATABASE_URL": "postgresql://offsite@timescaledb/offsite",
    }
    values = {**env, **given}
    settings = Settings(**{k.removeprefix("OFFSITE_").lower(): v for k, v in values.items()})
    assert settings.mqtt_host_port_of(env["OFFSITE_MQTT_URL"]) == ("mosquitto", 8883)


def test_dev_certs_script_makes_a_chain_mosquitto_and_python_accept(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    subprocess.run(
        ["sh", str(ROOT / "scripts/dev-certs.sh"), str(out), "mosquitto"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (out / "ca.key").stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(cafile=str(out / "ca.crt"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(out / "server.crt", out / "server.key")
    text = subprocess.run(
        ["openssl", "x509", "-in", str(out / "server.crt"), "-noout", "-ext", "subjectAltName"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DNS:mosquitto" in text
    assert "IP Address:127.0.0.1" in text
    assert context.verify_mode is ssl.CERT_REQUIRED


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
