"""Special equipment: an elevator and a boiler that run normally, with scripted incidents.

The elevator (`elev-0001` in the demo registry, rated 1.75 m/s, 18 floors) travels between
floors; the boiler (`boiler-0001`, rated 1.25 MPa) holds its working pressure. With the
`incidents` scenario, each repeats a script every `period_s`:

- elevator, from 20 s: a 4 s overspeed at 1.45x rated speed (both overspeed tiers);
- elevator, from 40 s: the car stops between floors with its doors closed for 90 s
  (passengers trapped), and the alarm button is held from 55 s to 65 s;
- boiler, from 30 s: pressure climbs to 1.12x rated and holds 40 s before it is relieved.

Each device is its own MQTT client with a last will, like the gas simulator, and takes the
commands of its kind on its `cmd` topic: the elevator `out_of_service` (it is brought to a
landing, opens its doors and stops: speed 0, not moving, in the door zone, until
`return_to_service`), the boiler `shutdown` (burner off: pressure and temperature fall and
stay down). Anything else is refused with the reason.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from offsite.simulators.commands import unknown
from offsite.simulators.device import DeviceSecurity, device_client, stop_device

_LOG = logging.getLogger(__name__)

Scenario = Literal["incidents", "normal"]


@dataclass(frozen=True, slots=True)
class ElevatorScript:
    rated_speed_mps: float = 1.75
    floors: int = 18
    floor_height_m: float = 3.0
    overspeed_at_s: float = 20.0
    trapped_at_s: float = 40.0
    trapped_for_s: float = 90.0
    alarm_from_s: float = 55.0
    alarm_to_s: float = 65.0
    period_s: float = 600.0

    def reading(self, t: float, *, incidents: bool) -> dict[str, Any]:
        """The car's state `t` seconds after start."""
        u = t % self.period_s
        # Normal service: a 12 s trip between two floors, then 8 s at the landing.
        cycle, phase = divmod(t, 20.0)
        trip = int(cycle) % (2 * (self.floors - 1))
        floor = trip + 1 if trip < self.floors - 1 else 2 * (self.floors - 1) - trip + 1
        moving = phase < 12.0
        speed = self.rated_speed_mps * math.sin(math.pi * phase / 12.0) if moving else 0.0
        state: dict[str, Any] = {
            "speed_mps": round(abs(speed), 3),
            "rated_speed_mps": self.rated_speed_mps,
            "floor": floor,
            "door": "closed" if moving or phase > 17.0 else "open",
            "moving": moving,
            "in_door_zone": not moving,
            "alarm_button": False,
            "load_kg": 320.0,
            "mains_power": True,
        }
        if not incidents:
            return state
        if self.overspeed_at_s <= u < self.overspeed_at_s + 4.0:
            state |= {"speed_mps": round(self.rated_speed_mps * 1.45, 3), "moving": True}
            state |= {"door": "closed", "in_door_zone": False}
        if self.trapped_at_s <= u < self.trapped_at_s + self.trapped_for_s:
            state |= {"speed_mps": 0.0, "moving": False, "door": "closed"}
            state |= {"in_door_zone": False, "floor": 9}
            state["alarm_button"] = self.alarm_from_s <= u < self.alarm_to_s
        return state


@dataclass(frozen=True, slots=True)
class BoilerScript:
    rated_pressure_mpa: float = 1.25
    overpressure_at_s: float = 30.0
    overpressure_for_s: float = 40.0
    period_s: float = 600.0

    def reading(self, t: float, *, incidents: bool) -> dict[str, Any]:
        u = t % self.period_s
        pressure = self.rated_pressure_mpa * (0.82 + 0.02 * math.sin(t / 30.0))
        start, length = self.overpressure_at_s, self.overpressure_for_s
        if incidents and start <= u < start + length:
            ramp = min(1.0, (u - start) / 5.0)
            pressure = pressure + ramp * (self.rated_pressure_mpa * 1.12 - pressure)
        return {
            "pressure_mpa": round(pressure, 4),
            "temp_c": round(165.0 + 3.0 * math.sin(t / 45.0), 2),
            "water_level_mm": round(150.0 + 5.0 * math.sin(t / 20.0), 1),
        }


ELEVATOR_COMMANDS = ("out_of_service", "return_to_service")
BOILER_COMMANDS = ("shutdown",)
BOILER_COOLING_S = 60.0
"""After a shutdown, pressure above atmospheric and temperature above ambient halve this often."""


