"""Evidence: a SHA-256 over canonical content, re-computed on demand; any changed byte in
the record, or in the telemetry it was made from, is detected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from offsite.casework.canonical import canonical_json, sha256_hex
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import RunningGateway, eventually, gas_reading, publish, start_gateway


async def _one_clue(gw: RunningGateway, broker: BrokerProcess) -> dict[str, Any]:
    base = int((datetime.now(UTC) - timedelta(minutes=3)).timestamp() * 1000)
    readings = [gas_reading(base + i * 1000, i, 5.0 if i < 30 else 70.0) for i in range(60)]
    publish(broker.port, "offsite/v1/gas/gas-0008/telemetry", readings)

    async def red() -> dict[str, Any] | None:
        clues: list[dict[str, Any]] = (
            await gw.http.get("/api/v1/clues", params={"severity": "red"})
        ).json()
        return clues[0] if clues and clues[0]["evidence_id"] else None

    return await eventually(red)


def test_canonical_json_is_stable_and_sorted() -> None:
    a = canonical_json({"b": 1, "a": [1.5, "漢"], "t": datetime(2026, 1, 1, tzinfo=UTC)})
    b = canonical_json({"t": datetime(2026, 1, 1, tzinfo=UTC), "a": [1.5, "漢"], "b": 1})
    assert a == b == '{"a":[1.5,"漢"],"b":1,"t":"2026-01-01T00:00:00+00:00"}'.encode()
    assert sha256_hex(a) == sha256_hex(b)


async def test_evidence_verifies_and_a_changed_byte_is_detected(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, gas_confirm_s=10) as gw:
        clue = await _one_clue(gw, broker)
        evidence_id = clue["evidence_id"]
        evidence = (await gw.http.get(f"/api/v1/evidence/{evidence_id}")).json()
        content = evidence["content"]
        assert content["clue_id"] == clue["id"]
        assert content["device"]["id"] == "gas-0008"
        assert content["subject"]["id"] == "rest-liangpi-corner"
        # window: from 120 s before the trigger (seq 30) up to the firing (seq 40)
        assert [r[1] for r in content["readings"]] == list(range(41))
        ok = (await gw.http.get(f"/api/v1/evidence/{evidence_id}/verify")).json()
        assert ok == {
            "evidence_id": evidence_id,
            "valid": True,
            "stored_sha256": evidence["sha256"],
            "computed_sha256": evidence["sha256"],
            "source_intact": True,
            "problems": [],
        }

        with psycopg.connect(database_url, autocommit=True) as conn:
            # One byte of the stored record: 70.0 becomes 79.0 somewhere in the readings.
            text = conn.execute(
                "SELECT content FROM evidence WHERE id = %s", (evidence_id,)
            ).fetchone()
            assert text is not None
            position = text[0].index("70.0")
            tampered = text[0][:position] + "79.0" + text[0][position + 4 :]
            conn.execute("UPDATE evidence SET content = %s WHERE id = %s", (tampered, evidence_id))
        bad = (await gw.http.get(f"/api/v1/evidence/{evidence_id}/verify")).json()
        assert bad["valid"] is False
        assert bad["computed_sha256"] != bad["stored_sha256"]
        assert "content does not match its recorded SHA-256" in bad["problems"]

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE evidence SET content = %s WHERE id = %s", (text[0], evidence_id))
            conn.execute(
                "UPDATE telemetry_gas SET lel_pct = 20 WHERE device_id = 'gas-0008' AND seq = 35"
            )
        source = (await gw.http.get(f"/api/v1/evidence/{evidence_id}/verify")).json()
        assert source["valid"] is True
        assert source["source_intact"] is False
        assert source["problems"] == ["telemetry in the database differs from the evidence window"]


async def test_unknown_evidence_is_404(database_url: str, broker: BrokerProcess) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        assert (await gw.http.get("/api/v1/evidence/ev_nope/verify")).status_code == 404
        assert (await gw.http.get("/api/v1/evidence/ev_nope")).status_code == 404
