"""Each device's own MQTT credentials, and the Mosquitto password and ACL files made from them.

A device's username is its id; its secret is 32 random bytes, shown once when issued. The
database keeps only a hash in Mosquitto's PBKDF2-SHA512 format (`$7$iterations$salt$hash`,
what `mosquitto_passwd` writes), so that the password file is exported without any secret.
The secret is random, not chosen by a person: key stretching adds nothing against guessing
256 bits, so the iteration count is kept low enough that a reconnect storm of thousands of
devices does not stall the broker on CONNECT.

The ACL gives each device exactly its own topics: write telemetry (cameras: frames), status
and command acknowledgements; read its command topic. The gateway's user reads what it
subscribes to (with and without `$share/<group>/`) and writes commands.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import signal
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

ITERATIONS = 1000
_SALT_BYTES = 12  # as mosquitto_passwd
_KEY_BYTES = 64  # SHA-512 output


class CredentialError(Exception):
    """A credential operation that cannot be done (unknown device, nothing to rotate...)."""


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    device_id: str
    domain: str
    issued_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExportReport:
    devices: int
    passwd: Path
    acl: Path


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def mosquitto_hash(secret: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """`secret` hashed as a mosquitto password file entry (`$7$`, PBKDF2-SHA512)."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations, _KEY_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_secret(secret: str, hashed: str) -> bool:
    """Whether `secret` matches a `$7$` hash (what the broker checks at CONNECT)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt, key = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations, len(key))
    return hmac.compare_digest(got, key)


def device_topics(domain: str, device_id: str) -> tuple[list[str], list[str]]:
    """(topics the device may write, topics it may read): its own and nothing else."""
    base = f"offsite/v1/{domain}/{device_id}"
    data = f"{base}/frame" if domain == "video" else f"{base}/telemetry"
    return [data, f"{base}/status", f"{base}/cmd/ack"], [f"{base}/cmd"]


GATEWAY_READS = (
    "offsite/v1/+/+/telemetry",
    "offsite/v1/+/+/status",
    "offsite/v1/+/+/cmd/ack",
    "offsite/v1/video/+/frame",
)
GATEWAY_WRITES = ("offsite/v1/+/+/cmd",)


def _device_domain(conn: psycopg.Connection[Any], device_id: str) -> str:
    row = conn.execute("SELECT domain FROM devices WHERE id = %s", (device_id,)).fetchone()
    if row is None:
        raise CredentialError(f"no device {device_id!r} in the registry")
    return str(row[0])


def issue(conn: psycopg.Connection[Any], device_id: str) -> str:
    """New credentials for a device that has none in force; returns the secret (shown once)."""
    _device_domain(conn, device_id)
    secret = new_secret()
    row = conn.execute(
        "INSERT INTO device_credentials (device_id, secret_hash) VALUES (%s, %s)"
        " ON CONFLICT (device_id) DO UPDATE"
        " SET secret_hash = excluded.secret_hash, issued_at = now(), revoked_at = NULL"
        " WHERE device_credentials.revoked_at IS NOT NULL"
        " RETURNING device_id",
        (device_id, mosquitto_hash(secret)),
    ).fetchone()
    if row is None:
        raise CredentialError(
            f"device {device_id!r} already has credentials in force; rotate or revoke them"
        )
    return secret


def rotate(conn: psycopg.Connection[Any], device_id: str) -> str:
    """Replace a device's secret; the old one stops working at the next export and reload."""
    _device_domain(conn, device_id)
    row = conn.execute(
        "UPDATE device_credentials SET secret_hash = %s, issued_at = now(), revoked_at = NULL"
        " WHERE device_id = %s RETURNING device_id",
        (mosquitto_hash(secret := new_secret()), device_id),
    ).fetchone()
    if row is None:
        raise CredentialError(f"device {device_id!r} has no credentials to rotate; issue first")
    return secret


def revoke(conn: psycopg.Connection[Any], device_id: str) -> None:
    row = conn.execute(
        "UPDATE device_credentials SET revoked_at = now()"
        " WHERE device_id = %s AND revoked_at IS NULL RETURNING device_id",
        (device_id,),
    ).fetchone()
    if row is None:
        raise CredentialError(f"device {device_id!r} has no credentials in force")


def list_credentials(conn: psycopg.Connection[Any]) -> list[CredentialInfo]:
    rows = conn.execute(
        "SELECT c.device_id, d.domain, c.issued_at, c.revoked_at"
        " FROM device_credentials c JOIN devices d ON d.id = c.device_id ORDER BY c.device_id"
    ).fetchall()
    return [CredentialInfo(*row) for row in rows]


def _write_atomically(path: Path, text: str) -> None:
    """Mosquitto may reread the file at any SIGHUP: it never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o640)  # hashes only, but not for every local user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_mosquitto(
    conn: psycopg.Connection[Any],
    passwd: Path,
    acl: Path,
    gateway_username: str,
    gateway_password: str,
) -> ExportReport:
    """Write the password and ACL files for every active device with credentials in force."""
    if not gateway_username or not gateway_password:
        raise CredentialError(
            "the gateway's own credentials are needed (OFFSITE_MQTT_USERNAME and"
            " OFFSITE_MQTT_PASSWORD)"
        )
    rows = conn.execute(
        "SELECT d.id, d.domain, c.secret_hash FROM device_credentials c"
        " JOIN devices d ON d.id = c.device_id"
        " WHERE c.revoked_at IS NULL AND d.active ORDER BY d.id"
    ).fetchall()
    if any(str(device_id) == gateway_username for device_id, _, _ in rows):
        raise CredentialError(f"the gateway's username {gateway_username!r} is a device id")
    users = [f"{gateway_username}:{mosquitto_hash(gateway_password)}"]
    acl_lines = [
        "# Made by `offsite devices credentials export-mosquitto`; edits are overwritten.",
        "# Anything not granted here is refused (mosquitto's ACL default).",
        "",
        f"user {gateway_username}",
    ]
    for topic in GATEWAY_READS:
        acl_lines.append(f"topic read {topic}")
        # shared subscriptions of several workers, for a broker that checks the filter as
        # subscribed (mosquitto 2.0 grants the SUBSCRIBE and checks each delivery's topic)
        acl_lines.append(f"topic read $share/+/{topic}")
    acl_lines += [f"topic write {topic}" for topic in GATEWAY_WRITES]
    for device_id, domain, secret_hash in rows:
        users.append(f"{device_id}:{secret_hash}")
        writes, reads = device_topics(str(domain), str(device_id))
        acl_lines += ["", f"user {device_id}"]
        acl_lines += [f"topic write {topic}" for topic in writes]
        acl_lines += [f"topic read {topic}" for topic in reads]
    _write_atomically(passwd, "\n".join(users) + "\n")
    _write_atomically(acl, "\n".join(acl_lines) + "\n")
    return ExportReport(len(rows), passwd, acl)


def reload_mosquitto(pid: int) -> None:
    """Mosquitto rereads its password and ACL files on SIGHUP; a connected client whose
    credentials are gone is disconnected then (mosquitto 2.0), and refused at CONNECT."""
    os.kill(pid, signal.SIGHUP)
