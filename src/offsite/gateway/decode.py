"""Raw MQTT messages in, typed readings or reasoned refusals out. Pure: no I/O.

JSON is decoded once, straight into the typed models, on the usual path: gas readings, the
gateway's bulk, by msgspec into `GasWire`; equipment readings by pydantic. A message that
does not pass whole is decoded again by the pydantic models, the reference, and when it
fails there too it is taken apart item by item, so that the good readings of an array are
kept and each bad one is quarantined with its own reason.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import repeat
from typing import Any, Final, Literal

import msgspec
from pydantic import ConfigDict, TypeAdapter, ValidationError

from offsite.gateway.equipment_payloads import EQUIPMENT_READINGS, EquipmentReading
from offsite.gateway.payloads import (
    EPOCH,
    CommandAck,
    DeviceStatus,
    EventTime,
    GasReading,
    GasWire,
    Reading,
    epoch_us,
)

TOPIC_PREFIX: Final = "offsite/v1/"
IDENTITY_MISMATCH: Final = "identity_mismatch"
"""Reason (prefix) of a payload whose claimed device is not the one of its topic."""
_MAX_FUTURE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class _Decoder:
    one_or_many: TypeAdapter[Any]
    one: TypeAdapter[Any]


def _decoder(model: type[Reading]) -> _Decoder:
    return _Decoder(TypeAdapter(model | list[model]), TypeAdapter(model))  # type: ignore[valid-type,arg-type]


_DECODERS: dict[str, _Decoder] = {
    "gas_detector": _decoder(GasReading),
    **{kind: _decoder(model) for kind, model in EQUIPMENT_READINGS.items()},
}
"""The payload model of each device kind that publishes telemetry (the registry's kind)."""

_GAS_WIRE: Final = msgspec.json.Decoder(GasWire | list[GasWire])
_EVENT_TIMES: Final = TypeAdapter(
    list[EventTime], config=ConfigDict(val_temporal_unit="milliseconds")
)
"""`GasReading`'s own parser of event times, for the ones `GasWire` takes as text."""
_MAX_FUTURE_MS: Final = _MAX_FUTURE // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """What decoding needs to know of a registered device."""

    id: str
    domain: str
    kind: str


@dataclass(frozen=True, slots=True)
class Topic:
    domain: str
    device_id: str
    channel: Literal["telemetry", "status", "frame", "cmd/ack"]


def _storable(text: str) -> str:
    """Text PostgreSQL can hold: a NUL or a lone surrogate (from a JSON key, say) escaped.
    Unescaped, one such refusal made the quarantine insert, and so its whole batch, fail."""
    if text.isprintable():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Something that will not be stored as telemetry, and why."""

    topic: str
    device_id: str | None
    reason: str
    payload: bytes

    def __post_init__(self) -> None:
        for name in ("topic", "device_id", "reason"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _storable(value))


@dataclass(slots=True)
class Decoded:
    """The outcome of one message: readings to store, refusals to quarantine, a status."""

    gas_readings: list[GasWire] = field(default_factory=list)
    """The gas readings of the message, all of `gas_device`."""
    gas_device: str = ""
    equipment: list[tuple[str, EquipmentReading]] = field(default_factory=list)
    acks: list[tuple[str, CommandAck]] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    status: tuple[str, DeviceStatus] | None = None

    @property
    def gas(self) -> list[tuple[str, GasWire]]:
        """The gas readings as (device, reading)."""
        return [(self.gas_device, r) for r in self.gas_readings]


@functools.lru_cache(maxsize=1 << 16)
def parse_topic(topic: str) -> Topic | None:
    """`offsite/v1/{domain}/{device_id}/{channel}`, or None for anything else. Remembered
    for the topics seen most recently: a device sends on the same few, and every message is
    parsed where it is admitted and again where it is decoded."""
    if not topic.startswith(TOPIC_PREFIX):
        return None
    parts = topic[len(TOPIC_PREFIX) :].split("/")
    if len(parts) == 3 and parts[2] in ("telemetry", "status", "frame"):
        channel: Literal["telemetry", "status", "frame", "cmd/ack"] = parts[2]  # type: ignore[assignment]
    elif len(parts) == 4 and parts[2:] == ["cmd", "ack"]:
        channel = "cmd/ack"
    else:
        return None
    domain, device_id = parts[0], parts[1]
    if not domain or not device_id:
        return None
    return Topic(domain, device_id, channel)


def _describe(error: ValidationError, index: int | None = None) -> str:
    first = error.errors(include_url=False)[0]
    # the union's branch names (GasReading, list[GasReading], ...) say nothing to a sender
    where = ".".join(str(p) for p in first["loc"] if not str(p).endswith(("Reading", "Reading]")))
    prefix = f"item {index}: " if index is not None else ""
    count = error.error_count()
    more = f" (+{count - 1} more)" if count > 1 else ""
    return f"{prefix}invalid {where or 'payload'}: {first['msg']}{more}"


def _count_problem(count: int, max_readings: int) -> str | None:
    """Why a message of `count` readings is refused whole, if it is."""
    if count == 0:
        # nothing to store, but a message is never dropped without a trace
        return "an empty array holds no readings"
    if count > max_readings:
        return f"{count} readings in one message exceed {max_readings}"
    return None


def gas_readings(
    topic: str,
    payload: bytes,
    devices: Mapping[str, KnownDevice],
    latest_ms: float,
    *,
    max_payload_bytes: int,
    max_readings: int,
) -> tuple[str, list[GasWire]] | None:
    """The usual message, in one step: a known gas detector's telemetry whose readings all
    pass the fast decoder, with event times in epoch milliseconds up to `latest_ms` (a day
    past the message's receipt). Its device and readings, or None for anything else, which
    `decode_message` then decides (this is its first step: it decides nothing otherwise)."""
    parsed = parse_topic(topic)
    if parsed is None or parsed.channel != "telemetry" or len(payload) > max_payload_bytes:
        return None
    device = devices.get(parsed.device_id)
    if device is None or device.kind != "gas_detector" or device.domain != parsed.domain:
        return None
    try:
        value = _GAS_WIRE.decode(payload)
    except msgspec.DecodeError:  # ValidationError included
        return None
    if isinstance(value, GasWire):
        ts = value.ts
        return (parsed.device_id, [value]) if isinstance(ts, int) and ts <= latest_ms else None
    if not value or len(value) > max_readings:
        return None
    try:
        newest = max([r.ts for r in value])
    except TypeError:  # numbers and text mixed
        return None
    return (parsed.device_id, value) if isinstance(newest, int) and newest <= latest_ms else None


def latest_ms(received_at: datetime) -> float:
    """The newest event time (epoch ms) a message received at `received_at` may carry."""
    return received_at.timestamp() * 1000 + _MAX_FUTURE_MS


def decode_message(
    topic: str,
    payload: bytes,
    devices: Mapping[str, KnownDevice],
    received_at: datetime,
    *,
    max_payload_bytes: int,
    max_readings: int,
) -> Decoded:
    """Decode one MQTT message against the registry."""
    usual = gas_readings(
        topic,
        payload,
        devices,
        latest_ms(received_at),
        max_payload_bytes=max_payload_bytes,
        max_readings=max_readings,
    )
    if usual is not None:
        return Decoded(gas_readings=usual[1], gas_device=usual[0])
    out = Decoded()
    parsed = parse_topic(topic)
    if parsed is None:
        out.refusals.append(Refusal(topic, None, "unknown topic", payload))
        return out
    device_id = parsed.device_id

    def refuse(reason: str, body: bytes = payload) -> Decoded:
        out.refusals.append(Refusal(topic, device_id, reason, body))
        return out

    if len(payload) > max_payload_bytes:
        return refuse(
            f"payload of {len(payload)} bytes exceeds the limit of {max_payload_bytes}",
            payload[:max_payload_bytes],
        )
    device = devices.get(device_id)
    if device is None:
        return refuse(f"unknown device {device_id!r}")
    if device.domain != parsed.domain:
        return refuse(f"device {device_id!r} is registered in domain {device.domain!r}")

    if parsed.channel == "status":
        text = payload.decode("utf-8", errors="replace").strip()
        if text not in ("online", "offline"):
            return refuse("status must be 'online' or 'offline'")
        out.status = (device_id, "online" if text == "online" else "offline")
        return out
    if parsed.channel == "cmd/ack":
        try:
            out.acks.append((device_id, CommandAck.model_validate_json(payload)))
        except ValidationError as exc:
            return refuse(_describe(exc))
        return out
    decoder = _DECODERS.get(device.kind)
    if parsed.channel != "telemetry" or decoder is None:
        return refuse(f"no decoder for {parsed.domain}/{parsed.channel}")

    is_gas = device.kind == "gas_detector"
    if is_gas and _decode_gas_wire(out, topic, device_id, payload, received_at, max_readings):
        return out

    sink: list[tuple[str, Any]] = [] if is_gas else out.equipment
    try:
        value = decoder.one_or_many.validate_json(payload)
    except ValidationError:
        _decode_items(out, sink, decoder.one, topic, device_id, payload, max_readings)
    else:
        readings = value if isinstance(value, list) else [value]
        problem = _count_problem(len(readings), max_readings)
        if problem is not None:
            return refuse(problem)
        sink.extend(zip(repeat(device_id), readings))
    # A clock far ahead is rare: one comparison per message finds out whether to look closer.
    if sink and max(r.ts for _, r in sink) > received_at + _MAX_FUTURE:
        kept: list[tuple[str, Any]] = []
        for item in sink:
            problem = _ahead_of(item[1].ts, received_at)
            if problem is None:
                kept.append(item)
            else:
                out.refusals.append(
                    Refusal(topic, device_id, problem, item[1].model_dump_json().encode())
                )
        sink[:] = kept
    if is_gas and sink:
        out.gas_device = device_id
        out.gas_readings.extend(GasWire.of(r) for _, r in sink)
    return out


def _decode_gas_wire(
    out: Decoded,
    topic: str,
    device_id: str,
    payload: bytes,
    received_at: datetime,
    max_readings: int,
) -> bool:
    """The usual path of a gas message; False when the fast decoder does not take it."""
    decoded = _gas_wire(payload)
    if decoded is None:
        return False
    wire, newest_ms = decoded
    problem = _count_problem(len(wire), max_readings)
    if problem is not None:
        out.refusals.append(Refusal(topic, device_id, problem, payload))
    else:
        out.gas_device = device_id
        if newest_ms > latest_ms(received_at):
            for reading in wire:
                problem = _ahead_of(reading.ts, received_at)
                if problem is None:
                    out.gas_readings.append(reading)
                else:
                    body = msgspec.json.encode(reading)
                    out.refusals.append(Refusal(topic, device_id, problem, body))
        else:
            out.gas_readings = wire
    return True


def _gas_wire(payload: bytes) -> tuple[list[GasWire], float] | None:
    """The fast decoder's readings and the newest of their event times (epoch ms), or None
    when it does not take the payload whole (the reference decoder then decides). Event
    times sent as text are parsed by `GasReading`'s own parser, in one call a message."""
    try:
        value = _GAS_WIRE.decode(payload)
    except msgspec.DecodeError:  # ValidationError included
        return None
    readings = value if isinstance(value, list) else [value]
    if not readings:
        return readings, 0.0
    stamps: list[Any] = [r.ts for r in readings]
    try:
        newest = max(stamps)
    except TypeError:  # numbers and text mixed
        newest = None
    if isinstance(newest, int):  # all in epoch milliseconds: the usual case
        return readings, newest
    texts: list[tuple[GasWire, str]] = []
    for reading in readings:
        if isinstance(ts := reading.ts, str):
            texts.append((reading, ts))
    parsed = _event_times([text for _, text in texts])
    if parsed is None:
        return None
    for (reading, _), stamp in zip(texts, parsed, strict=True):
        reading.ts = stamp
    if len(texts) == len(readings):
        return readings, epoch_us(max(parsed)) / 1000
    return readings, max(map(epoch_us, (r.ts for r in readings))) / 1000


def _event_times(texts: list[str]) -> list[datetime] | None:
    """Event times sent as text, parsed as `GasReading` parses them, or None if one is not
    an event time it takes."""
    try:
        return _EVENT_TIMES.validate_python(texts)
    except ValidationError:
        return None


def _ahead_of(ts: int | datetime, received_at: datetime) -> str | None:
    us = epoch_us(ts)
    if us <= epoch_us(received_at + _MAX_FUTURE):
        return None
    stamp = ts if isinstance(ts, datetime) else EPOCH + timedelta(milliseconds=ts)
    return f"implausible ts {stamp.isoformat()}: more than a day ahead of the gateway"


def _item_body(item: Any) -> bytes:
    """One refused item of an array, as JSON; escaped where it holds lone surrogates (which
    `json.loads` lets through and UTF-8 cannot encode)."""
    try:
        return json.dumps(item, ensure_ascii=False, allow_nan=True).encode()
    except UnicodeEncodeError:
        return json.dumps(item, allow_nan=True).encode()


def _decode_items(
    out: Decoded,
    sink: list[tuple[str, Any]],
    one: TypeAdapter[Any],
    topic: str,
    device_id: str,
    payload: bytes,
    max_readings: int,
) -> None:
    """The slow path: say exactly what is wrong, keep what is right."""
    if b"\x00" in payload:
        # UTF-16 or UTF-32 text of ASCII is valid UTF-8 with a NUL every other byte
        reason = "payload is not UTF-8 JSON text: it holds NUL bytes (UTF-16 or UTF-32?)"
        out.refusals.append(Refusal(topic, device_id, reason, payload))
        return
    try:
        document = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        out.refusals.append(Refusal(topic, device_id, "payload is not UTF-8 text", payload))
        return
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = (
            f"malformed JSON: {exc}"
            if isinstance(exc, json.JSONDecodeError)
            else "JSON nested too deeply"
        )
        out.refusals.append(Refusal(topic, device_id, reason, payload))
        return
    if isinstance(document, dict):
        if _claims_other(out, topic, device_id, document, payload):
            return
        try:
            sink.append((device_id, one.validate_python(document)))
        except ValidationError as exc:
            out.refusals.append(Refusal(topic, device_id, _describe(exc), payload))
        return
    if not isinstance(document, list):
        reason = f"payload must be a JSON object or array, not {type(document).__name__}"
        out.refusals.append(Refusal(topic, device_id, reason, payload))
        return
    problem = _count_problem(len(document), max_readings)
    if problem is not None:  # not empty here: an empty array passes the models
        out.refusals.append(Refusal(topic, device_id, problem, payload))
        return
    for index, item in enumerate(document):
        if isinstance(item, dict) and "device_id" in item:
            body = json.dumps(item, ensure_ascii=False, allow_nan=True).encode()
            if _claims_other(out, topic, device_id, item, body):
                continue
        try:
            sink.append((device_id, one.validate_python(item)))
        except ValidationError as exc:
            body = _item_body(item)
            out.refusals.append(Refusal(topic, device_id, _describe(exc, index), body))


def identity_refusal(topic: str, device_id: str, claimed: object, payload: bytes) -> Refusal:
    reason = f"{IDENTITY_MISMATCH}: payload claims device {claimed!r} on the topic of {device_id!r}"
    return Refusal(topic, device_id, reason, payload)


def _claims_other(
    out: Decoded, topic: str, device_id: str, item: dict[str, Any], body: bytes
) -> bool:
    """The device is the topic's (the broker's ACL ties a topic to one login). A payload
    naming another device is refused whole; naming its own, the field says nothing more
    and is dropped (the payload models do not carry it). Only this slow path sees it:
    the models forbid the field, so such a payload never passes the fast path."""
    if "device_id" not in item:
        return False
    claimed = item.pop("device_id")
    if claimed == device_id:
        return False
    out.refusals.append(identity_refusal(topic, device_id, claimed, body))
    return True
