"""The gateway's MQTT connection: paho-mqtt's network thread, bridged to asyncio.

paho-mqtt 2 is used directly (not through aiomqtt) for manual acknowledgements: a QoS 1
message is acknowledged to the broker only after what it carried is committed, so a gateway
that dies mid-batch is sent the unacknowledged messages again (persistent session).

Hand-off to asyncio is bounded: when `capacity` messages wait, the network thread blocks,
the broker stops getting PUBACKs and TCP back-pressure holds the rest at the broker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from offsite.gateway.errors import BrokerUnavailableError

_LOG = logging.getLogger(__name__)

SUBSCRIPTIONS: tuple[str, ...] = (
    "offsite/v1/gas/+/telemetry",
    "offsite/v1/+/+/status",
)
_SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    """Which connection delivered it: an ack is only valid on that connection."""
    received_at: datetime


@dataclass(frozen=True, slots=True)
class MqttOptions:
    host: str
    port: int
    client_id: str
    protocol: str = "5"
    username: str | None = None
    password: str | None = None
    shared_group: str | None = None
    keepalive_s: int = 30
    capacity: int = 20_000


class MqttGateway:
    """One owner: `start()` then `stop()`, both from the event loop that consumes batches."""

    def __init__(self, options: MqttOptions, loop: asyncio.AbstractEventLoop) -> None:
        self._options = options
        self._loop = loop
        self._queue: deque[Inbound] = deque()
        self._cond = threading.Condition()
        self._wakeup = asyncio.Event()
        self._wakeup_pending = False
        self._stopping = False
        self._generation = 0
        self._connected = asyncio.Event()
        self.connects = 0
        protocol = paho.MQTTv5 if options.protocol == "5" else paho.MQTTv311
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=protocol,
            clean_session=None if protocol == paho.MQTTv5 else False,
            manual_ack=True,
        )
        if options.username is not None:
            self._client.username_pw_set(options.username, options.password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_inflight_messages_set(1000)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def backlog(self) -> int:
        """Messages received and not yet taken by the writer."""
        return len(self._queue)

    def topics(self) -> list[str]:
        group = self._options.shared_group
        return [f"$share/{group}/{t}" if group else t for t in SUBSCRIPTIONS]

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect (reconnects are paho's, with backoff) and wait for the first CONNACK."""
        properties = None
        if self._options.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = _SESSION_EXPIRY_S
            # Unacknowledged QoS 1 messages the broker may have in flight to us: enough to
            # fill a batch while the previous one commits (the MQTT 5 maximum is 65535).
            properties.ReceiveMaximum = min(self._options.capacity, 65_535)
        try:
            self._client.connect_async(
                self._options.host,
                self._options.port,
                keepalive=self._options.keepalive_s,
                clean_start=(
                    False if self._options.protocol == "5" else paho.MQTT_CLEAN_START_FIRST_ONLY
                ),
                properties=properties,
            )
        except (OSError, ValueError) as exc:
            raise BrokerUnavailableError(f"cannot connect to MQTT broker: {exc}") from None
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            await self.stop()
            raise BrokerUnavailableError(
                f"no answer from MQTT broker at {self._options.host}:{self._options.port}"
                f" within {timeout_s:g} s"
            ) from None

    async def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def get_batch(self, max_items: int) -> list[Inbound]:
        """Wait for messages; take what has arrived, up to `max_items`."""
        while True:
            await self._wakeup.wait()
            with self._cond:
                count = min(max_items, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                if not self._queue:
                    self._wakeup_pending = False
                    self._wakeup.clear()
                self._cond.notify_all()
            if batch:
                return batch

    def ack(self, items: Sequence[Inbound]) -> int:
        """Acknowledge delivered messages whose content is committed. Returns the count."""
        acked = 0
        generation = self._generation
        for item in items:
            if item.qos > 0 and item.generation == generation:
                self._client.ack(item.mid, item.qos)
                acked += 1
        return acked

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)

    # paho's network thread below

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            _LOG.error("MQTT broker refused the connection: %s", reason)
            return
        self._generation += 1
        self.connects += 1
        client.subscribe([(t, 1) for t in self.topics()])
        _LOG.info(
            "connected to MQTT broker %s:%s (session present: %s)",
            self._options.host,
            self._options.port,
            flags.session_present,
        )
        self._loop.call_soon_threadsafe(self._connected.set)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._stopping:
            _LOG.warning("MQTT connection lost (%s); reconnecting", reason)
        self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload
        item = Inbound(
            message.topic,
            payload if isinstance(payload, bytes) else bytes(payload),
            message.mid,
            message.qos,
            self._generation,
            datetime.now(UTC),
        )
        with self._cond:
            while len(self._queue) >= self._options.capacity and not self._stopping:
                self._cond.wait(0.5)
            if self._stopping:
                return
            self._queue.append(item)
            if not self._wakeup_pending:
                self._wakeup_pending = True
                self._loop.call_soon_threadsafe(self._wakeup.set)
