"""`run_scalar_bench` on a small batch: the shape of its JSON, not its figures."""

from __future__ import annotations

import json

import pytest

from offsite.bench.detectors_scalar import TARGET_READINGS_PER_S, run_scalar_bench
from offsite.detectors.rulepack import builtin_packs


def test_scalar_bench_reports_every_family_and_rule() -> None:
    result = json.loads(
        json.dumps(
            run_scalar_bench(
                readings=20_000, devices=200, episode_share=0.05, baseline_readings=2_000
            )
        )
    )
    assert result["target_readings_per_s"] == TARGET_READINGS_PER_S
    families = result["families"]
    assert set(families) == {"gas", "elevator", "boiler", "crane", "health"}
    scalar_rules = {r.name for p in builtin_packs() for r in p.rules if r.kind != "flapping"}
    seen: set[str] = set()
    for entry in families.values():
        assert entry["readings"] == 20_000
        assert entry["readings_per_s"] > 0
        assert entry["findings"] >= 0
        seen |= set(entry["rules_readings_per_s"])
    assert seen == scalar_rules
    assert families["gas"]["findings"] > 0  # the synthetic leaks are found
    assert result["baseline"]["readings"] == 2_000
    assert result["gas_levels"]["speedup"] > 0
    assert isinstance(result["meets_target"], bool)


def test_offsite_bench_detectors_prints_both_benchmarks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from offsite.cli import main  # noqa: PLC0415

    args = ["bench", "detectors", "--readings", "20000", "--devices", "200"]
    assert main([*args, "--frames", "20", "--rounds", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["scalar"]["families"]) == {"gas", "elevator", "boiler", "crane", "health"}
    video = result["video"]
    if "skipped" not in video:
        assert video["pipeline"]["frames_per_s_cpu"] > 0
        assert video["ratio_cpu"] > 0
