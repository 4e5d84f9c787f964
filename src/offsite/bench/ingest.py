"""`offsite bench ingest`: device load through the real broker into the real database.

Phases, in one run on one machine:
1. limits of this machine for the same data: the broker's delivery rate to a subscriber that
   does nothing, and PostgreSQL's COPY rate for the same rows into the same table;
2. sustained ingest: publishers in separate processes at the asked rate, through `offsite
   run` (a separate process), until every reading is stored or quarantined;
3. publish-to-alert latency: probes that fire a clue, timed until the alert arrives on
   `/api/v1/alerts/live`, while background load runs at half the sustained rate.
CPU seconds of gateway, broker and database are taken over phase 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import psycopg
from psycopg import sql

from offsite.bench.wire import Publisher, Subscriber
from offsite.config import Settings
from offsite.embedded import free_port, start_mosquitto
from offsite.gateway.columns import GasColumns
from offsite.gateway.payloads import GasWire
from offsite.ingest.schema import migrate
from offsite.ingest.writer import GAS_COLUMNS
from offsite.latency import quantile_from_buckets
from offsite.registry.store import load_registry

TOKEN = "bench-token-" + "x" * 20


@dataclass(frozen=True, slots=True)
class BenchOptions:
    devices: int
    rate: float  # messages per second per device
    duration: float
    readings_per_message: int
    qos: int
    publishers: int
    database_url: str
    limit_messages: int
    probes: int = 40


def _device_ids(n: int) -> list[str]:
    return [f"bench-{i:06d}" for i in range(n)]


def _registry_toml(devices: list[str], probes: list[str]) -> str:
    lines = [
        'version = "bench"',
        '[[departments]]\nid = "housing"\nname = "Housing"',
        '[[matters]]\nid = "gas-safety"\nname = "Gas"\ndomain = "gas"\n'
        'lead_department = "housing"\nlegal_basis = ["GB/T 50493-2019"]\n'
        'object_type = "sites"\ninspection_method = "remote"',
        '[[subjects]]\nid = "bench-site"\nname = "Bench site"\nkind = "site"',
    ]
    for device in devices + probes:
        lines.append(
            f'[[devices]]\nid = "{device}"\ndomain = "gas"\nkind = "gas_detector"\n'
            'subject_id = "bench-site"\nexpected_interval_s = 3600'
        )
    return "\n".join(lines) + "\n"


_LEL: Final = [b"%.1f" % (1 + i / 10) for i in range(10)]


def _message(device: str, seq0: int, k: int, ts_ms: int) -> bytes:
    """A normal background: 1.0 to 1.9 %LEL, far from any alarm level or rising rate, so
    that the detectors see every reading and find nothing. Built as bytes from a few
    pieces: the publishers share the machine with what they load."""
    if k == 1:
        return b'{"ts":%d,"seq":%d,"lel_pct":%s}' % (ts_ms, seq0, _LEL[seq0 % 10])
    head = b'{"ts":%d,"seq":' % ts_ms
    body = b",".join(
        [head + b'%d,"lel_pct":%s}' % (s, _LEL[s % 10]) for s in range(seq0, seq0 + k)]
    )
    return b"[" + body + b"]"


def _publisher_main(
    host: str,
    port: int,
    index: int,
    devices: list[str],
    prefix: str,
    msg_rate: float,
    duration: float,
    k: int,
    qos: int,
    count_limit: int | None,
    out: Any,
) -> None:
    """One publishing process: round-robin over its devices, paced in 10 ms ticks."""
    cpu_at_start = time.process_time()
    pub = Publisher(host, port, f"bench-pub-{index}-{uuid.uuid4().hex[:6]}", qos)
    topics = [f"{prefix}/{d}/telemetry".encode() for d in devices]
    seqs = [0] * len(devices)
    sent = 0
    next_device = 0
    started = time.monotonic()
    tick = 0.01
    while True:
        elapsed = time.monotonic() - started
        if count_limit is None:
            if elapsed >= duration:
                break
            due = int(min(elapsed + tick, duration) * msg_rate) - sent
        else:
            if sent >= count_limit:
                break
            due = min(5000, count_limit - sent)
        if due > 0:
            ts_ms = int(time.time() * 1000)
            batch = []
            for _ in range(due):
                d = next_device
                next_device = (next_device + 1) % len(devices)
                batch.append((topics[d], _message(devices[d], seqs[d], k, ts_ms)))
                seqs[d] += k
            pub.send(batch)
            sent += due
        if count_limit is None:
            sleep = started + (int(elapsed / tick) + 1) * tick - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
    if qos:
        pub.drain()
    pub.close()
    out.put(
        {
            "index": index,
            "messages": sent,
            "elapsed": time.monotonic() - started,
            "cpu_s": time.process_time() - cpu_at_start,
        }
    )


def _subscriber_main(host: str, port: int, topic: str, qos: int, expected: int, out: Any) -> None:
    sub = Subscriber(host, port, f"bench-sub-{uuid.uuid4().hex[:6]}", topic, qos)
    out.put("ready")
    count, first, last = sub.count(expected, idle_timeout_s=10.0)
    sub.close()
    out.put({"messages": count, "seconds": last - first})


def _run_publishers(
    port: int,
    devices: list[str],
    prefix: str,
    total_rate: float,
    duration: float,
    k: int,
    qos: int,
    processes: int,
    count: int | None = None,
) -> tuple[list[BaseProcess], Any]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs: list[BaseProcess] = []
    for i in range(processes):
        share = devices[i::processes]
        limit = None if count is None else count // processes + (1 if i < count % processes else 0)
        proc = ctx.Process(
            target=_publisher_main,
            args=(
                "127.0.0.1",
                port,
                i,
                share,
                prefix,
                total_rate / processes,
                duration,
                k,
                qos,
                limit,
                results,
            ),
        )
        proc.start()
        procs.append(proc)
    return procs, results


def _collect(procs: list[BaseProcess], results: Any) -> tuple[int, float]:
    """Messages the publishers sent, and the CPU seconds they took."""
    total, cpu = 0, 0.0
    for _ in procs:
        result = results.get(timeout=600)
        total += int(result["messages"])
        cpu += float(result["cpu_s"])
    for proc in procs:
        proc.join(30)
    return total, cpu


def measure_broker_limit(port: int, devices: list[str], opts: BenchOptions) -> dict[str, float]:
    """Messages/s the broker delivers to a subscriber that only counts and acknowledges."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    n = opts.limit_messages
    sub = ctx.Process(
        target=_subscriber_main, args=("127.0.0.1", port, "limit/+/telemetry", opts.qos, n, out)
    )
    sub.start()
    assert out.get(timeout=30) == "ready"
    time.sleep(0.2)
    procs, results = _run_publishers(
        port, devices, "limit", 0, 0, opts.readings_per_message, opts.qos, opts.publishers, n
    )
    published, _ = _collect(procs, results)
    received = out.get(timeout=600)
    sub.join(30)
    seconds = max(received["seconds"], 1e-9)
    return {
        "messages": published,
        "delivered": received["messages"],
        "messages_per_s": received["messages"] / seconds,
        "readings_per_s": received["messages"] * opts.readings_per_message / seconds,
    }


