"""Decoding at the edge: every message becomes typed readings or a refusal with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from offsite.gateway.decode import Decoded, KnownDevice, decode_message, parse_topic
from offsite.gateway.mqtt import user_properties
from offsite.gateway.payloads import epoch_us

DEVICES = {
    "gas-0001": KnownDevice("gas-0001", "gas", "gas_detector"),
    "elev-0001": KnownDevice("elev-0001", "equipment", "elevator"),
}
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
TOPIC = "offsite/v1/gas/gas-0001/telemetry"


def decode(payload: bytes, topic: str = TOPIC, limit: int = 4096) -> Decoded:
    return decode_message(topic, payload, DEVICES, NOW, max_payload_bytes=limit, max_readings=100)


def only_reason(result: Decoded) -> str:
    assert not result.gas
    assert len(result.refusals) == 1
    return result.refusals[0].reason


def test_object_with_epoch_milliseconds() -> None:
    result = decode(json.dumps({"ts": NOW_MS, "seq": 7, "lel_pct": 12.5, "valve": "open"}).encode())
    assert not result.refusals
    [(device, reading)] = result.gas
    assert device == "gas-0001"
    assert reading.ts == NOW_MS  # epoch milliseconds are kept as sent, exact
    assert epoch_us(reading.ts) == epoch_us(NOW)
    assert (reading.seq, reading.lel_pct, reading.valve) == (7, 12.5, "open")


def test_rfc3339_with_offset_is_normalised_to_utc() -> None:
    result = decode(b'{"ts": "2026-11-25T16:00:00+08:00", "seq": 1, "lel_pct": 3, "co_ppm": 2}')
    assert result.gas[0][1].ts == NOW
    assert result.gas[0][1].co_ppm == 2.0


def test_array_keeps_good_items_and_refuses_bad_ones_individually() -> None:
    payload = json.dumps(
        [
            {"ts": NOW_MS, "seq": 1, "lel_pct": 1.0},
            {"ts": NOW_MS + 1000, "seq": 2, "lel_pct": 140.0},
            {"ts": NOW_MS + 2000, "seq": 3, "lel_pct": 2.0},
        ]
    ).encode()
    result = decode(payload)
    assert [r.seq for _, r in result.gas] == [1, 3]
    [refusal] = result.refusals
    assert refusal.reason.startswith("item 1: invalid lel_pct")
    assert json.loads(refusal.payload)["seq"] == 2


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": 1, "seq": 1, "lel_pct": ', "malformed JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'"just a string"', "must be a JSON object or array"),
        (b'{"ts": 1764057600000, "seq": "1", "lel_pct": 3}', "invalid seq"),
        (b'{"ts": 1764057600000, "seq": true, "lel_pct": 3}', "invalid seq"),
        (b'{"ts": 1764057600000, "seq": 1, "lel_pct": "3"}', "invalid lel_pct"),
        (b'{"ts": 1764057600000, "seq": 1, "lel_pct": NaN}', "invalid lel_pct"),
        (b'{"ts": 1764057600000, "seq": 1, "lel_pct": 1e999}', "invalid lel_pct"),
        (b'{"ts": 1764057600000, "seq": -1, "lel_pct": 3}', "invalid seq"),
        (b'{"ts": "2026-11-25T08:00:00", "seq": 1, "lel_pct": 3}', "timezone info"),
        (b'{"ts": true, "seq": 1, "lel_pct": 3}', "invalid ts"),
        (b'{"seq": 1, "lel_pct": 3}', "invalid ts"),
        (b'{"ts": 1764057600000, "seq": 1, "lel_pct": 3, "lel": 9}', "invalid lel"),
        (b'{"ts": 1764057600000, "seq": 1, "lel_pct": 3, "valve": "ajar"}', "invalid valve"),
        (b'{"ts": 100, "seq": 1, "lel_pct": 3}', "greater than or equal to 2000-01-01"),
        (b'{"ts": 4102444800000, "seq": 1, "lel_pct": 3}', "ahead of the gateway"),
        (b"[" * 10_000 + b"]" * 10_000, "too"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    result = decode(payload, limit=1 << 20)
    assert reason in only_reason(result)
    assert result.refusals[0].device_id == "gas-0001"


def test_oversized_payload_is_refused_and_kept_truncated() -> None:
    payload = b'{"ts": 1, "pad": "' + b"x" * 10_000 + b'"}'
    result = decode(payload, limit=4096)
    assert "exceeds the limit of 4096" in only_reason(result)
    assert result.refusals[0].payload == payload[:4096]


def test_too_many_readings_in_one_message() -> None:
    items = [{"ts": NOW_MS, "seq": i, "lel_pct": 1.0} for i in range(101)]
    assert "101 readings" in only_reason(decode(json.dumps(items).encode(), limit=1 << 20))


def test_unknown_device_and_wrong_domain() -> None:
    body = json.dumps({"ts": NOW_MS, "seq": 1, "lel_pct": 1.0}).encode()
    assert "unknown device 'gas-9999'" in only_reason(
        decode(body, "offsite/v1/gas/gas-9999/telemetry")
    )
    assert "registered in domain 'equipment'" in only_reason(
        decode(body, "offsite/v1/gas/elev-0001/telemetry")
    )
    # a gas detector's own payload, on another domain's topic
    assert "registered in domain 'gas'" in only_reason(
        decode(body, "offsite/v1/equipment/gas-0001/telemetry")
    )


def test_status_topic() -> None:
    assert decode(b"offline", "offsite/v1/gas/gas-0001/status").status == ("gas-0001", "offline")
    assert "online" in only_reason(decode(b"maybe", "offsite/v1/gas/gas-0001/status"))


def test_topics() -> None:
    assert parse_topic("offsite/v1/gas/gas-0001/telemetry") is not None
    assert parse_topic("offsite/v1/gas/gas-0001/cmd/ack") is not None
    assert parse_topic("offsite/v1/gas//telemetry") is None
    assert parse_topic("offsite/v2/gas/x/telemetry") is None
    assert parse_topic("offsite/v1/gas/x/telemetry/extra") is None
    assert "unknown topic" in only_reason(decode(b"{}", "elsewhere/x"))


def test_user_properties_are_read_among_other_publish_properties() -> None:
    def prop_string(ident: int, *values: bytes) -> bytes:
        return bytes([ident]) + b"".join(len(v).to_bytes(2, "big") + v for v in values)

    properties = (
        b"\x01\x00"  # payload format indicator
        + b"\x02\x00\x00\x00\x3c"  # message expiry
        + prop_string(0x03, b"image/jpeg")
        + prop_string(0x09, b"\xff\xfe\x00")  # correlation data, not text
        + prop_string(0x26, b"ts", b"1764057600123")
        + prop_string(0x26, b"seq", b"42")
    )
    assert user_properties(properties) == {"ts": "1764057600123", "seq": "42"}
    # cut short: what came before the fault is kept
    assert user_properties(properties[:-3]) == {"ts": "1764057600123"}
    assert user_properties(b"") == {}
