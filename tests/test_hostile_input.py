"""Hostile input, property-based: whatever a device or the broker sends, each decoder gives
a result (readings kept, or refused with a reason that can be stored) or its own documented
error, never anything else, and never a hang. Pure and fast: no broker, no database."""

from __future__ import annotations

import codecs
import itertools
import json
import struct
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from offsite.detectors.video.decode import (
    MAX_PIXELS,
    FrameDecodeError,
    decode_reduced,
    jpeg_size,
)
from offsite.frames import frame_time
from offsite.gateway.decode import Decoded, KnownDevice, Refusal, decode_message
from offsite.gateway.errors import MqttProtocolError
from offsite.gateway.mqtt import (
    encode_publish,
    parse_connack,
    parse_suback,
    read_packets,
    user_properties,
)
from offsite.gateway.payloads import epoch_us
from tests.hostile import (
    FLOATS,
    HUGE,
    MIN_MS,
    NOW,
    NOW_MS,
    REQUIRED,
    broken_readings,
    dumps,
    json_values,
    valid_readings,
)

DEVICES = {
    "gas-0001": KnownDevice("gas-0001", "gas", "gas_detector"),
    "elev-0001": KnownDevice("elev-0001", "equipment", "elevator"),
    "boiler-0001": KnownDevice("boiler-0001", "equipment", "boiler"),
    "pv-0001": KnownDevice("pv-0001", "equipment", "pressure_vessel"),
    "crane-0001": KnownDevice("crane-0001", "equipment", "crane"),
    "cam-0001": KnownDevice("cam-0001", "video", "camera"),
}
TELEMETRY = {
    "gas_detector": "offsite/v1/gas/gas-0001/telemetry",
    "elevator": "offsite/v1/equipment/elev-0001/telemetry",
    "boiler": "offsite/v1/equipment/boiler-0001/telemetry",
    "pressure_vessel": "offsite/v1/equipment/pv-0001/telemetry",
    "crane": "offsite/v1/equipment/crane-0001/telemetry",
}
TOPICS = [
    *TELEMETRY.values(),
    "offsite/v1/gas/gas-0001/status",
    "offsite/v1/gas/gas-0001/cmd/ack",
    "offsite/v1/equipment/elev-0001/cmd/ack",
    "offsite/v1/gas/gas-9999/telemetry",  # unknown device
    "offsite/v1/gas/elev-0001/telemetry",  # known device, wrong domain
    "offsite/v1/video/cam-0001/frame",  # no decoder here: frames have their own path
    "offsite/v1/equipment/cam-0001/telemetry",
    "elsewhere/entirely",
]
LIMIT = 64 * 1024
MAX_READINGS = 200

FAST = settings(
    max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None
)


def decode(topic: str, payload: bytes, limit: int = LIMIT) -> Decoded:
    return decode_message(
        topic, payload, DEVICES, NOW, max_payload_bytes=limit, max_readings=MAX_READINGS
    )


def accounted(result: Decoded) -> int:
    """Every message comes out as something: readings, refusals, a status or an ack; and
    every refusal carries a reason the quarantine table can hold."""
    for refusal in result.refusals:
        assert refusal.reason.strip()
        for text in (refusal.topic, refusal.reason, refusal.device_id or ""):
            assert "\x00" not in text
            text.encode("utf-8")  # no lone surrogates: PostgreSQL text must take it
    count = len(result.gas) + len(result.equipment) + len(result.refusals) + len(result.acks)
    count += result.status is not None
    assert count >= 1, "a message vanished without a trace"
    return count


def reasons(result: Decoded) -> list[str]:
    return [r.reason for r in result.refusals]


def stored(result: Decoded) -> list[int]:
    return [r.seq for _, r in [*result.gas, *result.equipment]]


# -- telemetry, status and acknowledgements


@FAST
@given(topic=st.sampled_from(TOPICS) | st.text(max_size=80), payload=st.binary(max_size=4096))
@example(topic=TOPICS[0], payload=b"\xef\xbb\xbf{}")
@example(topic=TOPICS[0], payload=b"")
def test_any_bytes_on_any_topic(topic: str, payload: bytes) -> None:
    accounted(decode(topic, payload))


@FAST
@given(topic=st.sampled_from(TOPICS), value=json_values)
def test_any_json_value_on_any_topic(topic: str, value: Any) -> None:
    accounted(decode(topic, dumps(value)))