class ElevatorControl:
    """The elevator's service state: commands come in on paho's thread while the
    publishing loop reads the script, hence the lock."""

    def __init__(self, script: ElevatorScript) -> None:
        self.script = script
        self._lock = threading.Lock()
        self._parked_floor: int | None = None
        self._floor = 1

    def command(self, command: str, _params: dict[str, Any]) -> tuple[bool, str]:
        with self._lock:
            if command == "out_of_service":
                if self._parked_floor is not None:
                    return True, f"already out of service at floor {self._parked_floor}"
                self._parked_floor = self._floor
                return True, f"out of service: stopped at floor {self._floor}, doors open"
            if command == "return_to_service":
                if self._parked_floor is None:
                    return True, "already in service"
                self._parked_floor = None
                return True, "back in service"
        return unknown(command, "elevator", ELEVATOR_COMMANDS)

    def reading(self, t: float, *, incidents: bool) -> dict[str, Any]:
        with self._lock:
            if self._parked_floor is not None:
                # Brought to a landing and stopped: no trip, no incident, doors open.
                state = self.script.reading(t, incidents=False)
                return state | {
                    "speed_mps": 0.0,
                    "moving": False,
                    "in_door_zone": True,
                    "door": "open",
                    "floor": self._parked_floor,
                    "alarm_button": False,
                }
            state = self.script.reading(t, incidents=incidents)
            self._floor = int(state["floor"])
            return state


class BoilerControl:
    """The boiler's burner: on until a `shutdown`, then cooling for good."""

    def __init__(self, script: BoilerScript) -> None:
        self.script = script
        self._lock = threading.Lock()
        self._shut_down_at: float | None = None
        self._last: dict[str, Any] = {}

    def command(self, command: str, _params: dict[str, Any]) -> tuple[bool, str]:
        with self._lock:
            if command == "shutdown":
                if self._shut_down_at is not None:
                    return True, "already shut down"
                self._shut_down_at = time.monotonic()
                pressure = self._last.get("pressure_mpa")
                at = f" at {pressure:.3f} MPa" if pressure is not None else ""
                return True, f"burner shut down{at}"
        return unknown(command, "boiler", BOILER_COMMANDS)

    def reading(self, t: float, *, incidents: bool) -> dict[str, Any]:
        with self._lock:
            if self._shut_down_at is None or not self._last:
                self._last = self.script.reading(t, incidents=incidents)
                return self._last
            decay = 0.5 ** ((time.monotonic() - self._shut_down_at) / BOILER_COOLING_S)
            last = self._last
            return {
                "pressure_mpa": round(last["pressure_mpa"] * decay, 4),
                "temp_c": round(20.0 + (last["temp_c"] - 20.0) * decay, 2),
                "water_level_mm": last["water_level_mm"],
            }


class _Device:
    def __init__(
        self,
        device_id: str,
        host: str,
        port: int,
        protocol: str,
        on_command: Callable[[str, dict[str, Any]], tuple[bool, str]],
        security: DeviceSecurity | None = None,
    ) -> None:
        self.device_id = device_id
        self.seq = 0  # counts from zero again after a restart, as devices do
        self.topic = f"offsite/v1/equipment/{device_id}/telemetry"
        self.client = device_client(
            "equipment",
            device_id,
            host,
            port,
            protocol=protocol,
            on_command=on_command,
            security=security,
        )
        self.client.loop_start()

    def send(self, now: datetime, fields: dict[str, Any]) -> None:
        self.seq += 1
        body = {"ts": int(now.timestamp() * 1000), "seq": self.seq, **fields}
        self.client.publish(self.topic, json.dumps(body).encode(), qos=1)

    def close(self) -> None:
        stop_device(self.client, "equipment", self.device_id)


def run_equipment(
    host: str,
    port: int,
    *,
    scenario: Scenario,
    rate_hz: float,
    duration_s: float | None,
    protocol: str = "3.1.1",
    elevator_id: str = "elev-0001",
    boiler_id: str = "boiler-0001",
    stop: threading.Event | None = None,
    security: DeviceSecurity | None = None,
) -> int:
    """Publish until `duration_s` passes or `stop` is set; returns readings published."""
    stop = stop or threading.Event()
    incidents = scenario == "incidents"
    elevator, boiler = ElevatorControl(ElevatorScript()), BoilerControl(BoilerScript())
    devices = (
        (_Device(elevator_id, host, port, protocol, elevator.command, security), elevator.reading),
        (_Device(boiler_id, host, port, protocol, boiler.command, security), boiler.reading),
    )
    started = time.monotonic()
    period = 1.0 / rate_hz
    published = tick = 0
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if duration_s is not None and elapsed >= duration_s:
                break
            now = datetime.now(UTC)
            for device, script in devices:
                fields = script(elapsed, incidents=incidents)
                if "load_kg" in fields:
                    fields["load_kg"] += round(random.uniform(-5, 5), 1)  # noqa: S311
                device.send(now, fields)
                published += 1
            tick += 1
            delay = started + tick * period - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    finally:
        for device, _ in devices:
            device.close()
    _LOG.info("published %d equipment readings", published)
    return published
