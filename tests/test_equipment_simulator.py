"""The equipment simulator's scripts: every reading is valid under the payload contract, and
the incidents happen when the script says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from offsite.gateway.equipment_payloads import BoilerReading, ElevatorReading
from offsite.simulators.commands import answer
from offsite.simulators.equipment import (
    BoilerControl,
    BoilerScript,
    ElevatorControl,
    ElevatorScript,
)


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


def test_the_simulated_equipment_carries_out_its_commands_and_refuses_others() -> None:
    elevator = ElevatorControl(ElevatorScript())
    moving = elevator.reading(20.0 * 3 + 5.0, incidents=False)  # mid-trip, leaving floor 4
    assert moving["moving"]
    assert elevator.command("out_of_service", {}) == (
        True,
        f"out of service: stopped at floor {moving['floor']}, doors open",
    )
    assert elevator.command("out_of_service", {}) == (
        True,
        f"already out of service at floor {moving['floor']}",
    )
    # Stopped at its floor whatever the script would have done, the incidents included.
    stopped = {
        (r["speed_mps"], r["moving"], r["in_door_zone"], r["door"], r["floor"], r["alarm_button"])
        for r in (elevator.reading(float(t), incidents=True) for t in range(600))
    }
    assert stopped == {(0.0, False, True, "open", moving["floor"], False)}
    assert elevator.command("return_to_service", {}) == (True, "back in service")
    assert elevator.reading(20.0 * 3 + 5.0, incidents=False)["moving"]
    assert elevator.command("shutdown", {}) == (
        False,
        "unknown command 'shutdown'; an elevator takes out_of_service, return_to_service",
    )

    boiler = BoilerControl(BoilerScript())
    before = boiler.reading(45.0, incidents=True)  # over pressure
    ok, detail = boiler.command("shutdown", {})
    assert (ok, detail) == (True, f"burner shut down at {before['pressure_mpa']:.3f} MPa")
    after = boiler.reading(46.0, incidents=True)
    assert after["pressure_mpa"] <= before["pressure_mpa"]
    assert after["temp_c"] <= before["temp_c"]
    assert boiler.command("shutdown", {}) == (True, "already shut down")
    assert boiler.command("lock_out", {})[0] is False


def test_a_command_without_an_id_to_answer_is_only_logged() -> None:
    now = datetime.now(UTC)

    def never(command: str, params: dict[str, Any]) -> tuple[bool, str]:
        raise AssertionError("not to be carried out")

    for payload in (b"not json", b"[1, 2]", b'{"command": "close_valve"}', b'{"command_id": 7}'):
        assert answer(payload, never, now) is None
    ack = answer(b'{"command_id": "c1", "command": "close_valve", "extra": 1}', never, now)
    assert ack is not None
    assert (ack.command_id, ack.ok) == ("c1", False)
    assert ack.detail is not None
    assert ack.detail.startswith("malformed command: extra: ")