@FAST
@given(data=st.data(), kind=st.sampled_from(list(TELEMETRY)))
def test_any_valid_reading_is_kept(data: st.DataObject, kind: str) -> None:
    reading = data.draw(valid_readings(kind))
    as_array = data.draw(st.booleans())
    result = decode(TELEMETRY[kind], dumps([reading] if as_array else reading))
    assert not result.refusals, reasons(result)
    assert stored(result) == [reading["seq"]]


@FAST
@given(data=st.data(), kind=st.sampled_from(list(TELEMETRY)))
def test_mixed_array_keeps_the_valid_and_quarantines_each_invalid(
    data: st.DataObject, kind: str
) -> None:
    valid = data.draw(st.lists(st.booleans(), min_size=1, max_size=30))
    items = [
        data.draw(valid_readings(kind, i) if ok else broken_readings(kind, i))
        for i, ok in enumerate(valid)
    ]
    result = decode(TELEMETRY[kind], dumps(items))
    assert accounted(result) == len(items)
    assert stored(result) == [i for i, ok in enumerate(valid) if ok]
    refused = [i for i, ok in enumerate(valid) if not ok]
    assert len(result.refusals) == len(refused)
    if all(valid):
        return
    named = []
    for refusal in result.refusals:
        if refusal.reason.startswith("implausible ts"):
            # judged after decoding, on the reading itself (whose seq is the item's index)
            named.append(json.loads(refusal.payload)["seq"])
        else:
            assert refusal.reason.startswith("item "), refusal.reason
            named.append(int(refusal.reason.split(":")[0].removeprefix("item ")))
    assert sorted(named) == refused


@pytest.mark.parametrize("topic", [*TELEMETRY.values(), "offsite/v1/gas/gas-0001/cmd/ack"])
@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'[{"ts": 1, "seq": 1, "lel_pct": ' + b"[" * 10_000 + b"]" * 10_000 + b"}]",
        b"[" * 10_000,  # and never closed
        b"[" * 60_000 + b"]" * 60_000,  # 120 kB: under the limit of this test
    ],
    ids=["array", "object", "in-a-field", "unclosed", "60k"],
)
def test_deep_nesting_is_refused_with_a_reason(topic: str, payload: bytes) -> None:
    result = decode(topic, payload, limit=1 << 20)
    assert accounted(result) == 1
    [reason] = reasons(result)
    assert "deep" in reason or "recursion" in reason or "invalid" in reason or "JSON" in reason


@pytest.mark.parametrize("kind", list(TELEMETRY))
def test_huge_numbers_nan_and_infinity_are_refused_per_field(kind: str) -> None:
    base = {"ts": NOW_MS, "seq": 1, **REQUIRED[kind]}
    for name in ["seq", "ts", *FLOATS[kind]]:
        for literal in (str(HUGE), f"-{HUGE}", "1e400", "NaN", "Infinity", "-Infinity"):
            text = json.dumps({**base, name: "@"}).replace('"@"', literal)
            result = decode(TELEMETRY[kind], text.encode())
            assert accounted(result) == 1, (name, literal)
            [reason] = reasons(result)
            assert reason.startswith(f"invalid {name}: "), (name, literal, reason)


@FAST
@given(
    data=st.data(),
    kind=st.sampled_from(list(TELEMETRY)),
    codec=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]),
)
def test_text_in_other_encodings_is_refused_as_not_utf8(
    data: st.DataObject, kind: str, codec: str
) -> None:
    reading = data.draw(valid_readings(kind))
    result = decode(TELEMETRY[kind], json.dumps(reading).encode(codec))
    assert accounted(result) == 1
    assert "not UTF-8" in reasons(result)[0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (codecs.BOM_UTF8 + b'{"ts": 1, "seq": 1, "lel_pct": 1}', "BOM"),
        (b'{"ts": 1, "seq": 1, "lel_pct": 1, "fault": "\xff"}', "not UTF-8"),
        (b'{"ts": 1, "seq": 1, "lel_pct": 1, "fault": "\xed\xa0\x80"}', "not UTF-8"),
        (b'{"ts": 1, "seq": 1, "lel_pct": 1, "fault": "\xc0\xae"}', "not UTF-8"),  # overlong
        (f'{{"ts": {NOW_MS}, "seq": 1, "lel_pct": 1, "fault": "\\ud800"}}'.encode(), "fault"),
        (f'{{"ts": {NOW_MS}, "seq": 1, "lel_pct": 1, "fault": "a\\u0000"}}'.encode(), "fault"),
        (f'[{{"ts": {NOW_MS}, "seq": 1, "lel_pct": 1, "\\ud800": 1}}]'.encode(), "item 0"),
        (
            f'[{{"ts": {NOW_MS}, "seq": 1, "lel_pct": 1, "a\\u0000": 1}}]'.encode(),
            "item 0: invalid a\\x00",
        ),
    ],
)
def test_wrong_encodings_and_unstorable_text(payload: bytes, reason: str) -> None:
    """A NUL or a lone surrogate, once inside a reason or a stored reading, made the whole
    batch fail at the database; each is refused, and its reason escaped."""
    result = decode(TELEMETRY["gas_detector"], payload)
    assert accounted(result) == 1
    assert reason in reasons(result)[0]


