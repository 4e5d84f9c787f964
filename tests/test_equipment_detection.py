"""Equipment readings through the real broker, judged by the rule packs after commit: an
elevator with passengers trapped and an over-pressure boiler open clues routed to market
regulation, with the equipment telemetry window as evidence."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import eventually, publish, start_gateway


def _car(ts_ms: int, seq: int, *, trapped: bool) -> dict[str, Any]:
    return {
        "ts": ts_ms,
        "seq": seq,
        "speed_mps": 0.0 if trapped else 1.2,
        "rated_speed_mps": 1.75,
        "floor": 9,
        "door": "closed",
        "moving": not trapped,
        "in_door_zone": False,
        "alarm_button": False,
    }


async def test_trapped_passengers_and_over_pressure_open_routed_clues_with_evidence(
    database_url: str, broker: BrokerProcess
) -> None:
    base = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp()) * 1000
    start = datetime.fromtimestamp(base / 1000, UTC)
    # moving for 10 s, then stopped between floors with the doors closed for 90 s
    car = [_car(base + i * 1000, i, trapped=i >= 10) for i in range(100)]
    boiler = [
        {"ts": base + i * 1000, "seq": i, "pressure_mpa": 1.0 if i < 20 else 1.4, "temp_c": 170}
        for i in range(60)
    ]
    async with start_gateway(database_url, broker.url) as gw:
        publish(broker.port, "offsite/v1/equipment/elev-0001/telemetry", [json.dumps(car)])
        publish(broker.port, "offsite/v1/equipment/boiler-0001/telemetry", [json.dumps(boiler)])

        async def clues() -> dict[str, dict[str, Any]] | None:
            listed = (await gw.http.get("/api/v1/clues")).json()
            found = {c["rule"]: c for c in listed if c["evidence_id"]}
            wanted = {"elevator.trapped", "boiler.overpressure"}
            return found if wanted <= found.keys() else None

        found = await eventually(clues, timeout=15)
        trapped = found["elevator.trapped"]
        assert trapped["device_id"] == "elev-0001"
        assert trapped["department"] == "market"
        # trapped from the first stopped reading, confirmed after the pack's 60 s
        assert datetime.fromisoformat(trapped["triggered_at"]) == start + timedelta(seconds=10)
        opened = datetime.fromisoformat(trapped["opened_at"])
        assert opened == start + timedelta(seconds=70)
        evidence = (await gw.http.get(f"/api/v1/evidence/{trapped['evidence_id']}")).json()
        content = evidence["content"]
        assert content["columns"][:3] == ["ts", "seq", "speed_mps"]
        assert "in_door_zone" in content["columns"]
        # the window reaches back before the trigger: the car was still moving then
        moving = content["columns"].index("moving")
        assert content["readings"][0][moving] is True
        assert content["readings"][-1][moving] is False
        check = (await gw.http.get(f"/api/v1/evidence/{trapped['evidence_id']}/verify")).json()
        assert check["valid"] is True
        assert check["source_intact"] is True

        assert found["boiler.overpressure"]["device_id"] == "boiler-0001"
        # the stuck alarm on a boiler holding 1.4 MPa is not what fired: over-pressure did
        assert "gas.sensor.stuck" not in found
