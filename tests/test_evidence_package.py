"""Evidence export packages: a clue opened through the broker is exported over the API and
verifies offline (function and command); one changed byte, a removed or reordered ledger
entry, a bad signature or another key makes verification fail, naming what failed."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from offsite.casework.canonical import canonical_json, sha256_hex
from offsite.casework.directory import DeviceInfo
from offsite.casework.ledger import SigningKey, checkpoint_message
from offsite.casework.package import build_package, verify_package
from offsite.casework.service import Casework
from offsite.cli import main
from offsite.detectors.findings import Finding
from offsite.detectors.video.ring import StoredFrame
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import (
    LEDGER_SEED,
    RunningGateway,
    eventually,
    gas_reading,
    publish,
    start_gateway,
)

KEY = SigningKey.from_seed(LEDGER_SEED)


async def _red_clue(gw: RunningGateway, broker: BrokerProcess, device: str) -> dict[str, Any]:
    base = int((datetime.now(UTC) - timedelta(minutes=3)).timestamp() * 1000)
    readings = [gas_reading(base + i * 1000, i, 5.0 if i < 30 else 70.0) for i in range(60)]
    publish(broker.port, f"offsite/v1/gas/{device}/telemetry", readings)

    async def red() -> dict[str, Any] | None:
        clues: list[dict[str, Any]] = (
            await gw.http.get("/api/v1/clues", params={"severity": "red", "device_id": device})
        ).json()
        return clues[0] if clues and clues[0]["evidence_id"] else None

    return await eventually(red)


def _files(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _rezip(package: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    files = _files(package)
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def _entries(files: dict[str, bytes]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(files["ledger.json"])
    return entries


@pytest.fixture
async def exported(database_url: str, broker: BrokerProcess) -> dict[str, Any]:
    """A red gas clue (with its case) opened through the broker, then a second red clue on
    another subject, so that the ledger holds entries that are not ours; then the export."""
    async with start_gateway(database_url, broker.url, gas_confirm_s=10) as gw:
        clue = await _red_clue(gw, broker, "gas-0008")
        await _red_clue(gw, broker, "gas-0001")
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT count(*) FROM ledger_checkpoints").fetchone() == (0,)
        response = await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}/export")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        again = await gw.http.get(f"/api/v1/evidence/{clue['evidence_id']}/export")
        missing = await gw.http.get("/api/v1/evidence/ev_nope/export")
        assert missing.status_code == 404
    with psycopg.connect(database_url) as conn:
        # made on the first export, reused by the second
        assert conn.execute("SELECT count(*) FROM ledger_checkpoints").fetchone() == (1,)
    assert _files(again.content)["checkpoint.json"] == _files(response.content)["checkpoint.json"]
    return {"clue": clue, "package": response.content}


async def test_export_holds_the_items_the_ledger_and_the_checkpoint(
    exported: dict[str, Any], database_url: str
) -> None:
    clue, package = exported["clue"], exported["package"]
    files = _files(package)
    assert sorted(files) == [
        "checkpoint.json",
        "evidence.json",
        "ledger.json",
        "manifest.json",
        "manifest.sig",
        "telemetry.csv",
    ]
    manifest = json.loads(files["manifest.json"])
    assert manifest["evidence_id"] == clue["evidence_id"]
    assert manifest["clue_id"] == clue["id"]
    assert manifest["public_key"] == KEY.public_base64
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT content, sha256 FROM evidence WHERE id = %s", (clue["evidence_id"],)
        ).fetchone()
    assert row is not None
    assert files["evidence.json"] == row[0].encode()
    assert manifest["evidence_sha256"] == row[1]
    csv_lines = files["telemetry.csv"].decode().splitlines()
    assert csv_lines[0] == "ts,seq,lel_pct,co_ppm,valve,fault"
    assert len(csv_lines) == 1 + 41  # 120 s before the trigger up to the firing
    assert csv_lines[-1].split(",")[1:3] == ["40", "70.0"]

    entries = _entries(files)
    ours = [(e["action"], e["object_id"]) for e in entries if e["payload"] is not None]
    assert ours == [
        ("clue.opened", clue["id"]),
        ("evidence.fixed", clue["evidence_id"]),
        ("case.filed", clue["case_id"]),
        ("case.clue_joined", clue["case_id"]),
    ]
    # the other clue's entries are there for the chain, without their payloads
    others = [e for e in entries if e["payload"] is None]
    assert len(others) >= 4  # the second clue's, at least
    assert all(e["object_id"] not in (clue["id"], clue["evidence_id"]) for e in others)
    checkpoint = json.loads(files["checkpoint.json"])
    assert checkpoint["seq"] == entries[-1]["seq"]
    assert checkpoint["head_hash"] == entries[-1]["hash"]

    result = verify_package(package, KEY.public_base64)
    assert result.problems == []
    assert result.ok
    fixed = next(e["seq"] for e in entries if e["action"] == "evidence.fixed" and e["payload"])
    assert f"evidence {clue['evidence_id']} fixed in ledger entry seq {fixed}" in result.checked


async def test_one_changed_byte_in_an_item_is_named(exported: dict[str, Any]) -> None:
    package = exported["package"]

    def flip_csv(files: dict[str, bytes]) -> None:
        data = bytearray(files["telemetry.csv"])
        data[data.index(b"70.0")] = ord("7") + 1  # 70.0 becomes 80.0
        files["telemetry.csv"] = bytes(data)

    problems = verify_package(_rezip(package, flip_csv)).problems
    assert any(p.startswith("telemetry.csv: SHA-256") for p in problems), problems
    assert "telemetry.csv: does not match the readings in evidence.json" in problems

    def flip_evidence(files: dict[str, bytes]) -> None:
        files["evidence.json"] = files["evidence.json"].replace(b'"gas-0008"', b'"gas-0009"', 1)

    problems = verify_package(_rezip(package, flip_evidence)).problems
    assert any(p.startswith("evidence.json: SHA-256") and "manifest" in p for p in problems)
    assert any(
        p.startswith("evidence.json: SHA-256 differs from the one fixed in ledger entry seq")
        for p in problems
    ), problems

    def flip_manifest(files: dict[str, bytes]) -> None:
        files["manifest.json"] = files["manifest.json"].replace(
            b'"exported_at":"2', b'"exported_at":"1'
        )

    assert verify_package(_rezip(package, flip_manifest)).problems == [
        "manifest.json: its signature (manifest.sig) does not verify"
    ]

    def odd_manifest(files: dict[str, bytes]) -> None:
        manifest = json.loads(files["manifest.json"])
        manifest["files"] = ["evidence.json"]
        files["manifest.json"] = canonical_json(manifest)

    problems = verify_package(_rezip(package, odd_manifest)).problems
    assert problems[0] == "manifest.json: its signature (manifest.sig) does not verify"
    assert problems[-1].startswith("malformed package: AttributeError")

    def extra(files: dict[str, bytes]) -> None:
        files["note.txt"] = b"trust me"

    assert verify_package(_rezip(package, extra)).problems == [
        "note.txt: in the package but not in the manifest"
    ]


async def test_a_removed_or_reordered_ledger_entry_is_named(exported: dict[str, Any]) -> None:
    package = exported["package"]
    entries = _entries(_files(package))
    filed = next(i for i, e in enumerate(entries) if e["action"] == "case.filed" and e["payload"])
    seq = entries[filed]["seq"]
    after = f"ledger entry seq {seq + 1} ({entries[filed + 1]['action']}"

    def remove(files: dict[str, bytes]) -> None:
        files["ledger.json"] = canonical_json(entries[:filed] + entries[filed + 1 :])

    problems = verify_package(_rezip(package, remove)).problems
    assert any(p.startswith("ledger.json: SHA-256") for p in problems)
    assert any(p.startswith(after) and f"follows seq {seq - 1}" in p for p in problems), problems
    assert any(
        p.startswith(after) and f"prev_hash is not the hash of seq {seq - 1}" in p for p in problems
    ), problems

    def reorder(files: dict[str, bytes]) -> None:
        swapped = list(entries)
        swapped[filed], swapped[filed + 1] = swapped[filed + 1], swapped[filed]
        files["ledger.json"] = canonical_json(swapped)

    problems = verify_package(_rezip(package, reorder)).problems
    assert any(p.startswith(after) and f"follows seq {seq - 1}" in p for p in problems), problems
    assert any(
        p.startswith(f"ledger entry seq {seq} (case.filed") and f"follows seq {seq + 1}" in p
        for p in problems
    ), problems

    def drop_tail(files: dict[str, bytes]) -> None:
        files["ledger.json"] = canonical_json(entries[:-1])

    last = entries[-1]["seq"]
    problems = verify_package(_rezip(package, drop_tail)).problems
    assert any(
        p.startswith(f"checkpoint.json: signs seq {last}") and f"entries end at seq {last - 1}" in p
        for p in problems
    ), problems


async def test_a_bad_signature_or_another_key_is_named(exported: dict[str, Any]) -> None:
    package = exported["package"]

    def bad_signature(files: dict[str, bytes]) -> None:
        checkpoint = json.loads(files["checkpoint.json"])
        signature = checkpoint["signature"]
        checkpoint["signature"] = ("B" if signature[0] == "A" else "A") + signature[1:]
        files["checkpoint.json"] = canonical_json(checkpoint)

    problems = verify_package(_rezip(package, bad_signature)).problems
    last = _entries(_files(package))[-1]["seq"]
    assert f"checkpoint seq {last}: the signature does not verify" in problems

    # Someone with the database re-signs everything with a key of their own: consistent,
    # so only the pinned key tells.
    mallory = SigningKey.from_seed(bytes(range(32)))

    def resign(files: dict[str, bytes]) -> None:
        checkpoint = json.loads(files["checkpoint.json"])
        forged = {
            **checkpoint,
            "key_id": mallory.key_id,
            "public_key": mallory.public_base64,
        }
        forged["signature"] = mallory.sign(
            checkpoint_message(forged["seq"], forged["head_hash"], forged["at"], mallory.key_id)
        )
        files["checkpoint.json"] = canonical_json(forged)
        manifest = json.loads(files["manifest.json"])
        manifest["public_key"] = mallory.public_base64
        for item in manifest["files"]:
            if item["name"] == "checkpoint.json":
                item["sha256"] = sha256_hex(files["checkpoint.json"])
        files["manifest.json"] = canonical_json(manifest)
        files["manifest.sig"] = mallory.sign(files["manifest.json"]).encode()

    forged = _rezip(package, resign)
    assert verify_package(forged).problems == []
    assert verify_package(forged, KEY.public_base64).problems == [
        f"checkpoint: signed by {mallory.key_id}, not by the expected public key ({KEY.key_id})"
    ]
    assert verify_package(package, mallory.public_base64).problems == [
        f"checkpoint: signed by {KEY.key_id}, not by the expected public key ({mallory.key_id})"
    ]


async def test_the_command_verifies_offline_and_says_what_failed(
    exported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "evidence.zip"
    good.write_bytes(exported["package"])
    key_file = tmp_path / "offsite.pub"
    key_file.write_text(KEY.public_base64 + "\n")
    assert main(["evidence", "verify", str(good), "--public-key", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert f"{good}: verified (evidence {exported['clue']['evidence_id']})" in out

    def flip(files: dict[str, bytes]) -> None:
        data = bytearray(files["evidence.json"])
        data[-2] ^= 0x01
        files["evidence.json"] = bytes(data)

    bad = tmp_path / "tampered.zip"
    bad.write_bytes(_rezip(exported["package"], flip))
    assert main(["evidence", "verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: FAILED verification" in out
    assert "  evidence.json: SHA-256" in out

    other = SigningKey.from_seed(bytes(32)).public_base64
    assert main(["evidence", "verify", str(good), "--public-key", other]) == 1
    assert "not by the expected public key" in capsys.readouterr().out

    assert main(["evidence", "verify", str(good), "--public-key", "c2hvcnQ="]) == 2
    assert "not a 32-byte Ed25519 public key" in capsys.readouterr().err
    assert main(["evidence", "verify", str(tmp_path / "nope.zip")]) == 2
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"PK not really")
    assert main(["evidence", "verify", str(not_zip)]) == 1
    assert "not a readable zip file" in capsys.readouterr().out


async def test_video_evidence_exports_its_frames(database_url: str) -> None:
    """Frames fixed by the casework are in the package as sent, and in the ledger."""
    jpegs = [b"\xff\xd8 frame %d \xff\xd9" % i for i in range(3)]
    t0 = datetime.now(UTC) - timedelta(seconds=10)
    stored = [StoredFrame(t0 + timedelta(seconds=i), i, jpeg) for i, jpeg in enumerate(jpegs)]
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2) as pool:
        casework = Casework(pool, timedelta(seconds=120), frames=lambda *_: stored)
        device = DeviceInfo(
            "cam-0001",
            "video",
            "camera",
            "rest-qinba-hotpot",
            "Qinba Hotpot",
            "B",
            "gas-safety",
            "housing",
            (),
            ("law",),
            1.0,
            {},
        )
        finding = Finding(
            "video.tamper.covered",
            "cam-0001",
            "orange",
            "opened",
            t0 + timedelta(seconds=1),
            t0 + timedelta(seconds=2),
            "camera covered",
        )
        clue_id = await casework.handle(finding, device)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT evidence_id FROM clues WHERE id = %s", (clue_id,))
            row = await cur.fetchone()
            assert row is not None
            package = await build_package(conn, row[0], KEY)
    assert package is not None
    files = _files(package)
    assert [files[f"frames/{i:03d}.jpg"] for i in range(3)] == jpegs
    assert "telemetry.csv" not in files
    assert verify_package(package).problems == []

    def flip(files: dict[str, bytes]) -> None:
        files["frames/001.jpg"] = files["frames/001.jpg"].replace(b"frame", b"framf")

    problems = verify_package(_rezip(package, flip)).problems
    assert any(p.startswith("frames/001.jpg: SHA-256") and "manifest" in p for p in problems)
    assert "frames/001.jpg: SHA-256 differs from the one fixed in ledger entry seq 2" in problems


async def test_evidence_fixed_before_the_ledger_is_refused_with_a_reason(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO clues (id, key, rule, severity, domain, department, title,"
            " triggered_at, opened_at, last_at) VALUES ('clu_old', 'old', 'gas.lel.level2',"
            " 'red', 'gas', 'housing', 'old', now(), now(), now())"
        )
        conn.execute(
            "INSERT INTO evidence (id, clue_id, kind, window_from, window_to, item_count,"
            " content, sha256) VALUES ('ev_old', 'clu_old', 'telemetry_window', now(), now(),"
            " 0, '{}', %s)",
            (sha256_hex(b"{}"),),
        )
    async with start_gateway(database_url, None) as gw:
        response = await gw.http.get("/api/v1/evidence/ev_old/export")
        assert response.status_code == 409
        assert "no ledger entry" in response.json()["detail"]
