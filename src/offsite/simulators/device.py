"""The MQTT connection every simulated device has: its own client, a retained `online`
status said again on every (re)connect, `offline` as its last will, a buffer while the
broker is away, a clean stop that says `offline` itself, and, for a device that takes
commands, its `cmd` topic subscribed with every acknowledgement published on `cmd/ack`."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from offsite.simulators.commands import Handler, answer, cmd_topic

_LOG = logging.getLogger(__name__)


class MissingCredentialsError(ValueError):
    """A simulated device has no secret among those given for a secured broker."""


@dataclass(frozen=True, slots=True)
class DeviceSecurity:
    """How simulated devices log in to a secured broker: each as its own id with its own
    secret (`offsite devices credentials issue --output`), over TLS when `tls` is set."""

    secrets: Mapping[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None

    def secret_of(self, device_id: str) -> str | None:
        if not self.secrets:
            return None  # anonymous: the development broker
        secret = self.secrets.get(device_id)
        if secret is None:
            raise MissingCredentialsError(
                f"no credentials for device {device_id!r} in the secrets given"
            )
        return secret


def device_client(
    domain: str,
    device_id: str,
    host: str,
    port: int,
    *,
    protocol: str = "3.1.1",
    buffered: int = 100_000,
    on_command: Handler | None = None,
    security: DeviceSecurity | None = None,
) -> paho.Client:
    """Connecting in the background (start its loop to send). With `on_command`, commands
    are carried out on paho's network thread: the handler must guard what it shares."""
    status = f"offsite/v1/{domain}/{device_id}/status"
    commands = cmd_topic(domain, device_id)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"sim-{device_id}",
        protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311,
    )
    if security is not None:
        secret = security.secret_of(device_id)
        if secret is not None:
            client.username_pw_set(device_id, secret)
        if security.tls is not None:
            client.tls_set_context(security.tls)
    client.will_set(status, b"offline", qos=1, retain=True)

    def on_connect(c: paho.Client, *_: object) -> None:
        # Said again on every reconnect, after the broker may have published the will; the
        # session is clean, so the command subscription is made again too.
        c.publish(status, b"online", qos=1, retain=True)
        if on_command is not None:
            c.subscribe(commands, qos=1)

    def on_message(c: paho.Client, _: object, msg: paho.MQTTMessage) -> None:
        if on_command is None or msg.topic != commands:
            return
        ack = answer(bytes(msg.payload), on_command, datetime.now(UTC))
        if ack is None:
            return
        _LOG.info("%s: %s -> ok=%s (%s)", device_id, ack.command_id, ack.ok, ack.detail)
        c.publish(commands + "/ack", ack.model_dump_json().encode(), qos=1)

    client.on_connect = on_connect
    client.on_message = on_message
    client.max_queued_messages_set(buffered)
    client.reconnect_delay_set(1, 10)
    client.connect_async(host, port, keepalive=30)
    return client


def stop_device(client: paho.Client, domain: str, device_id: str) -> None:
    """A clean stop says offline itself; the will is for when the device just dies."""
    status = f"offsite/v1/{domain}/{device_id}/status"
    # The broker may be gone first (Ctrl-C reaches the whole demo): the will covers it.
    with contextlib.suppress(RuntimeError, ValueError):
        client.publish(status, b"offline", qos=1, retain=True).wait_for_publish(2)
    client.disconnect()
    client.loop_stop()
