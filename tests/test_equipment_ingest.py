"""Special-equipment telemetry through the real broker into the real database: each kind's
payload is decoded by the device's registered kind, stored once, shown by the API; bad
readings are quarantined with their reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, mosquitto_pub, publish, start_gateway


def _elevator(ts_ms: int, seq: int, **changes: Any) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "ts": ts_ms,
        "seq": seq,
        "speed_mps": 1.6,
        "rated_speed_mps": 1.75,
        "floor": 7,
        "door": "closed",
        "moving": True,
        "in_door_zone": False,
        "alarm_button": False,
        "load_kg": 420.0,
    }
    return reading | changes


async def test_equipment_readings_are_stored_by_kind_and_shown(
    database_url: str, broker: BrokerProcess
) -> None:
    base = int((datetime.now(UTC) - timedelta(minutes=2)).timestamp() * 1000)
    elevator = [_elevator(base + i * 1000, i) for i in range(10)]
    boiler = {"ts": base, "seq": 1, "pressure_mpa": 0.92, "temp_c": 171.5, "water_level_mm": 140}
    bad = [
        # a boiler reading on an elevator: the registry's kind decides the model
        ("offsite/v1/equipment/elev-0001/telemetry", json.dumps(boiler), "invalid speed_mps"),
        (
            "offsite/v1/equipment/elev-0001/telemetry",
            json.dumps(_elevator(base, 99, door="ajar")),
            "invalid door",
        ),
        (
            "offsite/v1/equipment/boiler-0001/telemetry",
            json.dumps(boiler | {"pressure_mpa": "high"}),
            "invalid pressure_mpa",
        ),
    ]
    async with start_gateway(database_url, broker.url) as gw:
        publish(broker.port, "offsite/v1/equipment/elev-0001/telemetry", [json.dumps(elevator)])
        # the same readings again, as a device re-sending after a lost acknowledgement
        publish(broker.port, "offsite/v1/equipment/elev-0001/telemetry", [json.dumps(elevator)])
        mosquitto_pub(broker.port, "offsite/v1/equipment/boiler-0001/telemetry", json.dumps(boiler))
        for topic, payload, _ in bad:
            publish(broker.port, topic, [payload])

        async def stored() -> list[dict[str, Any]] | None:
            page = (
                await gw.http.get(
                    "/api/v1/telemetry/elev-0001",
                    params={"from": datetime.fromtimestamp(base / 1000 - 1, UTC).isoformat()},
                )
            ).json()
            quarantined = (await gw.http.get("/api/v1/quarantine")).json()
            ok = len(page["points"]) == 10 and len(quarantined) == len(bad)
            return page["points"] if ok else None

        points = await eventually(stored)
        assert [p["seq"] for p in points] == list(range(10))
        assert points[0]["kind"] == "elevator"
        assert points[0]["door"] == "closed"
        assert points[0]["moving"] is True
        assert points[0]["pressure_mpa"] is None

        quarantined = (await gw.http.get("/api/v1/quarantine")).json()
        reasons = [q["reason"] for q in quarantined]
        for _, _, reason in bad:
            match = next((got for got in reasons if reason in got), None)
            assert match is not None, (reason, reasons)
            reasons.remove(match)

        boiler_page = (await gw.http.get("/api/v1/telemetry/boiler-0001")).json()
        assert [p["pressure_mpa"] for p in boiler_page["points"]] == [0.92]

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM telemetry_equipment").fetchone() == (11,)
        row = conn.execute(
            "SELECT last_seq FROM device_status WHERE device_id = 'elev-0001'"
        ).fetchone()
        assert row == (9,)
