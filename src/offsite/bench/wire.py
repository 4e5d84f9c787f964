"""Just enough MQTT 3.1.1 on a raw socket to generate and absorb load.

The benchmark must not be limited by its own clients: paho-mqtt spends tens of microseconds
of Python per message, which on a two-core machine would measure the load generator rather
than the gateway. These clients pre-encode packets and write and read them in bulk. They are
for load generation only; devices and the gateway use paho-mqtt.
"""

from __future__ import annotations

import socket
import struct
import time

from offsite.gateway.mqtt import (
    decode_varint,
    encode_packet,
    encode_publish,
    encode_string,
)


class WireError(Exception):
    """The broker answered something unexpected."""


def publish_packet(topic: bytes, payload: bytes, qos: int, packet_id: int) -> bytes:
    return encode_publish(topic, payload, qos, packet_id, v5=False)


class _Client:
    def __init__(self, host: str, port: int, client_id: str, keepalive: int = 60) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        body = encode_string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive)
        body += encode_string(client_id.encode())
        self.sock.sendall(encode_packet(0x10, body))
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise WireError(f"connection refused: {connack!r}")
        self.buffer = bytearray()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise WireError("connection closed by the broker")
            data += chunk
        return data

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")
        finally:
            self.sock.close()

    def _packets(self) -> list[tuple[int, bytes]]:
        """Complete packets in the buffer, as (first byte, body); the rest stays."""
        out: list[tuple[int, bytes]] = []
        buf = self.buffer
        pos, end = 0, len(buf)
        while pos + 2 <= end:
            header = decode_varint(buf, pos + 1, end)
            if header is None or header[1] + header[0] > end:
                break
            length, start = header
            out.append((buf[pos], bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        return out


class Publisher(_Client):
    """Publishes with at most `window` QoS 1 messages unacknowledged."""

    def __init__(self, host: str, port: int, client_id: str, qos: int, window: int = 5000) -> None:
        super().__init__(host, port, client_id)
        self.qos = qos
        self.window = window
        self.inflight = 0
        self.next_id = 1
        self.acked = 0

    def send(self, messages: list[tuple[bytes, bytes]]) -> None:
        packets: list[bytes] = []
        for topic, payload in messages:
            if self.qos:
                if self.inflight >= self.window:
                    # what is built is counted in flight: it must be on the wire before
                    # waiting for its acknowledgements
                    self.sock.sendall(b"".join(packets))
                    packets.clear()
                    while self.inflight >= self.window:
                        self._read_acks(block=True)
                packets.append(publish_packet(topic, payload, self.qos, self.next_id))
                self.next_id = self.next_id % 65535 + 1
                self.inflight += 1
            else:
                packets.append(publish_packet(topic, payload, 0, 0))
        self.sock.sendall(b"".join(packets))
        if self.qos:
            self._read_acks(block=False)

    def _read_acks(self, block: bool) -> None:
        self.sock.setblocking(block)
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        finally:
            self.sock.setblocking(True)
        if not data:
            raise WireError("connection closed by the broker")
        self.buffer += data
        for kind, _ in self._packets():
            if kind == 0x40:
                self.inflight -= 1
                self.acked += 1

    def drain(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            self.sock.settimeout(1.0)
            try:
                self._read_acks(block=True)
            except TimeoutError:
                continue
        if self.inflight:
            raise WireError(f"{self.inflight} messages never acknowledged")


class Subscriber(_Client):
    """Counts messages and acknowledges them; does nothing else with them."""

    def __init__(self, host: str, port: int, client_id: str, topic: str, qos: int) -> None:
        super().__init__(host, port, client_id)
        body = struct.pack("!H", 1) + encode_string(topic.encode()) + bytes([qos])
        self.sock.sendall(encode_packet(0x82, body))
        self.qos = qos

    def count(self, expected: int, idle_timeout_s: float) -> tuple[int, float, float]:
        """Receive until `expected` messages or silence; (count, first, last) monotonic."""
        received = 0
        first = last = 0.0
        self.sock.settimeout(idle_timeout_s)
        while received < expected:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            if not data:
                break
            now = time.monotonic()
            self.buffer += data
            acks = []
            for kind, body in self._packets():
                if kind >> 4 != 3:
                    continue
                received += 1
                if (kind >> 1) & 3:
                    topic_len = struct.unpack_from("!H", body)[0]
                    acks.append(b"\x40\x02" + body[2 + topic_len : 4 + topic_len])
            if acks:
                self.sock.sendall(b"".join(acks))
            if received and not first:
                first = now
            last = now
        return received, first, last