@FAST
@given(data=st.data(), extra=st.integers(1, 5000))
def test_oversized_payloads_are_refused_unparsed(data: st.DataObject, extra: int) -> None:
    kind = data.draw(st.sampled_from(list(TELEMETRY)))
    items = [data.draw(valid_readings(kind, i)) for i in range(3)]
    body = dumps(items)
    # at the limit: decoded; one byte over or more: refused whole, kept truncated
    assert len(decode(TELEMETRY[kind], body, limit=len(body)).refusals) == 0
    padded = body[:-1] + b" " * extra + b"]"
    result = decode(TELEMETRY[kind], padded, limit=len(body))
    assert accounted(result) == 1
    assert not stored(result)
    [refusal] = result.refusals
    assert refusal.reason == f"payload of {len(padded)} bytes exceeds the limit of {len(body)}"
    assert refusal.payload == padded[: len(body)]


def test_oversized_deep_payload_is_refused_before_any_parsing() -> None:
    payload = b"[" * 2_000_000 + b"]" * 2_000_000
    started = time.perf_counter()
    result = decode(TELEMETRY["gas_detector"], payload)
    assert time.perf_counter() - started < 0.05
    assert "exceeds the limit" in reasons(result)[0]


@FAST
@given(ms=st.integers(-(2**70), 2**70) | st.integers(MIN_MS - 5, MIN_MS + 5))
@example(ms=NOW_MS + 86_400_000)
@example(ms=NOW_MS + 86_400_001)
@example(ms=253_402_300_799_999)  # the last millisecond of year 9999
@example(ms=253_402_300_800_000)
def test_epoch_timestamps_at_the_edges(ms: int) -> None:
    result = decode(TELEMETRY["gas_detector"], dumps({"ts": ms, "seq": 1, "lel_pct": 1.0}))
    accounted(result)
    if MIN_MS <= ms <= NOW_MS + 86_400_000:
        assert [epoch_us(r.ts) for _, r in result.gas] == [
            epoch_us(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))
        ]
    else:
        assert not result.gas
        assert "ts" in reasons(result)[0]


@FAST
@given(
    when=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_min=st.integers(-(24 * 60 - 1), 24 * 60 - 1),
)
def test_rfc3339_timestamps_with_any_offset(when: datetime, offset_min: int) -> None:
    ts = when.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    result = decode(
        TELEMETRY["gas_detector"], dumps({"ts": ts.isoformat(), "seq": 1, "lel_pct": 1.0})
    )
    accounted(result)
    if datetime(2000, 1, 1, tzinfo=UTC) <= ts <= NOW + timedelta(days=1):
        assert [r.ts for _, r in result.gas] == [ts]
    else:
        assert not result.gas


@FAST
@given(payload=st.binary(max_size=64) | st.text(max_size=20).map(str.encode))
@example(payload=b"online")
@example(payload=b" offline\n")
def test_status_is_online_offline_or_refused(payload: bytes) -> None:
    result = decode("offsite/v1/gas/gas-0001/status", payload)
    assert accounted(result) == 1
    if result.status is not None:
        assert payload.strip() in (b"online", b"offline")


@FAST
@given(value=json_values | st.fixed_dictionaries({"command_id": st.text(), "ok": st.booleans()}))
def test_command_acks_decode_or_are_refused(value: Any) -> None:
    result = decode("offsite/v1/gas/gas-0001/cmd/ack", dumps(value))
    assert accounted(result) == 1
    for _, ack in result.acks:
        assert "\x00" not in ack.command_id


def test_refusal_text_is_always_storable() -> None:
    refusal = Refusal("offsite/v1/gas/a\x00/telemetry", "a\x00\ud800", "bad \x00 \udfff", b"\x00")
    assert refusal.device_id == "a\\x00\\ud800"
    assert refusal.reason == "bad \\x00 \\udfff"
    assert refusal.payload == b"\x00"  # bytea holds anything


