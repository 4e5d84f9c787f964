"""Hostile payloads through a real mosquitto into the gateway and a real database: the
gateway stays up, and every message is accounted for exactly, its readings stored and its
refusals quarantined with their reasons."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from offsite.gateway.decode import KnownDevice, decode_message
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import publish, start_gateway
from tests.hostile import broken_readings, dumps, json_values, valid_readings

pytestmark = pytest.mark.slow

MAX_PAYLOAD = 4096
MAX_READINGS = 50
DEVICES = {
    "gas-0001": KnownDevice("gas-0001", "gas", "gas_detector"),
    "elev-0001": KnownDevice("elev-0001", "equipment", "elevator"),
    "boiler-0001": KnownDevice("boiler-0001", "equipment", "boiler"),
}
"""As the demo registry has them."""
TOPIC = {
    "gas_detector": "offsite/v1/gas/gas-0001/telemetry",
    "elevator": "offsite/v1/equipment/elev-0001/telemetry",
    "boiler": "offsite/v1/equipment/boiler-0001/telemetry",
}
ELSEWHERE = [
    "offsite/v1/gas/gas-not-registered/telemetry",
    "offsite/v1/equipment/gas-0001/telemetry",  # a known device under another domain
]
_SEQ = itertools.count(1_000_000)
"""Each valid reading gets a sequence number of its own: a repeat would be a duplicate."""


@st.composite
def hostile_messages(draw: st.DrawFn, now_ms: int) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(list(TOPIC)))
    topic = draw(st.sampled_from([TOPIC[kind]] * 4 + ELSEWHERE))
    shape = draw(st.sampled_from(["bytes", "json", "valid", "broken", "mixed", "deep", "big"]))
    if shape == "bytes":
        return topic, draw(st.binary(max_size=600))
    if shape == "json":
        return topic, dumps(draw(json_values))
    if shape == "deep":
        depth = draw(st.integers(500, 2000))
        return topic, b"[" * depth + b"]" * depth
    if shape == "big":
        return topic, b"[" + b" " * draw(st.integers(MAX_PAYLOAD, 3 * MAX_PAYLOAD)) + b"]"
    if shape in ("valid", "broken"):
        make = valid_readings if shape == "valid" else broken_readings
        return topic, dumps(draw(make(kind, next(_SEQ), now_ms=now_ms)))
    flags = draw(st.lists(st.booleans(), min_size=1, max_size=12))
    items = [
        draw((valid_readings if ok else broken_readings)(kind, next(_SEQ), now_ms=now_ms))
        for ok in flags
    ]
    return topic, dumps(items)


@dataclass
class Tally:
    messages: int = 0
    readings: int = 0
    quarantined: int = 0


def _counts(database_url: str) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM telemetry_gas), (SELECT count(*) FROM"
            " telemetry_equipment), (SELECT count(*) FROM quarantine WHERE reason <> '')"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _nasty(now_ms: int) -> list[tuple[str, bytes]]:
    """What once got past the decoder and broke a batch at the database, or vanished."""
    gas = TOPIC["gas_detector"]
    reading = f'"ts": {now_ms}, "lel_pct": 1'
    return [
        (gas, f'{{{reading}, "seq": {next(_SEQ)}, "fault": "E\\u00001"}}'.encode()),
        (gas, f'[{{{reading}, "seq": {next(_SEQ)}, "a\\u0000": 1}}]'.encode()),
        (gas, f'[{{{reading}, "seq": {next(_SEQ)}, "\\ud800": 1}}]'.encode()),
        (gas, f'[{{{reading}, "seq": {next(_SEQ)}}}, {{"\\udfff": NaN}}]'.encode()),
        (gas, b"[]"),
        (gas, b"[" * 10_000 + b"]" * 10_000),
        (TOPIC["elevator"], f'{{"ts": {now_ms}, "seq": 1, "speed_mps": NaN}}'.encode()),
        (TOPIC["boiler"], f'{{"ts": {now_ms}, "seq": {10**400}}}'.encode()),
        (gas, "{}".encode("utf-16")),
    ]


def _hunt(port: int, database_url: str, examples: int) -> Tally:
    tally = Tally()
    now_ms = int(time.time() * 1000)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages=st.lists(hostile_messages(now_ms), min_size=1, max_size=8))
    @example(messages=_nasty(now_ms))
    def hunt(messages: list[tuple[str, bytes]]) -> None:
        gas0, equipment0, quarantined0 = _counts(database_url)
        expected_readings = expected_refusals = 0
        received_at = datetime.now(UTC)
        for topic, payload in messages:
            # what the gateway must make of it, by the same pure decoder the unit tests pin
            decoded = decode_message(
                topic,
                payload,
                DEVICES,
                received_at,
                max_payload_bytes=MAX_PAYLOAD,
                max_readings=MAX_READINGS,
            )
            expected_readings += len(decoded.gas) + len(decoded.equipment)
            expected_refusals += len(decoded.refusals)
            publish(port, topic, [payload])
        # whatever the decoder says: no message goes without a stored reading or a refusal
        assert expected_readings + expected_refusals >= len(messages)
        deadline = time.monotonic() + 20
        while True:
            gas, equipment, quarantined = _counts(database_url)
            got = (gas + equipment - gas0 - equipment0, quarantined - quarantined0)
            if got == (expected_readings, expected_refusals) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert got == (expected_readings, expected_refusals), messages
        tally.messages += len(messages)
        tally.readings += expected_readings
        tally.quarantined += expected_refusals

    hunt()
    return tally


async def test_hostile_payloads_through_the_broker_are_stored_or_quarantined_exactly(
    database_url: str, broker: BrokerProcess
) -> None:
    overrides: dict[str, Any] = {
        "max_payload_bytes": MAX_PAYLOAD,
        "max_readings_per_message": MAX_READINGS,
        "silent_sweep_s": 3600.0,
    }
    async with start_gateway(database_url, broker.url, **overrides) as gw:
        tally = await asyncio.to_thread(_hunt, broker.port, database_url, 60)
        print(
            f"hostile messages through the broker: {tally.messages}, readings stored"
            f" {tally.readings}, refusals quarantined {tally.quarantined}"
        )
        assert tally.messages >= 60
        assert tally.readings > 0
        assert tally.quarantined > 0
        # still up, still taking data
        assert gw.runtime.gateway is not None
        assert gw.runtime.gateway.connected
        assert (await gw.http.get("/healthz")).status_code == 200
