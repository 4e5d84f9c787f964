"""Bad input through the real broker: refused into quarantine with the raw bytes and the
reason; good readings around it are stored; nothing accepted is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, gas_reading, publish, start_gateway


async def test_each_kind_of_bad_input_is_quarantined_with_its_reason(
    database_url: str, broker: BrokerProcess
) -> None:
    base = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp() * 1000)
    bad: list[tuple[str, bytes, str]] = [
        ("offsite/v1/gas/gas-0001/telemetry", b'{"ts": 1, "seq": ', "malformed JSON"),
        (
            "offsite/v1/gas/gas-0001/telemetry",
            gas_reading(base, 5, 12.0).replace("12.0", '"12"').encode(),
            "invalid lel_pct",
        ),
        (
            "offsite/v1/gas/gas-0001/telemetry",
            json.dumps({"ts": base, "seq": 1.5, "lel_pct": 3}).encode(),
            "invalid seq",
        ),
        (
            "offsite/v1/gas/not-registered/telemetry",
            gas_reading(base, 1, 3.0).encode(),
            "unknown device 'not-registered'",
        ),
        ("offsite/v1/gas/gas-0001/telemetry", b"[" + b" " * 300_000 + b"]", "exceeds the limit"),
        (
            "offsite/v1/gas/elev-0001/telemetry",
            gas_reading(base, 1, 3.0).encode(),
            "registered in domain",
        ),
        ("offsite/v1/gas/gas-0001/status", b"sleeping", "status must be"),
    ]
    good = [gas_reading(base + i * 1000, 100 + i, 4.0) for i in range(10)]
    async with start_gateway(database_url, broker.url) as gw:
        publish(broker.port, "offsite/v1/gas/gas-0001/telemetry", good[:5])
        for topic, payload, _ in bad:
            publish(broker.port, topic, [payload])
        publish(broker.port, "offsite/v1/gas/gas-0001/telemetry", good[5:])

        async def all_accounted() -> list[dict[str, Any]] | None:
            rows = (await gw.http.get("/api/v1/quarantine", params={"limit": "100"})).json()
            return rows if len(rows) == len(bad) else None

        await eventually(all_accounted)
        points = (
            await gw.http.get(
                "/api/v1/telemetry/gas-0001",
                params={"from": datetime.fromtimestamp(base / 1000 - 1, UTC).isoformat()},
            )
        ).json()["points"]
        assert [p["seq"] for p in points] == list(range(100, 110))

    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT topic, reason, payload FROM quarantine ORDER BY id"
        ).fetchall()
    assert len(stored) == len(bad)
    for (topic, payload, reason), (q_topic, q_reason, q_payload) in zip(bad, stored, strict=True):
        assert q_topic == topic
        assert reason in q_reason
        limit = 256 * 1024
        assert bytes(q_payload) == payload[:limit]


async def test_api_shows_quarantine_reasons(database_url: str, broker: BrokerProcess) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        publish(broker.port, "offsite/v1/gas/gas-0001/telemetry", [b"not json"])

        async def one() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = (await gw.http.get("/api/v1/quarantine")).json()
            return rows or None

        [row] = await eventually(one)
        assert row["device_id"] == "gas-0001"
        assert row["reason"].startswith("malformed JSON")
        assert row["payload_preview"] == "not json"
        assert row["payload_size"] == 8
        metrics = (await gw.http.get("/metrics")).text
        assert "offsite_quarantined_total 1.0" in metrics
