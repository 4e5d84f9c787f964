"""Typed models of what special-equipment sensors publish on
`offsite/v1/equipment/{device_id}/telemetry` (DESIGN.md); the kind comes from the registry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from offsite.gateway.payloads import FiniteFloat, Reading


class ElevatorReading(Reading):
    """One reading of an elevator monitor (events of GB/T 24476)."""

    speed_mps: FiniteFloat = Field(ge=0.0, le=30.0, description="car speed, m/s")
    rated_speed_mps: FiniteFloat | None = Field(
        None, gt=0.0, le=30.0, description="rated speed; else the registry's attribute"
    )
    floor: int | None = Field(None, ge=-20, le=300, description="floor the car is at")
    door: Literal["open", "closed"] | None = Field(None, description="car door state")
    moving: bool = Field(description="the car is in motion")
    in_door_zone: bool | None = Field(None, description="the car is within a landing zone")
    alarm_button: bool = Field(False, description="the car's alarm button is pressed")
    load_kg: FiniteFloat | None = Field(None, ge=0.0, le=100_000.0, description="car load")
    # GB/T 24476 lists mains failure among elevator events; monitors with a backup battery
    # report it as this optional field (absent: not reported, never assumed)
    mains_power: bool | None = Field(None, description="mains supply present")


class BoilerReading(Reading):
    """One reading of a boiler monitor."""

    pressure_mpa: FiniteFloat = Field(ge=0.0, le=100.0, description="working pressure, MPa")
    temp_c: FiniteFloat | None = Field(None, ge=-50.0, le=1_000.0, description="medium temp")
    water_level_mm: FiniteFloat | None = Field(
        None, ge=-10_000.0, le=10_000.0, description="drum water level against its zero mark"
    )


class PressureVesselReading(Reading):
    """One reading of a fixed pressure vessel monitor."""

    pressure_mpa: FiniteFloat = Field(ge=0.0, le=1_000.0, description="pressure, MPa")
    temp_c: FiniteFloat | None = Field(None, ge=-273.0, le=1_500.0, description="medium temp")


class CraneReading(Reading):
    """One reading of a crane's safety monitoring system."""

    load_t: FiniteFloat = Field(ge=0.0, le=100_000.0, description="hoisted load, t")
    rated_load_t: FiniteFloat | None = Field(
        None, gt=0.0, le=100_000.0, description="rated load at the current radius"
    )
    wind_mps: FiniteFloat | None = Field(None, ge=0.0, le=100.0, description="wind speed")


EquipmentReading = ElevatorReading | BoilerReading | PressureVesselReading | CraneReading

EquipmentKind = Literal["elevator", "boiler", "pressure_vessel", "crane"]

EQUIPMENT_READINGS: dict[str, type[Reading]] = {
    "elevator": ElevatorReading,
    "boiler": BoilerReading,
    "pressure_vessel": PressureVesselReading,
    "crane": CraneReading,
}
"""The payload model for each equipment kind of the registry."""

EQUIPMENT_FIELDS: tuple[str, ...] = (
    "speed_mps",
    "rated_speed_mps",
    "floor",
    "door",
    "moving",
    "in_door_zone",
    "alarm_button",
    "load_kg",
    "mains_power",
    "pressure_mpa",
    "temp_c",
    "water_level_mm",
    "load_t",
    "rated_load_t",
    "wind_mps",
)
"""Every field of every equipment kind, in the column order of `telemetry_equipment`."""