def measure_copy_limit(
    url: str, rows: int, devices: list[str], connections: int = 1
) -> dict[str, float]:
    """Rows/s the database takes by binary COPY of the same rows into the same table
    (indexes included), in batches like the gateway's, each committed, over `connections`
    connections at once. The COPY data is built before the clock starts: this is the
    database's rate, not a client's."""
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    batch = 5000
    data: list[bytes] = []
    for first in range(0, rows, batch):
        n = min(batch, rows - first)
        readings = [
            (
                devices[i % len(devices)],
                GasWire(ts=now_ms, seq=10_000_000 + i, lel_pct=1 + (i % 10) / 10),
            )
            for i in range(first, first + n)
        ]
        data.append(GasColumns.of(readings).copy_data(now))
    copy_sql = f"COPY telemetry_gas ({GAS_COLUMNS}) FROM STDIN (FORMAT BINARY)"

    def write(share: list[bytes]) -> None:
        with psycopg.connect(url) as conn:
            for chunk in share:
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.write(chunk)
                conn.commit()

    workers = [
        threading.Thread(target=write, args=(data[k::connections],)) for k in range(connections)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM telemetry_gas").fetchone()
        conn.execute("TRUNCATE telemetry_gas")
        if conn.execute("SELECT to_regclass('telemetry_gas_1m_acc')").fetchone() != (None,):
            conn.execute(
                "TRUNCATE telemetry_gas_1m_acc, telemetry_gas_1h_acc, telemetry_gas_1m_delta"
            )
        conn.commit()
    if stored != (rows,):
        raise RuntimeError(f"COPY limit: {stored} rows stored of {rows}")
    return {"rows": rows, "connections": connections, "rows_per_s": rows / seconds}


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _postgres_processes() -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")
    ]


