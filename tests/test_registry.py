"""Registry files: validated whole, loaded in one transaction, versioned, reloadable."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from offsite.cli import main
from offsite.detectors.video.config import CameraVideoConfig
from offsite.frames import camera_configs
from offsite.registry.store import RegistryError, demo_registry_path, load_registry, parse_registry

SMALL = """
version = "t-1"
[[departments]]
id = "housing"
name = "Housing"
[[departments]]
id = "market"
name = "Market"
[[matters]]
id = "gas-safety"
name = "Gas"
domain = "gas"
lead_department = "housing"
cooperating_departments = ["market"]
legal_basis = ["GB/T 50493-2019"]
object_type = "restaurants"
inspection_method = "remote"
[[subjects]]
id = "r1"
name = "Restaurant 1"
kind = "enterprise"
tags = ["restaurant"]
risk_tier = "C"
[[devices]]
id = "g1"
domain = "gas"
kind = "gas_detector"
subject_id = "r1"
expected_interval_s = 0.5
"""


def test_demo_registry_is_valid() -> None:
    registry = parse_registry(demo_registry_path().read_bytes(), "demo")
    assert {m.id for m in registry.matters} >= {
        "gas-safety",
        "special-equipment",
        "hazardous-chemicals",
    }
    for device in registry.devices:
        assert registry.matter_for(device).domain == device.domain


def test_every_problem_is_named_at_once() -> None:
    broken = SMALL.replace('lead_department = "housing"', 'lead_department = "police"').replace(
        'subject_id = "r1"', 'subject_id = "r9"'
    )
    with pytest.raises(RegistryError) as error:
        parse_registry(broken.encode(), "broken.toml")
    text = str(error.value)
    assert "unknown department 'police'" in text
    assert "device 'g1' names unknown subject 'r9'" in text
    with pytest.raises(RegistryError, match="kind 'elevator' does not belong to domain 'gas'"):
        parse_registry(SMALL.replace('kind = "gas_detector"', 'kind = "elevator"').encode(), "x")
    with pytest.raises(RegistryError, match="not a TOML file"):
        parse_registry(b"version = ", "x.toml")
    with pytest.raises(RegistryError, match="Extra inputs are not permitted"):
        parse_registry(
            SMALL.replace('name = "Housing"', 'name = "Housing"\ncolour = "red"').encode(), "x"
        )


def test_load_is_idempotent_and_absent_entries_become_inactive(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    with psycopg.connect(database_url) as conn:
        first = load_registry(conn, path)
        second = load_registry(conn, path)
        assert first == second
        assert (first.version, first.devices, first.subjects) == ("t-1", 1, 1)
        active = conn.execute("SELECT id FROM devices WHERE active ORDER BY id").fetchall()
        assert active == [("g1",)]
        inactive = conn.execute("SELECT count(*) FROM devices WHERE NOT active").fetchone()
        assert inactive == (23,)  # the demo devices loaded before
        loads = conn.execute("SELECT version, sha256 FROM registry_loads ORDER BY id").fetchall()
        assert [v for v, _ in loads] == ["demo-2026.11", "t-1", "t-1"]
        assert loads[1][1] == first.sha256


def test_cli_loads_a_registry(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    monkeypatch.setenv("OFFSITE_DATABASE_URL", database_url)
    assert main(["registry", "load", str(path)]) == 0
    assert "registry t-1 loaded" in capsys.readouterr().out
    path.write_text(SMALL.replace('id = "r1"', 'id = "r1"\nbogus = 1'))
    assert main(["registry", "load", str(path)]) == 1
    assert "Extra inputs are not permitted" in capsys.readouterr().err


def test_a_camera_video_config_with_a_typo_is_refused_at_load() -> None:
    camera = (
        '[[matters]]\nid = "kitchen"\nname = "Kitchen video"\ndomain = "video"\n'
        'lead_department = "market"\nlegal_basis = ["x"]\nobject_type = "kitchens"\n'
        'inspection_method = "remote"\n'
        '[[devices]]\nid = "cam-1"\ndomain = "video"\nkind = "camera"\nsubject_id = "r1"\n'
    )
    good = '{"zones": [{"name": "door", "polygon": [[0, 0], [1, 0], [1, 1]]}]}'
    ok = SMALL + camera + f"attributes = {{ video = '{good}' }}\n"
    assert [d.id for d in parse_registry(ok.encode(), "ok.toml").devices] == ["g1", "cam-1"]
    typo = SMALL + camera + "attributes = { video = '{\"zonez\": []}' }\n"
    with pytest.raises(RegistryError, match=r"cam-1.*video"):
        parse_registry(typo.encode(), "typo.toml")


CAMERA = (
    '[[matters]]\nid = "kitchen"\nname = "Kitchen video"\ndomain = "video"\n'
    'lead_department = "market"\nlegal_basis = ["x"]\nobject_type = "kitchens"\n'
    'inspection_method = "remote"\n'
    '[[devices]]\nid = "cam-1"\ndomain = "video"\nkind = "camera"\nsubject_id = "r1"\n'
    "[devices.video]\noffline_s = 20\n"
    '[[devices.video.zones]]\nname = "door"\npolygon = [[0.1, 0.2], [0.5, 0.2], [0.5, 1.0]]\n'
    "motion = true\n"
)


def test_a_camera_video_table_reaches_the_video_detectors(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "camera.toml"
    path.write_text(SMALL + CAMERA)
    with psycopg.connect(database_url) as conn:
        load_registry(conn, path)
        row = conn.execute("SELECT id, kind, attributes FROM devices WHERE id = 'cam-1'").fetchone()
    assert row is not None
    # what the operator wrote is kept, defaults are not frozen into the database
    assert row[2] == {
        "video": {
            "offline_s": 20.0,
            "zones": [
                {"name": "door", "polygon": [[0.1, 0.2], [0.5, 0.2], [0.5, 1.0]], "motion": True}
            ],
        }
    }
    config = CameraVideoConfig.model_validate_json(camera_configs([row])["cam-1"])
    assert [(z.name, z.motion, len(z.polygon)) for z in config.zones] == [("door", True, 3)]
    assert config.offline_s == 20.0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("motion = true", "motoin = true"), r"devices\.1\.video\.zones\.0\.motoin"),
        (("[0.5, 1.0]]", "[0.5, 1.5]]"), r"outside 0..1"),
        (('kind = "camera"', 'kind = "camera"\nattributes = { video = "{}" }'), "given twice"),
    ],
)
def test_a_camera_video_table_with_a_mistake_is_refused_at_load(
    change: tuple[str, str], problem: str
) -> None:
    broken = SMALL + CAMERA.replace(*change)
    with pytest.raises(RegistryError, match=problem):
        parse_registry(broken.encode(), "broken.toml")


def test_only_a_camera_has_a_video_table() -> None:
    broken = SMALL.replace(
        "expected_interval_s = 0.5", "expected_interval_s = 0.5\n[devices.video]\noffline_s = 5"
    )
    with pytest.raises(RegistryError, match="only a camera"):
        parse_registry(broken.encode(), "broken.toml")
