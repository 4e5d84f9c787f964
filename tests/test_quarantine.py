"""Bad input through the real broker: refused into quarantine with the raw bytes and the
reason; good readings around it are stored; nothing accepted is lost."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from offsite.gateway.columns import GasColumns
from offsite.gateway.decode import Refusal
from offsite.gateway.payloads import GasReading, GasWire
from offsite.ingest.writer import StatusChange
from offsite.runtime import _DecodedBatch
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
    # batches are written several at once: quarantine ids need not follow arrival order
    stored.sort(key=lambda row: (row[0], bytes(row[2])))
    bad.sort(key=lambda item: (item[0], item[1][: 256 * 1024]))
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


async def test_a_batch_the_database_refuses_never_stalls_the_stream(database_url: str) -> None:
    """Readings the database refuses go to quarantine; a status change it refuses is set
    aside and counted; quarantine records it refuses are counted: never a retry loop."""
    async with start_gateway(database_url, None, silent_sweep_s=3600.0) as gw:
        now = datetime.now(UTC)
        reading = GasWire.of(
            GasReading.model_validate({"ts": now.isoformat(), "seq": 1, "lel_pct": 3.0})
        )
        batch = _DecodedBatch(
            now,
            gas_readings=[reading],
            gas_runs=[("gas-0001", 1)],
            statuses=[StatusChange("gas\x000001", "online", now)],  # NUL: text cannot hold it
        )
        batch.gas_columns = GasColumns.of(batch.gas_pairs())
        result = await asyncio.wait_for(gw.runtime._write_until_committed(batch), 10)
        assert (result.stored, result.quarantined) == (0, 1)
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT device_id, reason FROM quarantine").fetchall()
        assert [(d, r.startswith("refused by the database")) for d, r in rows] == [
            ("gas-0001", True)
        ]

        hopeless = Refusal("offsite/v1/gas/gas-0002/telemetry", "gas-0002", "x", b"{}")
        object.__setattr__(hopeless, "reason", "bad\x00reason")  # past the escaping, on purpose
        result = await asyncio.wait_for(
            gw.runtime._write_until_committed(_DecodedBatch(now, refusals=[hopeless])), 10
        )
        assert result.quarantined == 0
        text = (await gw.http.get("/metrics")).text
        refused = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("offsite_refused_messages_total{")
        }
        assert sorted((k.split('reason="')[1].split('"')[0], v) for k, v in refused.items()) == [
            ("unstorable", 1.0),
            ("unstorable_status", 1.0),
        ]
        assert any('device_id="gas-0002"' in k and "unstorable" in k for k in refused)