# -- the MQTT packet reader


def _publishes(draw: st.DrawFn, v5: bool) -> tuple[list[tuple[str, bytes, int, int, bytes]], bytes]:
    packets = draw(
        st.lists(
            st.tuples(
                st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t),
                st.binary(max_size=300),
                st.integers(0, 1),
                st.integers(1, 65535),
            ),
            max_size=8,
        )
    )
    out = []
    stream = b""
    for topic, payload, qos, mid in packets:
        stream += encode_publish(topic, payload, qos, mid, v5=v5)
        out.append((topic, payload, qos, mid if qos else 0, b""))
    return out, stream


@st.composite
def publish_streams(draw: st.DrawFn) -> tuple[bool, list[Any], bytes]:
    v5 = draw(st.booleans())
    expected, stream = _publishes(draw, v5)
    return v5, expected, stream


@FAST
@given(stream=publish_streams(), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_packet_reader_reassembles_publishes_across_any_reads(
    stream: tuple[bool, list[Any], bytes], cuts: list[int]
) -> None:
    v5, expected, data = stream
    buf = bytearray()
    got = []
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in itertools.pairwise(bounds):
        buf += data[start:end]
        published, controls, used = read_packets(buf, v5=v5, generation=1, now=NOW)
        assert not controls
        del buf[:used]
        got += [(p.topic, p.payload, p.qos, p.mid, p.properties) for p in published]
    assert got == expected
    assert not buf


@settings(max_examples=2000, deadline=1000, database=None)
@given(data=st.binary(max_size=2048), v5=st.booleans())
@example(data=b"\x30\x00", v5=False)  # PUBLISH without a topic length
@example(data=b"\x32\x03\x00\x01a", v5=False)  # QoS 1 without a packet id
@example(data=b"\x36\x03\x00\x01a", v5=False)  # QoS 3
@example(data=b"\x30\x04\x00\x05abc", v5=False)  # topic longer than the packet
@example(data=b"\x30\x03\x00\x01\xff", v5=False)  # topic not UTF-8
@example(data=b"\x30\x04\x00\x01a\x80", v5=True)  # properties length cut short
@example(data=b"\x30\x05\x00\x01a\x09\x00", v5=True)  # properties beyond the packet
@example(data=b"\x30\xff\xff\xff\xff\x01", v5=False)  # remaining length of five bytes
@example(data=b"\x30\xff\xff\xff\x7f", v5=False)  # 256 MB declared
@example(data=b"\x20\x00\x90\x01\x00", v5=True)  # empty CONNACK, short SUBACK
def test_packet_reader_takes_any_bytes(data: bytes, v5: bool) -> None:
    """Arbitrary bytes from a broker: packets, a wait for more bytes, or our error type;
    control packets' bodies likewise parse or raise it."""
    try:
        published, controls, used = read_packets(data, v5=v5, generation=1, now=NOW)
    except MqttProtocolError:
        return
    assert 0 <= used <= len(data)
    for p in published:
        assert isinstance(p.topic, str)
        assert isinstance(p.payload, bytes)
        assert p.qos in (0, 1, 2)
    for kind, body in controls:
        try:
            if kind == 2:
                parse_connack(body)
            elif kind == 9:
                codes = parse_suback(body, v5=v5)
                assert all(0 <= c <= 255 for c in codes)
        except MqttProtocolError:
            pass


def test_packet_reader_refuses_malformed_publishes() -> None:
    for data, v5 in [
        (b"\x30\x00", False),
        (b"\x32\x03\x00\x01a", False),
        (b"\x36\x03\x00\x01a", False),
        (b"\x30\x04\x00\x05abc", False),
        (b"\x30\x03\x00\x01\xff", False),
        (b"\x30\x05\x00\x01a\x09\x00", True),
        (b"\x30\xff\xff\xff\xff\x01", False),
    ]:
        with pytest.raises(MqttProtocolError):
            read_packets(data, v5=v5, generation=1, now=NOW)
    with pytest.raises(MqttProtocolError):
        parse_connack(b"")
    with pytest.raises(MqttProtocolError):
        parse_suback(b"\x00\x01\x05", v5=True)
    # incomplete is not malformed: it waits for the rest
    assert read_packets(b"\x30\x7f\x00", v5=False, generation=1, now=NOW)[2] == 0


# -- MQTT 5 user properties and frame times


def _string_pair(name: bytes, value: bytes) -> bytes:
    return b"\x26" + struct.pack("!H", len(name)) + name + struct.pack("!H", len(value)) + value


@FAST
@given(data=st.binary(max_size=512))
def test_user_properties_take_any_bytes(data: bytes) -> None:
    props = user_properties(data)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())


