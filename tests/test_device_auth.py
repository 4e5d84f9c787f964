"""Device credentials against the real mosquitto with the production configuration: each
device logs in with its own secret and may publish only on its own topics (issue 6)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from offsite.cli import main
from offsite.embedded import secure_mosquitto_config
from offsite.registry import credentials
from tests.fixtures.secure_broker import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    SecureBroker,
    connect,
    issue,
)

NOT_AUTHORIZED = 0x87
BAD_CREDENTIALS = 0x86


def test_hash_is_mosquitto_pbkdf2_and_verifies() -> None:
    hashed = credentials.mosquitto_hash("s3cret", salt=b"0123456789ab")
    assert hashed.startswith(f"$7${credentials.ITERATIONS}$MDEyMzQ1Njc4OWFi$")
    assert credentials.verify_secret("s3cret", hashed)
    assert not credentials.verify_secret("s3cret ", hashed)
    assert not credentials.verify_secret("s3cret", "$6$abc$def")


def test_issue_rotate_revoke_rules(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        first = credentials.issue(conn, "gas-0001")
        with pytest.raises(credentials.CredentialError, match="already has credentials"):
            credentials.issue(conn, "gas-0001")
        with pytest.raises(credentials.CredentialError, match="no device"):
            credentials.issue(conn, "nobody")
        with pytest.raises(credentials.CredentialError, match="no credentials to rotate"):
            credentials.rotate(conn, "gas-0002")
        second = credentials.rotate(conn, "gas-0001")
        assert second != first
        (stored,) = conn.execute(
            "SELECT secret_hash FROM device_credentials WHERE device_id = 'gas-0001'"
        ).fetchone() or ("",)
        assert credentials.verify_secret(second, stored)
        assert not credentials.verify_secret(first, stored)
        assert second not in stored  # only the hash is kept
        credentials.revoke(conn, "gas-0001")
        with pytest.raises(credentials.CredentialError):
            credentials.revoke(conn, "gas-0001")
        [info] = credentials.list_credentials(conn)
        assert info.revoked_at is not None
        credentials.issue(conn, "gas-0001")  # a revoked device may be issued anew


def test_cli_issue_list_export(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OFFSITE_DATABASE_URL", database_url)
    monkeypatch.setenv("OFFSITE_MQTT_USERNAME", GATEWAY_USER)
    monkeypatch.setenv("OFFSITE_MQTT_PASSWORD", GATEWAY_PASSWORD)
    assert main(["devices", "credentials", "issue", "gas-0001", "cam-0001"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[0] for line in lines] == ["gas-0001", "cam-0001"]
    assert main(["devices", "credentials", "issue", "gas-0001"]) == 1  # already issued
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    args = ["devices", "credentials", "export-mosquitto", "--passwd", str(passwd)]
    assert main([*args, "--acl", str(acl)]) == 0
    users = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert set(users) == {GATEWAY_USER, "gas-0001", "cam-0001"}
    assert credentials.verify_secret(lines[0][1], users["gas-0001"])
    text = acl.read_text()
    assert "user cam-0001\ntopic write offsite/v1/video/cam-0001/frame\n" in text
    assert "topic read offsite/v1/gas/gas-0001/cmd\n" in text
    assert "topic read $share/+/offsite/v1/+/+/telemetry" in text
    assert main(["devices", "credentials", "revoke", "cam-0001"]) == 0
    assert main([*args, "--acl", str(acl)]) == 0
    assert "cam-0001" not in passwd.read_text()
    assert "cam-0001" not in acl.read_text()


def test_device_cannot_publish_as_another(authed_broker: SecureBroker, database_url: str) -> None:
    secrets = issue(database_url, "gas-0001", "gas-0002")
    authed_broker.reload()
    port = authed_broker.port

    def as_a(topic: str, payload: bytes) -> int:
        """One publish by device A on a connection of its own: mosquitto 2.0 answers a
        refused publish with PUBACK 0x87 and then drops the connection."""
        a = connect(port, "gas-0001", secrets["gas-0001"])
        try:
            assert a.connack == [0]
            return a.publish(topic, payload)
        finally:
            a.close()

    gateway = connect(port, GATEWAY_USER, GATEWAY_PASSWORD)
    try:
        assert gateway.connack == [0]
        assert gateway.subscribe("offsite/v1/+/+/telemetry") == [1]
        assert gateway.subscribe("offsite/v1/+/+/status") == [1]
        assert as_a("offsite/v1/gas/gas-0001/telemetry", b"mine") == 0
        # device A on device B's topics, and on a topic only the gateway may write
        assert as_a("offsite/v1/gas/gas-0002/telemetry", b"forged") == NOT_AUTHORIZED
        assert as_a("offsite/v1/gas/gas-0002/status", b"offline") == NOT_AUTHORIZED
        assert as_a("offsite/v1/equipment/gas-0001/telemetry", b"{}") == NOT_AUTHORIZED
        assert as_a("offsite/v1/gas/gas-0001/cmd", b"{}") == NOT_AUTHORIZED
        assert as_a("offsite/v1/gas/gas-0001/telemetry", b"mine again") == 0
        # MQTT 3.1.1 has no reason code in PUBACK: the forged message must simply not arrive
        old = connect(port, "gas-0001", secrets["gas-0001"], v5=False)
        try:
            assert old.connack == [0]
            old.client.publish("offsite/v1/gas/gas-0002/telemetry", b"forged 3.1.1", qos=1)
        finally:
            time.sleep(0.3)
            old.close()
        deadline = time.monotonic() + 5
        while len(gateway.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # anything forged would have arrived by now
        assert gateway.received == [
            ("offsite/v1/gas/gas-0001/telemetry", b"mine"),
            ("offsite/v1/gas/gas-0001/telemetry", b"mine again"),
        ]
        # A reads its own command topic only; the gateway writes commands
        a = connect(port, "gas-0001", secrets["gas-0001"])
        try:
            # mosquitto 2.0 grants the SUBSCRIBE and checks `read` at each delivery
            assert a.subscribe("offsite/v1/gas/gas-0002/cmd")[0] in (1, NOT_AUTHORIZED)
            assert a.subscribe("offsite/v1/gas/+/cmd") == [1]
            assert gateway.publish("offsite/v1/gas/gas-0002/cmd", b"for B") in (0, 0x10)
            assert gateway.publish("offsite/v1/gas/gas-0001/cmd", b"for A") == 0
            deadline = time.monotonic() + 5
            while not a.received and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
            assert a.received == [("offsite/v1/gas/gas-0001/cmd", b"for A")]
        finally:
            a.close()
    finally:
        gateway.close()


def test_wrong_password_anonymous_and_revoked_are_refused(
    authed_broker: SecureBroker, database_url: str
) -> None:
    secrets = issue(database_url, "gas-0001", "gas-0002")
    authed_broker.reload()
    port = authed_broker.port
    wrong = connect(port, "gas-0001", secrets["gas-0002"])
    anonymous = connect(port, None, None)
    unknown = connect(port, "gas-0003", secrets["gas-0001"])
    for client in (wrong, anonymous, unknown):
        client.close()
        assert client.connack
        assert client.connack[0] in (BAD_CREDENTIALS, NOT_AUTHORIZED)
    b = connect(port, "gas-0002", secrets["gas-0002"])
    assert b.connack == [0]
    a = connect(port, "gas-0001", secrets["gas-0001"])
    assert a.connack == [0]

    with psycopg.connect(database_url) as conn:
        credentials.revoke(conn, "gas-0002")
    authed_broker.reload()
    # mosquitto rechecks connected clients on SIGHUP: the revoked device is cut off now
    deadline = time.monotonic() + 5
    while b.client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not b.client.is_connected()
    b.close()
    assert a.client.is_connected()  # the others stay
    assert a.publish("offsite/v1/gas/gas-0001/telemetry", b"still here") in (0, 0x10)
    a.close()
    revoked = connect(port, "gas-0002", secrets["gas-0002"])
    still = connect(port, "gas-0001", secrets["gas-0001"])
    revoked.close()
    still.close()
    assert revoked.connack
    assert revoked.connack[0] in (BAD_CREDENTIALS, NOT_AUTHORIZED)
    assert still.connack == [0]


def test_secure_config_keeps_the_development_tuning(tmp_path: Path) -> None:
    """The production file is the development one plus its listener: no setting drifts."""
    text = secure_mosquitto_config(1, tmp_path, tmp_path / "p", tmp_path / "a")
    dev = Path(credentials.__file__).parent.parent / "deploy" / "mosquitto.conf"

    def settings(conf: str) -> list[str]:
        lines = [ln for ln in conf.splitlines() if ln and not ln.startswith("#")]
        return lines[: next(i for i, ln in enumerate(lines) if ln.startswith("listener"))]

    secure = settings(text)
    assert secure[: len(settings(dev.read_text()))] == [
        ln.replace("/mosquitto/data/", f"{tmp_path}/") for ln in settings(dev.read_text())
    ]
    assert "allow_anonymous false" in text
    assert "per_listener_settings true" in text


def test_simulator_refuses_to_start_without_a_secret_for_each_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text('{"gas-0001": "s"}')
    args = ["simulate", "gas", "--devices", "2", "--mqtt-url", "mqtt://127.0.0.1:1"]
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main([*args, "--duration", "1", "--credentials", str(secrets)]) == 2
    finally:
        signal.signal(signal.SIGTERM, previous)  # `simulate` installs its own
    assert "no credentials for device 'gas-0002'" in capsys.readouterr().err
    secrets.write_text('{"gas-0001": 5}')
    assert main([*args, "--duration", "1", "--credentials", str(secrets)]) == 2
    assert "expected a JSON object of strings" in capsys.readouterr().err
