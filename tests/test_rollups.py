"""Rollups for long ranges (kept by the writer on plain PostgreSQL) and retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from offsite.gateway.payloads import GasReading
from offsite.ingest.writer import write_batch
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import RunningGateway, eventually, publish, start_gateway


async def _page(gw: RunningGateway, **params: str) -> dict[str, Any]:
    response = await gw.http.get("/api/v1/telemetry/gas-0001", params=params)
    response.raise_for_status()
    page: dict[str, Any] = response.json()
    return page


async def test_rollups_match_the_raw_readings_and_ignore_duplicates(
    database_url: str, broker: BrokerProcess
) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    start_ms = int(start.timestamp() * 1000)
    # three hours, one reading every 10 s, values cycling 0..49 %LEL
    readings = [
        {"ts": start_ms + i * 10_000, "seq": i, "lel_pct": float(i % 50), "co_ppm": float(i % 7)}
        for i in range(1080)
    ]
    batches = [json.dumps(readings[i : i + 100]) for i in range(0, 1080, 100)]
    async with start_gateway(database_url, broker.url) as gw:
        publish(broker.port, "offsite/v1/gas/gas-0001/telemetry", batches)
        publish(broker.port, "offsite/v1/gas/gas-0001/telemetry", batches[:3])  # re-sent

        span = {"from": start.isoformat(), "to": (start + timedelta(hours=3)).isoformat()}

        async def all_in() -> dict[str, Any] | None:
            page = await _page(gw, bucket="1h", **span)
            total = sum(b["readings"] for b in page["buckets"])
            return page if total == 1080 else None

        hours = await eventually(all_in)
        assert hours["bucket"] == "1h"
        assert [b["readings"] for b in hours["buckets"]] == [360, 360, 360]
        minutes = await _page(gw, bucket="1m", limit="10000", **span)
        assert len(minutes["buckets"]) == 180
        assert {b["readings"] for b in minutes["buckets"]} == {6}

        with psycopg.connect(database_url) as conn:
            expected = conn.execute(
                "SELECT date_bin('1 minute', time, TIMESTAMPTZ '2000-01-01') b, count(*),"
                " avg(lel_pct), min(lel_pct), max(lel_pct), max(co_ppm) FROM telemetry_gas"
                " WHERE device_id = 'gas-0001' GROUP BY 1 ORDER BY 1"
            ).fetchall()
        got = [
            (
                datetime.fromisoformat(b["bucket"]),
                b["readings"],
                b["lel_avg"],
                b["lel_min"],
                b["lel_max"],
                b["co_max"],
            )
            for b in minutes["buckets"]
        ]
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g[0] == e[0]
            assert g[1] == e[1]
            assert abs(g[2] - e[2]) < 1e-9
            assert (g[3], g[4], g[5]) == (e[3], e[4], e[5])

        # `auto` picks by range length: raw up to an hour, minutes up to 16 h, hours beyond.
        assert (await _page(gw, **span))["bucket"] == "1m"
        one_hour = {"from": start.isoformat(), "to": (start + timedelta(hours=1)).isoformat()}
        raw = await _page(gw, limit="10000", **one_hour)
        assert raw["bucket"] == "raw"
        assert len(raw["points"]) == 361  # both ends included
        week = {"from": (start - timedelta(days=7)).isoformat(), "to": span["to"]}
        assert (await _page(gw, **week))["bucket"] == "1h"


def test_retention_drops_whole_partitions_and_old_rollups(database_url: str) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT offsite_ensure_partitions('telemetry_gas', %s::date, %s::date)",
            (old.date(), old.date()),
        )
        conn.execute(
            "INSERT INTO telemetry_gas (time, device_id, seq, lel_pct, received_at)"
            " VALUES (%s, 'g', 1, 1.0, now()), (now(), 'g', 2, 1.0, now()),"
            " (%s, 'g', 3, 1.0, now())",
            (old, datetime.now(UTC) - timedelta(days=400)),
        )
        conn.execute(
            "INSERT INTO telemetry_gas_1m_acc VALUES ('g', %s, 1, 1, 1, 1, NULL),"
            " ('g', %s, 1, 1, 1, 1, NULL)",
            (old, datetime.now(UTC) - timedelta(days=200)),
        )
        name = f"telemetry_gas_p{old:%Y%m%d}"
        assert conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (name,)
        conn.execute("SELECT offsite_apply_retention(INTERVAL '30 days')")
        assert conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,)
        assert conn.execute("SELECT seq FROM telemetry_gas").fetchall() == [(2,)]
        # minutes are kept four times as long: 40 days stays, 200 days goes
        assert conn.execute("SELECT count(*) FROM telemetry_gas_1m_acc").fetchone() == (1,)


async def test_writer_rollups_stay_exact_through_direct_staged_and_folded_batches(
    database_url: str,
) -> None:
    """A batch of new readings takes the direct COPY; a batch holding a redelivered reading
    takes the staged path. Either way the rollup views equal the raw aggregates, before the
    deltas are folded into the accumulators and after."""
    start = datetime(2026, 11, 25, 8, 0, 30, tzinfo=UTC)
    received = datetime.now(UTC)

    def reading(i: int) -> tuple[str, GasReading]:
        device = f"gas-{1 + i % 3:04d}"
        lel = round(0.7 + (i * 37 % 101) / 10, 1)  # not exactly representable as real
        co = float(i % 7) if i % 5 else None
        return device, GasReading.model_validate(
            {
                "ts": int((start + timedelta(seconds=i)).timestamp() * 1000),
                "seq": i,
                "lel_pct": lel,
                "co_ppm": co,
            }
        )

    first = [reading(i) for i in range(0, 300)]
    again = [reading(i) for i in range(250, 400)]  # 50 already stored
    async with await psycopg.AsyncConnection.connect(database_url) as aconn:
        assert (await write_batch(aconn, "postgres", first, received, [], [])).stored == 300
        result = await write_batch(aconn, "postgres", again, received, [], [])
        assert (result.stored, result.duplicates) == (100, 50)

    raw = (
        "SELECT date_bin(%s, time, TIMESTAMPTZ '2000-01-01') b, device_id, count(*),"
        " avg(lel_pct), min(lel_pct), max(lel_pct), max(co_ppm) FROM telemetry_gas"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )

    def check(conn: psycopg.Connection[Any]) -> None:
        for view, width in (("telemetry_gas_1m", "1 minute"), ("telemetry_gas_1h", "1 hour")):
            got = conn.execute(
                f"SELECT bucket, device_id, readings, lel_avg, lel_min, lel_max, co_max"
                f" FROM {view} ORDER BY 1, 2"
            ).fetchall()
            want = conn.execute(raw, (width,)).fetchall()
            assert [g[:3] for g in got] == [w[:3] for w in want]
            for g, w in zip(got, want, strict=True):
                assert abs(g[3] - w[3]) < 1e-9
                assert g[4:] == w[4:]

    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM telemetry_gas").fetchone() == (400,)
        check(conn)
        folded = conn.execute("SELECT offsite_fold_rollups()").fetchone()
        assert folded is not None
        assert folded[0] > 0
        assert conn.execute("SELECT count(*) FROM telemetry_gas_1m_delta").fetchone() == (0,)
        check(conn)
        assert conn.execute("SELECT offsite_fold_rollups()").fetchone() == (0,)