@FAST
@given(
    pairs=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=6),
    tail=st.binary(max_size=20),
)
def test_user_properties_round_trip_then_stop_at_a_fault(
    pairs: list[tuple[str, str]], tail: bytes
) -> None:
    assume(all("\x00" not in k + v for k, v in pairs))
    encoded = b"".join(_string_pair(k.encode(), v.encode()) for k, v in pairs)
    props = user_properties(encoded + tail)
    for name, value in dict(pairs).items():
        # a malformed tail may add a property or overwrite one, never lose what came first
        assert name in props
        if not tail:
            assert props[name] == value


@FAST
@given(
    props=st.dictionaries(
        st.sampled_from(["ts", "seq", "other"]),
        st.text(max_size=40)
        | st.integers(-(10**30), 10**400).map(str)
        | st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    )
)
@example(props={"ts": "9" * 400})
@example(props={"ts": "0001-01-01T00:00:00+14:00"})
@example(props={"seq": "١٢٣"})
@example(props={"seq": "9" * 5000})
def test_frame_time_reads_or_raises_value_error(props: dict[str, str]) -> None:
    try:
        ts, seq = frame_time(props, NOW)
    except ValueError:
        return
    assert ts.tzinfo is not None
    assert seq is None or 0 <= seq < 2**63


# -- JPEG frames


def _jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    pixels = np.random.default_rng(width * height).integers(0, 255, (height, width, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return bytes(buf.tobytes())


def _declare(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with another size in its start-of-frame header."""
    at = max(jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2"))
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


@settings(max_examples=200, deadline=2000, database=None)
@given(width=st.integers(1, 300), height=st.integers(1, 300), progressive=st.booleans())
def test_jpeg_size_is_read_from_the_header(width: int, height: int, progressive: bool) -> None:
    jpeg = _jpeg(width, height, progressive)
    assert jpeg_size(jpeg) == (width, height)
    assert decode_reduced(jpeg, 1).shape == (height, width)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize(
    "size", [(60_000, 60_000), (65_535, 65_535), (40_000, 1_000), (7681, 4320), (0, 100)]
)
def test_decompression_bombs_are_refused_before_decoding(
    progressive: bool, size: tuple[int, int]
) -> None:
    """A 1 kB JPEG declaring 60000x60000 took OpenCV 31 s and 10.5 GB (progressive)."""
    bomb = _declare(_jpeg(64, 64, progressive), *size)
    assert jpeg_size(bomb) == size
    started = time.perf_counter()
    with pytest.raises(FrameDecodeError, match="refused"):
        decode_reduced(bomb, 4)
    assert time.perf_counter() - started < 0.01
    assert size[0] * size[1] > MAX_PIXELS or 0 in size


@settings(max_examples=300, deadline=2000, database=None)
@given(data=st.binary(max_size=4096))
@example(data=b"\xff\xd8")
@example(data=b"\xff\xd8\xff\xc0\x00\x11")
@example(data=b"\xff\xd8\xff\xff\xff\xd9")
@example(data=b"\xff\xd8" + b"\xff\xe0\x00\x02" * 1000)
def test_random_bytes_are_not_a_frame(data: bytes) -> None:
    with pytest.raises(FrameDecodeError):
        decode_reduced(data, 4)


@settings(max_examples=200, deadline=2000, database=None)
@given(cut=st.integers(0, 10_000), progressive=st.booleans(), flips=st.lists(st.integers()))
def test_truncated_or_damaged_jpegs_decode_or_are_refused(
    cut: int, progressive: bool, flips: list[int]
) -> None:
    jpeg = bytearray(_jpeg(96, 64, progressive))
    for flip in flips:
        jpeg[flip % len(jpeg)] ^= 0xFF
    damaged = bytes(jpeg[: cut % (len(jpeg) + 1)])
    try:
        frame = decode_reduced(damaged, 4)
    except FrameDecodeError:
        return
    # libjpeg fills in what is missing; the frame keeps a size within the declared one
    width, height = jpeg_size(damaged)
    assert frame.shape[0] <= height
    assert frame.shape[1] <= width
