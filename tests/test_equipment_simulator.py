"""The equipment simulator's scripts: every reading is valid under the payload contract, and
the incidents happen when the script says."""

from __future__ import annotations

from offsite.gateway.equipment_payloads import BoilerReading, ElevatorReading
from offsite.simulators.equipment import BoilerScript, ElevatorScript


def test_every_scripted_reading_fits_the_contract_and_incidents_come_on_time() -> None:
    elevator, boiler = ElevatorScript(), BoilerScript()
    trapped, overspeed, alarm, overpressure = [], [], [], []
    for t in range(0, 600):
        e = elevator.reading(float(t), incidents=True)
        ElevatorReading.model_validate({"ts": 1_764_057_600_000 + t * 1000, "seq": t, **e})
        b = boiler.reading(float(t), incidents=True)
        BoilerReading.model_validate({"ts": 1_764_057_600_000 + t * 1000, "seq": t, **b})
        if not e["moving"] and not e["in_door_zone"] and e["door"] == "closed":
            trapped.append(t)
        if e["speed_mps"] >= 1.4 * e["rated_speed_mps"]:
            overspeed.append(t)
        if e["alarm_button"]:
            alarm.append(t)
        if b["pressure_mpa"] > boiler.rated_pressure_mpa:
            overpressure.append(t)
    assert trapped == list(range(40, 130))
    assert overspeed == list(range(20, 24))
    assert alarm == list(range(55, 65))
    assert overpressure[0] >= 30
    assert overpressure[-1] < 70
    assert len(overpressure) > 30

    quiet = [elevator.reading(float(t), incidents=False) for t in range(600)]
    assert not any(q["alarm_button"] for q in quiet)
    assert max(q["speed_mps"] for q in quiet) <= elevator.rated_speed_mps
    assert all(
        q["moving"] or q["in_door_zone"] for q in quiet
    )  # in normal service the car only stops at landings
