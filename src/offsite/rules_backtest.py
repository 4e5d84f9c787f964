"""`offsite rules backtest`: stored telemetry through rules with changed thresholds.

The I/O around the pure `detectors.backtest`: devices and subjects from the registry
tables, readings from `telemetry_gas` and `telemetry_equipment` in event-time order, fetched
in bounded batches (each device's readings are in one table, so the engine can take one
table after the other).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np
import psycopg

from offsite.detectors.batch import ReadingBatch, code
from offsite.detectors.engine import ScalarEngine
from offsite.detectors.findings import Finding
from offsite.detectors.rulepack import DeviceProfile, Override, RulePack, find_rule, retune
from offsite.gateway.equipment_payloads import EQUIPMENT_FIELDS

_GAS_QUERY = """
SELECT (extract(epoch FROM time) * 1000)::bigint, device_id, seq, lel_pct, co_ppm, valve,
       fault, (extract(epoch FROM received_at) * 1000)::bigint
FROM telemetry_gas
WHERE time >= %s AND time < %s
ORDER BY time, device_id, seq
"""


_EQUIPMENT_QUERY = f"""
SELECT (extract(epoch FROM time) * 1000)::bigint, device_id, seq,
       (extract(epoch FROM received_at) * 1000)::bigint, {", ".join(EQUIPMENT_FIELDS)}
FROM telemetry_equipment
WHERE time >= %s AND time < %s
ORDER BY time, device_id, seq
"""  # noqa: S608 - constants


def read_profiles(conn: psycopg.Connection[Any]) -> list[DeviceProfile]:
    """Active devices of the loaded registry with their subject's risk tier."""
    rows = conn.execute(
        "SELECT d.id, d.kind, d.subject_id, s.risk_tier, d.attributes"
        " FROM devices d JOIN subjects s ON s.id = d.subject_id WHERE d.active ORDER BY d.id"
    ).fetchall()
    return [DeviceProfile.of(r[0], r[1], r[2], r[3], r[4] or {}) for r in rows]


def gas_batches(
    conn: psycopg.Connection[Any], since: datetime, until: datetime, rows_per_batch: int
) -> Iterator[ReadingBatch]:
    """Stored gas readings in [since, until), oldest first, as engine batches."""
    with conn.cursor(name="offsite_backtest") as cur:
        cur.itersize = rows_per_batch
        cur.execute(_GAS_QUERY, (since, until))
        while rows := cur.fetchmany(rows_per_batch):
            yield _gas_batch(rows)


def equipment_batches(
    conn: psycopg.Connection[Any], since: datetime, until: datetime, rows_per_batch: int
) -> Iterator[ReadingBatch]:
    """Stored equipment readings in [since, until), oldest first, as engine batches; a
    field a kind does not report is absent (NaN) in its rows."""
    with conn.cursor(name="offsite_backtest_equipment") as cur:
        cur.itersize = rows_per_batch
        cur.execute(_EQUIPMENT_QUERY, (since, until))
        while rows := cur.fetchmany(rows_per_batch):
            n = len(rows)
            index: dict[str, int] = {}
            device = np.fromiter((index.setdefault(r[1], len(index)) for r in rows), np.int32, n)
            columns = {
                name: np.fromiter((code(name, r[4 + i]) for r in rows), np.float64, n)
                for i, name in enumerate(EQUIPMENT_FIELDS)
            }
            yield ReadingBatch(
                tuple(index),
                device,
                np.fromiter((r[0] for r in rows), np.int64, n),
                np.fromiter((r[2] for r in rows), np.int64, n),
                np.fromiter((r[3] for r in rows), np.int64, n),
                columns,
            )


def _gas_batch(rows: Sequence[tuple[Any, ...]]) -> ReadingBatch:
    n = len(rows)
    index: dict[str, int] = {}
    device = np.fromiter((index.setdefault(r[1], len(index)) for r in rows), np.int32, n)
    columns = {
        name: np.fromiter((code(name, r[i]) for r in rows), np.float64, n)
        for i, name in ((3, "lel_pct"), (4, "co_ppm"), (5, "valve"), (6, "fault"))
    }
    return ReadingBatch(
        tuple(index),
        device,
        np.fromiter((r[0] for r in rows), np.int64, n),
        np.fromiter((r[2] for r in rows), np.int64, n),
        np.fromiter((r[7] for r in rows), np.int64, n),
        columns,
    )


@dataclass(frozen=True, slots=True)
class BacktestResult:
    readings: int
    findings: list[Finding]

    def report(self) -> dict[str, object]:
        """JSON: one entry per clue the rules would have opened, with its clearing."""
        cleared = {f.key: f.at for f in self.findings if f.phase == "cleared"}
        clues = [
            {
                "key": f.key,
                "rule": f.rule,
                "device_id": f.device_id,
                "severity": f.severity,
                "episode_start": f.episode_start.isoformat(),
                "opened_at": f.at.isoformat(),
                "cleared_at": cleared[f.key].isoformat() if f.key in cleared else None,
                "value": f.value,
                "threshold": f.threshold,
            }
            for f in self.findings
            if f.phase == "opened"
        ]
        by_rule: dict[str, int] = {}
        for clue in clues:
            by_rule[str(clue["rule"])] = by_rule.get(str(clue["rule"]), 0) + 1
        return {"readings": self.readings, "clues_by_rule": by_rule, "clues": clues}


def run_backtest(
    conn: psycopg.Connection[Any],
    packs: Sequence[RulePack],
    rules: Sequence[str],
    since: datetime,
    until: datetime,
    changes: dict[str, object] | None = None,
    overrides: Sequence[Override] = (),
    rows_per_batch: int = 100_000,
) -> BacktestResult:
    """`rules` over the stored telemetry; `changes` retune the one rule named."""
    packs = list(packs)
    if changes:
        if len(rules) != 1:
            raise ValueError("changed thresholds apply to exactly one --rule")
        pack, _ = find_rule(packs, rules[0])
        packs = [retune(p, rules[0], **changes) if p is pack else p for p in packs]
    engine = ScalarEngine(packs, read_profiles(conn), overrides, only=rules)
    findings: list[Finding] = []
    readings = 0
    for batch in chain(
        gas_batches(conn, since, until, rows_per_batch),
        equipment_batches(conn, since, until, rows_per_batch),
    ):
        readings += len(batch)
        findings.extend(engine.feed(batch))
    return BacktestResult(readings, findings)


def parse_changes(pairs: Sequence[str]) -> dict[str, object]:
    """`name=value` pairs; numbers become numbers, true/false booleans."""
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--set takes name=value, not {pair!r}")
        value: object = text
        if text in ("true", "false"):
            value = text == "true"
        else:
            try:
                value = float(text)
            except ValueError:
                value = text
        out[name] = value
    return out
