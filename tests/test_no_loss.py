"""Nothing accepted is lost: acknowledgements follow commits, so a gateway killed with
`kill -9` or a database that goes away costs nothing; redeliveries are stored once."""

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

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import LEDGER_KEY, eventually, gas_reading, publish, start_gateway
from tests.fixtures.postgres import StoppablePostgres

DEVICES = [f"gas-{n:04d}" for n in range(1, 11)]


def _messages(count: int, per_message: int, first_seq: int = 0) -> list[tuple[str, bytes]]:
    """`count` messages spread over ten devices, each with `per_message` readings."""
    base = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    out = []
    for m in range(count):
        device = DEVICES[m % len(DEVICES)]
        seq0 = first_seq + (m // len(DEVICES)) * per_message
        body = [
            {"ts": base + (seq0 + i) * 100, "seq": seq0 + i, "lel_pct": 1.0}
            for i in range(per_message)
        ]
        out.append((f"offsite/v1/gas/{device}/telemetry", json.dumps(body).encode()))
    return out


def _publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    by_topic: dict[str, list[bytes]] = {}
    for topic, payload in messages:
        by_topic.setdefault(topic, []).append(payload)
    for topic, payloads in by_topic.items():
        publish(port, topic, payloads)


def _stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry_gas").fetchone()
    return int(row[0]) if row else 0


def test_kill_9_mid_stream_loses_nothing_and_stores_nothing_twice(
    database_url: str, broker: BrokerProcess, tmp_path: Path
) -> None:
    env = os.environ | {
        "OFFSITE_DATABASE_URL": database_url,
        "OFFSITE_MQTT_URL": broker.url,
        "OFFSITE_HTTP_PORT": "0",
        "OFFSITE_MQTT_CLIENT_ID": "gw-kill9",
        "OFFSITE_LEDGER_SIGNING_KEY": LEDGER_KEY,
        "OFFSITE_INGEST_BATCH_MESSAGES": "50",
    }
    log = (tmp_path / "gateway.log").open("w")

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offsite.cli", "run"], env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while "duty console at" not in (tmp_path / "gateway.log").read_text():
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc

    gateway = start()
    messages = _messages(2000, 10)  # 20,000 readings
    publisher = threading.Thread(target=_publish_all, args=(broker.port, messages))
    publisher.start()
    while _stored(database_url) < 3000:
        time.sleep(0.01)
    gateway.send_signal(signal.SIGKILL)
    gateway.wait()
    at_kill = _stored(database_url)
    publisher.join()
    assert at_kill < 20_000, "the gateway was killed after it had stored everything"
    gateway = start()
    try:
        deadline = time.monotonic() + 60
        while _stored(database_url) < 20_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # anything stored twice would show up now
        assert _stored(database_url) == 20_000
        with psycopg.connect(database_url) as conn:
            distinct = conn.execute(
                "SELECT count(DISTINCT (device_id, seq)) FROM telemetry_gas"
            ).fetchone()
            quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
        assert distinct == (20_000,)
        assert quarantined == (0,)
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(30)


async def test_database_outage_holds_the_stream_and_drains_it_after(
    stoppable_postgres: StoppablePostgres, broker: BrokerProcess
) -> None:
    pg = stoppable_postgres
    async with start_gateway(
        pg.url, broker.url, ingest_queue_messages=100, ingest_batch_messages=20
    ) as gw:
        first = _messages(200, 5)
        await asyncio.to_thread(_publish_all, broker.port, first)
        await eventually(lambda: _count(pg.url, 1000), timeout=20)

        await asyncio.to_thread(pg.stop)
        # While the database is away: 600 more messages (3,000 readings) arrive. The gateway
        # holds at most its bounded hand-off (100) and acknowledges none of them, so the
        # broker keeps the rest for it.
        second = _messages(600, 5, first_seq=100)
        await asyncio.to_thread(_publish_all, broker.port, second)
        await asyncio.sleep(3.0)
        assert gw.runtime.gateway is not None
        assert gw.runtime.gateway.backlog <= 100
        metrics = (await gw.http.get("/metrics")).text
        assert 'offsite_write_errors_total{kind="unavailable"}' in metrics

        await asyncio.to_thread(pg.start)
        await eventually(lambda: _count(pg.url, 4000), timeout=60)
        await asyncio.sleep(1.0)
        assert _stored(pg.url) == 4000
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)


async def _count(url: str, n: int) -> bool:
    try:
        return await asyncio.to_thread(_stored, url) >= n
    except psycopg.OperationalError:
        return False


async def test_a_slow_database_backs_up_into_the_broker_and_drains(
    database_url: str, broker: BrokerProcess
) -> None:
    """A writer stuck behind a lock for seconds: the hand-off fills to its bound, the broker
    holds the rest, and when the lock goes every reading is stored exactly once."""
    async with start_gateway(
        database_url, broker.url, ingest_queue_messages=50, ingest_batch_messages=10
    ) as gw:
        blocker = await psycopg.AsyncConnection.connect(database_url)
        await blocker.execute("LOCK TABLE device_status IN ACCESS EXCLUSIVE MODE")
        messages = _messages(500, 4)
        await asyncio.to_thread(_publish_all, broker.port, messages)
        await asyncio.sleep(2.0)
        assert gw.runtime.gateway is not None
        assert gw.runtime.gateway.backlog <= 50
        assert _stored(database_url) == 0
        await blocker.rollback()
        await blocker.close()
        await eventually(lambda: _count(database_url, 2000), timeout=30)
        await asyncio.sleep(0.5)
        assert _stored(database_url) == 2000


async def test_broker_restart_mid_stream_devices_resend_and_nothing_is_lost(
    database_url: str, broker: BrokerProcess
) -> None:
    """A device keeps publishing through a broker restart (paho queues while disconnected);
    the gateway reconnects to its persistent session; every reading is stored once."""
    async with start_gateway(database_url, broker.url):
        device = paho.Client(CallbackAPIVersion.VERSION2, client_id="buffering-device")
        device.max_queued_messages_set(0)
        device.reconnect_delay_set(1, 1)
        device.connect("127.0.0.1", broker.port)
        device.loop_start()
        base = int((datetime.now(UTC) - timedelta(minutes=30)).timestamp() * 1000)
        topic = "offsite/v1/gas/gas-0009/telemetry"
        try:
            for i in range(300):
                if i == 100:
                    await asyncio.to_thread(broker.stop)
                if i == 200:
                    await asyncio.to_thread(broker.start)
                device.publish(topic, gas_reading(base + i * 1000, i, 1.0), qos=1)
                await asyncio.sleep(0.01)
            await eventually(lambda: _count(database_url, 300), timeout=60)
            await asyncio.sleep(0.5)
            assert _stored(database_url) == 300
        finally:
            device.disconnect()
            device.loop_stop()
