"""Joint random inspections (双随机): reproducible from the seed, weighted by risk tier,
inspectors qualified and from several departments, and every draw recorded in the ledger."""

from __future__ import annotations

import json
from collections import Counter

import psycopg
import pytest

from offsite.casework.inspections import Candidate, InspectionError, Inspector, draw
from offsite.cli import main

ROSTER = [
    Inspector("h1", "housing"),
    Inspector("h2", "housing"),
    Inspector("m1", "market"),
    Inspector("e1", "emergency"),
]


def test_the_same_seed_draws_the_same_plan_in_any_input_order() -> None:
    subjects = [Candidate(f"s{i:02d}", "ABCD"[i % 4]) for i in range(20)]
    first = draw(subjects, ROSTER, lead_department="housing", count=5, per_subject=2, seed="x")
    again = draw(
        list(reversed(subjects)),
        list(reversed(ROSTER)),
        lead_department="housing",
        count=5,
        per_subject=2,
        seed="x",
    )
    assert first == again
    other = draw(subjects, ROSTER, lead_department="housing", count=5, per_subject=2, seed="y")
    assert [p["subject_id"] for p in other] != [p["subject_id"] for p in first]
    for entry in first:
        team = entry["inspectors"]
        assert team[0]["department"] == "housing"  # the lead department leads
        assert team[1]["department"] != "housing"  # joint: another department joins
        assert len({i["id"] for i in team}) == 2


def test_higher_risk_tiers_are_drawn_more_often() -> None:
    subjects = [Candidate(f"a{i}", "A") for i in range(10)] + [
        Candidate(f"d{i}", "D") for i in range(10)
    ]
    drawn: Counter[str] = Counter()
    for n in range(400):
        for entry in draw(
            subjects, ROSTER, lead_department="housing", count=4, per_subject=1, seed=str(n)
        ):
            drawn[entry["risk_tier"]] += 1
    assert drawn["D"] > 3 * drawn["A"]  # weight 8 against 1
    assert drawn["A"] > 0  # low risk is still inspected now and then


def test_a_draw_that_cannot_be_made_says_why() -> None:
    with pytest.raises(InspectionError, match="lead department"):
        draw([Candidate("s", "B")], ROSTER, lead_department="fire", count=1, per_subject=1, seed="")
    with pytest.raises(InspectionError, match="no subject"):
        draw([], ROSTER, lead_department="housing", count=1, per_subject=1, seed="")


def test_the_cli_draws_from_the_registry_and_records_the_draw(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OFFSITE_DATABASE_URL", database_url)
    args = ["inspections", "plan", "--matter", "gas-safety", "--subjects", "3", "--seed", "2026-11"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["plan"]) == 3
    qualified = {"insp-h01", "insp-h02", "insp-h03", "insp-m01", "insp-e01", "insp-f01"}
    for entry in first["plan"]:
        assert {i["id"] for i in entry["inspectors"]} <= qualified
        assert entry["inspectors"][0]["department"] == "housing"
    assert main(args) == 0  # the same seed again: the same plan, recorded once
    assert json.loads(capsys.readouterr().out)["sha256"] == first["sha256"]
    with psycopg.connect(database_url) as conn:
        plans = conn.execute("SELECT id, sha256 FROM inspection_plans").fetchall()
        entries = conn.execute(
            "SELECT object_id FROM ledger WHERE action = 'inspection.planned'"
        ).fetchall()
    assert plans == [(first["id"], first["sha256"])]
    assert entries == [(first["id"],)]
    assert main(["inspections", "plan", "--matter", "nope", "--seed", "1"]) == 2
