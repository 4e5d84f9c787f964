"""Several workers: shared subscriptions split the stream with nothing lost or doubled;
detector state is checkpointed, so a restarted (or moved-to) worker resumes durations."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from offsite.detectors.gas import GasDetector, GasLevels
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import LEDGER_KEY, eventually, gas_reading, publish, start_gateway


def test_detector_state_round_trips_through_a_checkpoint() -> None:
    t0 = datetime(2026, 11, 25, tzinfo=UTC)
    first = GasDetector(GasLevels(confirm_s=15))
    assert first.feed([("d", t0 + timedelta(seconds=s), 30.0) for s in range(10)]) == []
    resumed = GasDetector(GasLevels(confirm_s=15))
    resumed.restore("d", json.loads(json.dumps(first.snapshot("d"))))
    [finding] = resumed.feed([("d", t0 + timedelta(seconds=s), 30.0) for s in range(10, 16)])
    assert finding.episode_start == t0
    assert finding.at == t0 + timedelta(seconds=15)


async def test_a_restarted_worker_resumes_a_pending_duration(
    database_url: str, broker: BrokerProcess
) -> None:
    base = int((datetime.now(UTC) - timedelta(minutes=2)).timestamp() * 1000)
    topic = "offsite/v1/gas/gas-0005/telemetry"
    async with start_gateway(database_url, broker.url, gas_confirm_s=15) as gw:
        # ten seconds above the first level: not yet a clue
        publish(broker.port, topic, [gas_reading(base + i * 1000, i, 30.0) for i in range(10)])
        await eventually(lambda: _stored(database_url, 10))
        assert (await gw.http.get("/api/v1/clues")).json() == []
    # the worker stopped (its state checkpointed); another one takes over
    async with start_gateway(database_url, broker.url, gas_confirm_s=15) as gw:
        publish(broker.port, topic, [gas_reading(base + i * 1000, i, 30.0) for i in range(10, 16)])

        async def clue() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = (await gw.http.get("/api/v1/clues")).json()
            return found or None

        [opened] = await eventually(clue)
        assert opened["rule"] == "gas.lel.level1"
        assert datetime.fromisoformat(opened["triggered_at"]).timestamp() * 1000 == base
        assert (
            datetime.fromisoformat(opened["opened_at"])
            - datetime.fromisoformat(opened["triggered_at"])
        ) == timedelta(seconds=15)


async def test_two_workers_share_a_stream_without_loss_or_duplicates(
    database_url: str, broker: BrokerProcess
) -> None:
    base = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    async with (
        start_gateway(database_url, broker.url, mqtt_shared_group="offsite") as a,
        start_gateway(database_url, broker.url, mqtt_shared_group="offsite") as b,
    ):
        for n in range(1, 11):
            device = f"gas-{n:04d}"
            payloads = [
                json.dumps(
                    [
                        json.loads(gas_reading(base + (i * 5 + j) * 1000, i * 5 + j, 2.0))
                        for j in range(5)
                    ]
                )
                for i in range(100)
            ]
            await asyncio.to_thread(
                publish, broker.port, f"offsite/v1/gas/{device}/telemetry", payloads
            )
        await eventually(lambda: _stored(database_url, 5000), timeout=30)
        await asyncio.sleep(0.5)
        assert await _stored(database_url, 5000)
        taken = [await _messages(w.http) for w in (a, b)]
        assert sum(taken) == 1000
        assert all(t > 0 for t in taken), taken
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq)) FROM telemetry_gas"
        ).fetchone()
    assert rows == (5000, 5000)


async def _stored(url: str, n: int) -> bool:
    def count() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM telemetry_gas").fetchone()
        return int(row[0]) if row else 0

    return await asyncio.to_thread(count) == n


async def _messages(http: Any) -> int:
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('offsite_mqtt_messages_total{channel="telemetry"}'):
            return int(float(line.split()[-1]))
    return 0


def test_kill_9_of_one_of_two_workers_loses_nothing_and_stores_nothing_twice(
    database_url: str, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Two `offsite run` processes share the stream ($share); one is killed mid-stream. The
    other goes on storing; what the dead one had taken but not acknowledged stays in its
    session at the broker and is stored once it is back, exactly once."""

    def start(name: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"{name}.log"
        env = os.environ | {
            "OFFSITE_DATABASE_URL": database_url,
            "OFFSITE_MQTT_URL": broker.url,
            "OFFSITE_HTTP_PORT": "0",
            "OFFSITE_MQTT_CLIENT_ID": f"gw-{name}",
            "OFFSITE_LEDGER_SIGNING_KEY": LEDGER_KEY,
            "OFFSITE_MQTT_SHARED_GROUP": "offsite",
            "OFFSITE_INGEST_BATCH_MESSAGES": "50",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "offsite.cli", "run"],
            env=env,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while "duty console at" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc

    def stored() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM telemetry_gas").fetchone()
        return int(row[0]) if row else 0

    base = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    by_topic: dict[str, list[bytes]] = {}
    for m in range(2000):  # 20,000 readings over ten devices
        device = f"gas-{1 + m % 10:04d}"
        seq0 = (m // 10) * 10
        body = [{"ts": base + (seq0 + i) * 100, "seq": seq0 + i, "lel_pct": 1.0} for i in range(10)]
        by_topic.setdefault(f"offsite/v1/gas/{device}/telemetry", []).append(
            json.dumps(body).encode()
        )

    def publish_all() -> None:
        for topic, payloads in by_topic.items():
            publish(broker.port, topic, payloads)

    a, b = start("a"), start("b")
    try:
        publisher = threading.Thread(target=publish_all)
        publisher.start()
        while stored() < 3000:
            time.sleep(0.01)
        a.send_signal(signal.SIGKILL)
        a.wait()
        at_kill = stored()
        publisher.join()
        # the survivor keeps storing its share while the other is gone
        deadline = time.monotonic() + 30
        while stored() <= at_kill and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored() > at_kill
        assert at_kill < 20_000, "killed after everything was stored"
        a = start("a")
        deadline = time.monotonic() + 60
        while stored() < 20_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # anything stored twice would show up now
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT (device_id, seq)) FROM telemetry_gas"
            ).fetchone()
        assert row == (20_000, 20_000)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
