"""`offsite rules backtest` against a real PostgreSQL with the demo registry."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from offsite.cli import main
from tests.scalar import T0, at


def _store(url: str, device: str, values: list[float], start: float = 0.0) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry_gas (time, device_id, seq, lel_pct, valve, received_at)"
            " VALUES (%s, %s, %s, %s, 'open', %s)",
            [
                (at(start + i), device, i, v, at(start + i) + timedelta(milliseconds=300))
                for i, v in enumerate(values)
            ],
        )


def _backtest(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *extra: str
) -> dict[str, object]:
    monkeypatch.setenv("OFFSITE_DATABASE_URL", url)
    code = main(
        [
            "rules",
            "backtest",
            "--rule",
            "gas.lel.level1",
            "--from",
            T0.isoformat(),
            "--to",
            (T0 + timedelta(hours=1)).isoformat(),
            *extra,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    result: dict[str, object] = json.loads(out.out)
    return result


def test_backtest_reports_the_clues_a_lower_threshold_would_have_opened(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # gas-0003 belongs to a tier A subject: 22 %LEL is below the first level as written
    _store(database_url, "gas-0003", [22.0] * 30 + [1.0] * 40)
    as_written = _backtest(database_url, monkeypatch, capsys)
    assert as_written["readings"] == 70
    assert as_written["clues"] == []
    tried = _backtest(database_url, monkeypatch, capsys, "--set", "threshold=20")
    clues = tried["clues"]
    assert isinstance(clues, list)
    [clue] = clues
    assert clue["device_id"] == "gas-0003"
    assert clue["opened_at"] == at(15).isoformat()
    assert clue["cleared_at"] == at(30 + 30).isoformat()
    assert tried["clues_by_rule"] == {"gas.lel.level1": 1}


def test_backtest_refuses_an_unknown_rule(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OFFSITE_DATABASE_URL", database_url)
    code = main(
        [
            "rules",
            "backtest",
            "--rule",
            "gas.nope",
            "--from",
            T0.isoformat(),
            "--to",
            T0.isoformat(),
        ]
    )
    assert code == 2
    assert "gas.nope" in capsys.readouterr().err
