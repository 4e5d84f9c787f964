"""Combustible-gas detectors: a baseline with noise, and a scripted leak.

Each device is its own MQTT client with a last will (`offline`, retained) and a retained
`online` on connect; readings go out at QoS 1 with a sequence number per device. Each has a
shut-off valve it closes or opens when told (`close_valve`, `open_valve` on its `cmd`
topic): closed, it reports `"valve": "closed"` and the gas no longer fed by the leak clears
(halving every `VENTILATION_HALF_LIFE_S`) down to the baseline; opened again, a leak that is
still going on comes back.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from offsite.simulators.commands import unknown
from offsite.simulators.device import DeviceSecurity, device_client, stop_device

_LOG = logging.getLogger(__name__)

Scenario = Literal["leak", "normal"]
Valve = Literal["open", "closed"]
VENTILATION_HALF_LIFE_S = 4.0
"""Once the valve is closed, the gas in the room above the baseline halves this often."""
GAS_COMMANDS = ("close_valve", "open_valve")


@dataclass(frozen=True, slots=True)
class LeakScript:
    """%LEL over time since the leak began: rise past the first level, then the second,
    hold, then ventilation brings it back down."""

    start_s: float = 5.0
    period_s: float = 300.0

    def level(self, t: float) -> float | None:
        """The scripted %LEL at `t` seconds after start, or None outside the leak."""
        if t < self.start_s:
            return None
        u = (t - self.start_s) % self.period_s
        points = ((0.0, 2.0), (8.0, 32.0), (16.0, 34.0), (22.0, 62.0), (60.0, 64.0), (75.0, 3.0))
        if u >= points[-1][0]:
            return None
        for (t0, v0), (t1, v1) in itertools.pairwise(points):
            if t0 <= u < t1:
                return v0 + (v1 - v0) * (u - t0) / (t1 - t0)
        return None


class SimulatedGasDetector:
    def __init__(
        self,
        device_id: str,
        host: str,
        port: int,
        protocol: str,
        index: int,
        security: DeviceSecurity | None = None,
    ) -> None:
        self.device_id = device_id
        self.seq = 0  # counts from zero again after a restart, as devices do
        self.baseline = random.uniform(0.5, 3.0)  # noqa: S311 - simulation, not security
        self.use_epoch_ms = index % 2 == 0  # both timestamp forms of the contract
        self.topic = f"offsite/v1/gas/{device_id}/telemetry"
        # Commands arrive on paho's thread while the publishing loop reads the valve.
        self._lock = threading.Lock()
        self.valve: Valve = "open"
        self._closed_at = 0.0
        self._level_at_close = 0.0
        self._last_level = self.baseline
        self.client = device_client(
            "gas",
            device_id,
            host,
            port,
            protocol=protocol,
            on_command=self.command,
            security=security,
        )

    def command(self, command: str, _params: dict[str, Any]) -> tuple[bool, str]:
        """Carry out a command from the gateway; (done, what the detector says)."""
        with self._lock:
            if command == "close_valve":
                if self.valve == "closed":
                    return True, "valve already closed"
                self.valve = "closed"
                self._closed_at = time.monotonic()
                self._level_at_close = self._last_level
                return True, f"valve closed at {self._last_level:.1f} %LEL"
            if command == "open_valve":
                if self.valve == "open":
                    return True, "valve already open"
                self.valve = "open"
                return True, "valve opened"
        return unknown(command, "gas detector", GAS_COMMANDS)

    def level(self, scripted: float | None) -> tuple[float, Valve]:
        """%LEL in the room now, and the valve it was read with: the script's level (or the
        baseline) while the valve is open; with it closed, what was there clearing towards
        the baseline."""
        with self._lock:
            if self.valve == "closed":
                since = time.monotonic() - self._closed_at
                above = max(0.0, self._level_at_close - self.baseline)
                level = self.baseline + above * 0.5 ** (since / VENTILATION_HALF_LIFE_S)
            else:
                level = scripted if scripted is not None else self.baseline
            self._last_level = level
            return level, self.valve

    def reading(self, now: datetime, lel: float, valve: Valve = "open") -> bytes:
        self.seq += 1
        ts: int | str = (
            int(now.timestamp() * 1000)
            if self.use_epoch_ms
            else now.isoformat(timespec="milliseconds")
        )
        body = {
            "ts": ts,
            "seq": self.seq,
            "lel_pct": round(max(0.0, min(100.0, lel)), 2),
            "co_ppm": round(random.uniform(0, 4), 1),  # noqa: S311
            "valve": valve,
        }
        return json.dumps(body).encode()

    def close(self) -> None:
        stop_device(self.client, "gas", self.device_id)


def run_gas(
    host: str,
    port: int,
    *,
    devices: int,
    rate_hz: float,
    scenario: Scenario,
    duration_s: float | None,
    protocol: str = "3.1.1",
    first: int = 1,
    leak_devices: int = 1,
    stop: threading.Event | None = None,
    script: LeakScript | None = None,
    security: DeviceSecurity | None = None,
) -> int:
    """Publish until `duration_s` passes or `stop` is set; returns readings published."""
    stop = stop or threading.Event()
    sims = [
        SimulatedGasDetector(f"gas-{first + i:04d}", host, port, protocol, i, security)
        for i in range(devices)
    ]
    for sim in sims:
        sim.client.loop_start()
    script = script or LeakScript()
    started = time.monotonic()
    period = 1.0 / rate_hz
    published = 0
    tick = 0
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if duration_s is not None and elapsed >= duration_s:
                break
            now = datetime.now(UTC)
            for index, sim in enumerate(sims):
                level = (
                    script.level(elapsed) if scenario == "leak" and index < leak_devices else None
                )
                lel, valve = sim.level(level)
                lel += random.gauss(0, 0.3)
                sim.client.publish(sim.topic, sim.reading(now, lel, valve), qos=1)
                published += 1
            tick += 1
            delay = started + tick * period - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    finally:
        for sim in sims:
            sim.close()
    _LOG.info("published %d readings from %d devices", published, devices)
    return published