def _counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM telemetry_gas").fetchone()
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
    return int(stored[0]) if stored else 0, int(quarantined[0]) if quarantined else 0


def _accounted(http_port: int) -> float:
    """Readings the gateway has stored and records it has quarantined, by its metrics."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("offsite_readings_stored_total{", "offsite_quarantined_total ")):
            total += float(line.split()[-1])
    return total


def _buckets(text: str, name: str) -> list[tuple[float, float]]:
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    return buckets


def database_checkpoints(url: str) -> int:
    """Checkpoints the database has made since its statistics were reset: one that falls in
    the probes' window writes and syncs the pages dirtied since the last, which is the
    likeliest cause of a spell of slow commits (PostgreSQL 17 moved the counts to
    `pg_stat_checkpointer`)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for query in (
            "SELECT num_timed + num_requested FROM pg_stat_checkpointer",
            "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
        ):
            try:
                row = conn.execute(query).fetchone()
            except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
                continue
            return int(row[0]) if row else 0
    return 0


def _latency_from_metrics(
    text: str, name: str, before: str | None = None
) -> dict[str, float | None]:
    """p50/p99 of a histogram in /metrics text; with `before`, of what was added since."""
    buckets = _buckets(text, name)
    if before is not None:
        earlier = dict(_buckets(before, name))
        buckets = [(le, count - earlier.get(le, 0.0)) for le, count in buckets]
    # cumulative counts: the largest value lies in the first bucket holding them all
    total = buckets[-1][1] if buckets else 0.0
    top = next((le for le, count in buckets if count >= total), None) if total else None
    return {
        "p50_ms": _ms(quantile_from_buckets(buckets, 0.5)),
        "p99_ms": _ms(quantile_from_buckets(buckets, 0.99)),
        "max_ms_at_most": None if top is None or top == float("inf") else _ms(top),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


@contextlib.contextmanager
def _bench_database(admin_url: str) -> Iterator[str]:
    name = f"offsite_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _writers() -> int:
    """The gateway's write concurrency, as the gateway started here will read it."""
    default = Settings.model_fields["ingest_write_concurrency"].default
    return int(os.environ.get("OFFSITE_INGEST_WRITE_CONCURRENCY", default))


@contextlib.contextmanager
def _gateway(
    url: str, port: int, http_port: int, log: Path, rate: float
) -> Iterator[subprocess.Popen[bytes]]:
    env = os.environ | {
        # The bench's devices declare one reading an hour (no silence clue between phases)
        # and publish `rate` a second: the flood guard stays on (its cost is measured) with
        # a floor well above that rate, so it throttles none of them.
        "OFFSITE_FLOOD_MIN_RATE_PER_S": str(max(rate * 10, 1.0)),
        "OFFSITE_DATABASE_URL": url,
        "OFFSITE_MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "OFFSITE_HTTP_PORT": str(http_port),
        "OFFSITE_BOOTSTRAP_TOKEN": TOKEN,
        "OFFSITE_MQTT_CLIENT_ID": "bench-gateway",
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offsite.cli", "run"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while "duty console at" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _alert_latency(http_port: int, broker_port: int, probes: list[str]) -> dict[str, Any]:
    """Each probe device sends two readings at 60 %LEL, 20 s apart in device time: the
    second one fires (confirmation 15 s). Timed from its publish to the pushed alert, and
    split at the alert's own time (`at`: the start of the transaction that announced it,
    on the database's clock, which is this machine's)."""
    import websockets  # noqa: PLC0415 - part of uvicorn[standard]

    url = f"ws://127.0.0.1:{http_port}/api/v1/alerts/live?token={TOKEN}"
    pub = Publisher("127.0.0.1", broker_port, f"bench-probe-{uuid.uuid4().hex[:6]}", 1, 100)
    latencies: list[float] = []
    before_row: list[float] = []
    after_row: list[float] = []
    async with websockets.connect(url) as ws:
        await ws.recv()  # hello
        for device in probes:
            now_ms = int(time.time() * 1000)
            topic = f"offsite/v1/gas/{device}/telemetry".encode()
            pub.send([(topic, b'{"ts":%d,"seq":1,"lel_pct":60.0}' % (now_ms - 20_000))])
            await asyncio.sleep(0.05)
            sent = time.perf_counter()
            # device time = publish time, so the gateway's detection latency is comparable
            sent_wall = time.time()
            now_ms = int(sent_wall * 1000)
            pub.send([(topic, b'{"ts":%d,"seq":2,"lel_pct":60.0}' % now_ms)])
            deadline = sent + 10
            while time.perf_counter() < deadline:
                message = json.loads(
                    await asyncio.wait_for(ws.recv(), deadline - time.perf_counter())
                )
                if message.get("type") == "clue.opened" and message["clue"]["device_id"] == device:
                    latencies.append(time.perf_counter() - sent)
                    row_at = datetime.fromisoformat(message["at"]).timestamp()
                    before_row.append(row_at - sent_wall)
                    after_row.append(time.time() - row_at)
                    break
            await asyncio.sleep(0.1)
    pub.drain()
    pub.close()
    if not latencies:
        return {"probes": len(probes), "alerts": 0, "p50_ms": None, "p99_ms": None}
    return {
        "probes": len(probes),
        "alerts": len(latencies),
        **_percentiles(latencies),
        # publish to the start of the announcing transaction (detection, hand-off), and
        # from there to the client (the announcement's round trips, the commit, the push)
        "publish_to_announcing": _percentiles(before_row),
        "announcing_to_client": _percentiles(after_row),
        # (probe number, ms) of the slowest: whether the tail is a spell or spread out
        "slowest": [
            [i, round(latencies[i] * 1000, 1)]
            for i in sorted(range(len(latencies)), key=latencies.__getitem__)[-5:][::-1]
        ],
    }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def run_ingest_bench(opts: BenchOptions) -> dict[str, Any]:
    devices = _device_ids(opts.devices)
    probes = [f"probe-{i:03d}" for i in range(opts.probes)]
    result: dict[str, Any] = {
        "options": {
            "devices": opts.devices,
            "rate_per_device": opts.rate,
            "duration_s": opts.duration,
            "readings_per_message": opts.readings_per_message,
            "qos": opts.qos,
            "publisher_processes": opts.publishers,
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    with (
        tempfile.TemporaryDirectory(prefix="offsite-bench-") as tmp_dir,
        _bench_database(opts.database_url) as url,
    ):
        tmp = Path(tmp_dir)
        migrate(url, "auto")
        registry = tmp / "registry.toml"
        registry.write_text(_registry_toml(devices, probes))
        with psycopg.connect(url) as conn:
            load_registry(conn, registry)
        port = free_port()
        broker = start_mosquitto(port, tmp / "mosquitto")
        try:
            result["limits"] = {
                "broker_delivery": measure_broker_limit(port, devices, opts),
                "postgres_copy": measure_copy_limit(
                    url, opts.limit_messages * opts.readings_per_message, devices
                ),
                # as many at once as the gateway writes: what the database takes when it
                # has the whole machine
                "postgres_copy_concurrent": measure_copy_limit(
                    url, opts.limit_messages * opts.readings_per_message, devices, _writers()
                ),
            }
            http_port = free_port()
            with _gateway(url, port, http_port, tmp / "gateway.log", opts.rate) as gateway:
                result["sustained"] = _sustained(
                    url, port, http_port, devices, opts, gateway, broker
                )
                half = result["sustained"]["messages_per_s"] / 2
                procs, results = _run_publishers(
                    port,
                    devices,
                    "offsite/v1/gas",
                    half,
                    2.0 + opts.probes * 0.25,
                    opts.readings_per_message,
                    opts.qos,
                    opts.publishers,
                )
                time.sleep(1.0)
                before = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
                checkpoints = database_checkpoints(url)
                alert: dict[str, Any] = asyncio.run(_alert_latency(http_port, port, probes))
                alert["background_messages_per_s"] = round(half, 1)
                alert["database_checkpoints"] = database_checkpoints(url) - checkpoints
                # where a probe's time goes: detection (device time to finding) and casework
                # (finding to committed clue, evidence and alert); the rest is the alert's
                # way out (NOTIFY, read, WebSocket)
                metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
                alert["publish_to_finding"] = _latency_from_metrics(
                    metrics, "offsite_finding_latency_seconds"
                )
                alert["finding_to_announced"] = _latency_from_metrics(
                    metrics, "offsite_announce_latency_seconds"
                )
                alert["finding_to_evidence_fixed"] = _latency_from_metrics(
                    metrics, "offsite_casework_latency_seconds"
                )
                # while the probes ran: how late the gateway's event loop ran a timer
                alert["event_loop_lag"] = _latency_from_metrics(
                    metrics, "offsite_event_loop_lag_seconds", before
                )
                alert["findings"] = {
                    line.split(" ")[0]: float(line.split(" ")[1])
                    for line in metrics.splitlines()
                    if line.startswith("offsite_findings_total{")
                }
                _collect(procs, results)
                result["publish_to_alert"] = alert
        finally:
            broker.terminate()
            broker.wait(10)
    limits = result["limits"]
    sustained = result["sustained"]["readings_per_s"]
    broker_limit = limits["broker_delivery"]["readings_per_s"]
    for name, copy_limit in (
        ("ratio_to_lower_limit", limits["postgres_copy"]["rows_per_s"]),
        ("ratio_to_lower_limit_concurrent", limits["postgres_copy_concurrent"]["rows_per_s"]),
    ):
        result[name] = round(sustained / min(broker_limit, copy_limit), 3)
    return result


def _sustained(
    url: str,
    port: int,
    http_port: int,
    devices: list[str],
    opts: BenchOptions,
    gateway: subprocess.Popen[bytes],
    broker: subprocess.Popen[bytes],
) -> dict[str, Any]:
    watched_gateway = [psutil.Process(gateway.pid)]
    watched_broker = [psutil.Process(broker.pid)]
    watched_db = _postgres_processes()
    cpu_before = (_cpu(watched_gateway), _cpu(watched_broker), _cpu(watched_db))
    started = time.monotonic()
    procs, results = _run_publishers(
        port,
        devices,
        "offsite/v1/gas",
        opts.devices * opts.rate,
        opts.duration,
        opts.readings_per_message,
        opts.qos,
        opts.publishers,
    )
    messages, publishers_cpu = _collect(procs, results)
    published_at = time.monotonic()
    readings = messages * opts.readings_per_message
    # Progress from the gateway's own counters while it drains: counting the table every
    # 50 ms scanned millions of rows on the cores the writers need. The table is counted
    # once, at the end, for the accounting.
    done = 0.0
    drained_at = published_at
    last_change = time.monotonic()
    while time.monotonic() - last_change < 15:
        now_done = _accounted(http_port)
        if now_done != done:
            done = now_done
            drained_at = last_change = time.monotonic()
        if done >= readings:
            break
        time.sleep(0.05)
    cpu_after = (_cpu(watched_gateway), _cpu(watched_broker), _cpu(watched_db))
    stored, quarantined = _counts(url)
    seconds = drained_at - started
    metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
    return {
        "messages_published": messages,
        "readings_published": readings,
        "readings_stored": stored,
        "readings_quarantined": quarantined,
        "lost": readings - stored - quarantined,
        "seconds": round(seconds, 3),
        "publish_seconds": round(published_at - started, 3),
        "messages_per_s": round(messages / seconds, 1),
        "readings_per_s": round(readings / seconds, 1),
        "publish_to_commit": _latency_from_metrics(
            metrics, "offsite_ingest_commit_latency_seconds"
        ),
        "cpu_seconds": {
            "gateway": round(cpu_after[0] - cpu_before[0], 2),
            "broker": round(cpu_after[1] - cpu_before[1], 2),
            "database": round(cpu_after[2] - cpu_before[2], 2),
            # the load generator, which shares the machine (real devices would not)
            "publishers": round(publishers_cpu, 2),
        },
    }
