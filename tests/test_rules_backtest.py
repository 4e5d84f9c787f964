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


def test_backtest_replays_equipment_telemetry_too(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # elev-0001 (rated 1.75 m/s) at 2.0 m/s for 5 s: under 1.2x rated, over 1.1x
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry_equipment (time, device_id, seq, kind, speed_mps, moving,"
            " door, in_door_zone, alarm_button, received_at)"
            " VALUES (%s, 'elev-0001', %s, 'elevator', %s, true, 'closed', false, false, %s)",
            [(at(i), i, 2.0 if 10 <= i < 15 else 1.5, at(i)) for i in range(30)],
        )
    monkeypatch.setenv("OFFSITE_DATABASE_URL", database_url)

    def run(*extra: str) -> dict[str, object]:
        span = ["--from", T0.isoformat(), "--to", (T0 + timedelta(hours=1)).isoformat()]
        assert main(["rules", "backtest", "--rule", "elevator.overspeed.tier1", *span, *extra]) == 0
        result: dict[str, object] = json.loads(capsys.readouterr().out)
        return result

    as_written = run()
    assert as_written["readings"] == 30
    assert as_written["clues"] == []
    tried = run("--set", "threshold=1.1")
    clues = tried["clues"]
    assert isinstance(clues, list)
    assert [(c["rule"], c["device_id"]) for c in clues] == [
        ("elevator.overspeed.tier1", "elev-0001")
    ]
