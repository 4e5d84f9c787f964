"""The MQTT connection every simulated device has: its own client, a retained `online`
status said again on every (re)connect, `offline` as its last will, a buffer while the
broker is away, and a clean stop that says `offline` itself."""

from __future__ import annotations

import contextlib

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def device_client(
    domain: str,
    device_id: str,
    host: str,
    port: int,
    *,
    protocol: str = "3.1.1",
    buffered: int = 100_000,
) -> paho.Client:
    """Connecting in the background (start its loop to send)."""
    status = f"offsite/v1/{domain}/{device_id}/status"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"sim-{device_id}",
        protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311,
    )
    client.will_set(status, b"offline", qos=1, retain=True)
    # Said again on every reconnect, after the broker may have published the will.
    client.on_connect = lambda c, *_: c.publish(status, b"online", qos=1, retain=True)
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
