"""Evidence export packages: a zip that stands on its own, and its offline verification.

A package holds the evidence content (the exact hashed bytes), the telemetry window as CSV,
the frames as the camera sent them, the run of ledger entries from the clue's first entry
up to a signed checkpoint, that checkpoint, and a manifest listing every file's SHA-256,
signed with the checkpoint's key. Every byte is then anchored: an item to the manifest and
to the ledger entry that fixed it, the entries to each other and to the signed head, the
manifest to its signature. `verify_package` needs no database, only this module.

Entries of other clues between ours and the checkpoint are included for the chain, with
their payloads withheld: their payload hashes keep the links checkable without telling
one party about another's case.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from offsite.casework.canonical import canonical_json, sha256_hex
from offsite.casework.ledger import (
    ENTRY_COLUMNS,
    Checkpoint,
    Entry,
    LedgerError,
    SigningKey,
    chain_problems,
    checkpoint,
    covering_checkpoint,
    entry_from_row,
    verify_signature,
)

FORMAT = "offsite-evidence-package/1"
MANIFEST = "manifest.json"
MANIFEST_SIGNATURE = "manifest.sig"
EVIDENCE_FILE = "evidence.json"
TELEMETRY_FILE = "telemetry.csv"
LEDGER_FILE = "ledger.json"
CHECKPOINT_FILE = "checkpoint.json"


class PackageError(Exception):
    """Evidence that cannot be exported (for example, fixed before the ledger existed)."""


def telemetry_csv(content: dict[str, Any]) -> bytes | None:
    """The readings of evidence content as CSV (header, then one row per reading), or None
    for evidence without a telemetry window. Derived, so a verifier can derive it again."""
    columns = content.get("columns") or []
    if not columns:
        return None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in content.get("readings", []):
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode("utf-8")


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def frame_name(idx: int) -> str:
    return f"frames/{idx:03d}.jpg"


async def build_package(
    conn: psycopg.AsyncConnection[Any], evidence_id: str, key: SigningKey
) -> bytes | None:
    """The package for one evidence record, None if there is no such record. Signs a new
    checkpoint when none by this key covers the evidence's entries yet."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT clue_id, content, sha256 FROM evidence WHERE id = %s", (evidence_id,)
        )
        row = await cur.fetchone()
        if row is None:
            return None
        clue_id, content_text, content_sha256 = str(row[0]), str(row[1]), str(row[2])
        cur = await conn.execute(
            "SELECT idx, sha256, jpeg FROM evidence_frames WHERE evidence_id = %s ORDER BY idx",
            (evidence_id,),
        )
        frames = [(int(r[0]), str(r[1]), bytes(r[2])) for r in await cur.fetchall()]
        # Ours: the clue's and the evidence's entries, and its case's entries that name the
        # clue (not those of other clues joining the same case).
        cur = await conn.execute(
            "SELECT l.seq, l.object_kind, l.payload FROM ledger l"
            " WHERE (l.object_kind, l.object_id) IN (('clue', %s), ('evidence', %s))"
            " OR (l.object_kind = 'case'"
            "     AND l.object_id = (SELECT case_id FROM clues WHERE id = %s))",
            (clue_id, evidence_id, clue_id),
        )
        rows = await cur.fetchall()
        ours = {
            int(seq)
            for seq, kind, payload in rows
            if kind != "case" or json.loads(payload).get("clue_id") == clue_id
        }
        if not any(kind == "evidence" for _, kind, _ in rows):
            raise PackageError(f"evidence {evidence_id} has no ledger entry (fixed before it)")
        covering = await covering_checkpoint(conn, max(ours), key)
        if covering is None:
            covering = await checkpoint(conn, key)
            assert covering is not None  # the ledger holds our entries
        cur = await conn.execute(
            sql.SQL("SELECT {} FROM ledger WHERE seq BETWEEN %s AND %s ORDER BY seq").format(
                ENTRY_COLUMNS
            ),
            (min(ours), covering.seq),
        )
        entries = [entry_from_row(r) for r in await cur.fetchall()]
    entries = [
        e
        if e.seq in ours
        else Entry(
            e.seq,
            e.at,
            e.actor,
            e.action,
            e.object_kind,
            e.object_id,
            None,
            e.payload_sha256,
            e.prev_hash,
            e.hash,
        )
        for e in entries
    ]
    content_bytes = content_text.encode("utf-8")
    files: dict[str, bytes] = {EVIDENCE_FILE: content_bytes}
    roles = {EVIDENCE_FILE: "evidence content (canonical JSON, the bytes its SHA-256 is over)"}
    table = telemetry_csv(json.loads(content_text))
    if table is not None:
        files[TELEMETRY_FILE] = table
        roles[TELEMETRY_FILE] = "telemetry window (CSV of the readings in evidence.json)"
    for idx, _, jpeg in frames:
        files[frame_name(idx)] = jpeg
        roles[frame_name(idx)] = f"camera frame {idx}, as the camera sent it"
    files[LEDGER_FILE] = canonical_json([e.to_json() for e in entries])
    roles[LEDGER_FILE] = "ledger entries from the clue's first up to the checkpoint"
    files[CHECKPOINT_FILE] = canonical_json(covering.to_json())
    roles[CHECKPOINT_FILE] = "signed ledger head covering the entries"
    manifest = canonical_json(
        {
            "format": FORMAT,
            "evidence_id": evidence_id,
            "clue_id": clue_id,
            "evidence_sha256": content_sha256,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "ledger": {"first_seq": entries[0].seq, "last_seq": entries[-1].seq},
            "checkpoint": {"seq": covering.seq, "key_id": covering.key_id},
            "public_key": key.public_base64,
            "files": [
                {"name": name, "sha256": sha256_hex(data), "bytes": len(data), "role": roles[name]}
                for name, data in files.items()
            ],
        }
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, manifest)
        zf.writestr(MANIFEST_SIGNATURE, key.sign(manifest) + "\n")
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


@dataclass
class Verification:
    """What `verify_package` found: an empty `problems` means the package verifies."""

    evidence_id: str | None = None
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_package(data: bytes, public_key: str | None = None) -> Verification:
    """Check a package offline; every problem names the file or ledger entry at fault.
    `public_key` (base64, raw 32 bytes) pins the key the package must be signed by."""
    result = Verification()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        contents = {info.filename: zf.read(info) for info in zf.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        result.problems.append(f"not a readable zip file: {exc}")
        return result
    except zipfile.LargeZipFile as exc:  # pragma: no cover - zip64 is read by default
        result.problems.append(f"zip file too large: {exc}")
        return result
    try:
        _verify(contents, result, public_key)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A package built by someone else may have any shape; say so rather than crash.
        result.problems.append(f"malformed package: {type(exc).__name__}: {exc}")
    return result


def _verify(contents: dict[str, bytes], result: Verification, public_key: str | None) -> None:
    manifest = _manifest(contents, result)
    if manifest is None:
        return
    result.evidence_id = str(manifest.get("evidence_id"))
    checkpoint_doc = _checkpoint(contents, result, public_key)
    signer = checkpoint_doc.public_key if checkpoint_doc else manifest.get("public_key")
    if not isinstance(signer, str) or not verify_signature(
        signer, contents.get(MANIFEST_SIGNATURE, b"").decode("ascii", "replace"), contents[MANIFEST]
    ):
        result.problems.append(f"{MANIFEST}: its signature ({MANIFEST_SIGNATURE}) does not verify")
    else:
        result.checked.append("manifest signature")
    _files(contents, manifest, result)
    entries = _entries(contents, result)
    if entries:
        for problem in chain_problems(entries):
            result.problems.append(problem)
        result.checked.append(f"chain of {len(entries)} ledger entries")
        if checkpoint_doc is not None:
            _covered(entries, checkpoint_doc, result)
        _evidence(contents, manifest, entries, result)


def _manifest(contents: dict[str, bytes], result: Verification) -> dict[str, Any] | None:
    raw = contents.get(MANIFEST)
    if raw is None:
        result.problems.append(f"{MANIFEST} is missing")
        return None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        result.problems.append(f"{MANIFEST} is not JSON: {exc}")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        result.problems.append(f"{MANIFEST}: not an {FORMAT} manifest")
        return None
    return manifest


def _checkpoint(
    contents: dict[str, bytes], result: Verification, public_key: str | None
) -> Checkpoint | None:
    raw = contents.get(CHECKPOINT_FILE)
    if raw is None:
        result.problems.append(f"{CHECKPOINT_FILE} is missing")
        return None
    try:
        found = Checkpoint.from_json(json.loads(raw))
        problems = found.problems(public_key)
    except (ValueError, TypeError, LedgerError) as exc:
        result.problems.append(f"{CHECKPOINT_FILE} is not a checkpoint: {exc}")
        return None
    result.problems.extend(problems)
    if not problems:
        result.checked.append(f"checkpoint signature (seq {found.seq}, {found.key_id})")
    return found


def _files(contents: dict[str, bytes], manifest: dict[str, Any], result: Verification) -> None:
    listed: set[str] = set()
    for item in manifest.get("files", []):
        name = str(item.get("name"))
        listed.add(name)
        data = contents.get(name)
        if data is None:
            result.problems.append(f"{name}: listed in the manifest but missing")
        elif sha256_hex(data) != item.get("sha256"):
            result.problems.append(f"{name}: SHA-256 {sha256_hex(data)} differs from the manifest")
    for name in sorted(set(contents) - listed - {MANIFEST, MANIFEST_SIGNATURE}):
        result.problems.append(f"{name}: in the package but not in the manifest")
    result.checked.append(f"{len(listed)} file hashes")


def _entries(contents: dict[str, bytes], result: Verification) -> list[Entry]:
    raw = contents.get(LEDGER_FILE)
    if raw is None:
        result.problems.append(f"{LEDGER_FILE} is missing")
        return []
    try:
        documents = json.loads(raw)
        entries = [Entry.from_json(d) for d in documents] if isinstance(documents, list) else []
    except (ValueError, TypeError) as exc:
        result.problems.append(f"{LEDGER_FILE} is not a list of ledger entries: {exc}")
        return []
    if not entries:
        result.problems.append(f"{LEDGER_FILE}: no ledger entries")
    return entries


def _covered(entries: Sequence[Entry], cp: Checkpoint, result: Verification) -> None:
    last = entries[-1]
    if last.seq != cp.seq or last.hash != cp.head_hash:
        result.problems.append(
            f"{CHECKPOINT_FILE}: signs seq {cp.seq} head {cp.head_hash[:12]}…, but the ledger"
            f" entries end at seq {last.seq} hash {last.hash[:12]}…"
        )
    else:
        result.checked.append(f"entries covered by the checkpoint at seq {cp.seq}")


def _evidence(
    contents: dict[str, bytes],
    manifest: dict[str, Any],
    entries: Sequence[Entry],
    result: Verification,
) -> None:
    evidence_id = manifest.get("evidence_id")
    fixed = [e for e in entries if e.action == "evidence.fixed" and e.object_id == evidence_id]
    if not fixed or fixed[0].payload is None:
        result.problems.append(
            f"{LEDGER_FILE}: no evidence.fixed entry for {evidence_id}; the evidence is not covered"
        )
        return
    try:
        payload = json.loads(fixed[0].payload)
    except ValueError:
        result.problems.append(f"ledger entry seq {fixed[0].seq}: payload is not JSON")
        return
    content = contents.get(EVIDENCE_FILE)
    if content is None:
        result.problems.append(f"{EVIDENCE_FILE} is missing")
        return
    if sha256_hex(content) != payload.get("content_sha256"):
        result.problems.append(
            f"{EVIDENCE_FILE}: SHA-256 differs from the one fixed in ledger entry seq"
            f" {fixed[0].seq}"
        )
    if manifest.get("evidence_sha256") != payload.get("content_sha256"):
        result.problems.append(f"{MANIFEST}: evidence_sha256 differs from the ledger's")
    for frame in payload.get("frames", []):
        name = frame_name(int(frame["idx"]))
        data = contents.get(name)
        if data is None:
            result.problems.append(f"{name}: fixed in ledger entry seq {fixed[0].seq} but missing")
        elif sha256_hex(data) != frame["sha256"]:
            result.problems.append(
                f"{name}: SHA-256 differs from the one fixed in ledger entry seq {fixed[0].seq}"
            )
    try:
        document = json.loads(content)
    except ValueError as exc:
        result.problems.append(f"{EVIDENCE_FILE} is not JSON: {exc}")
        return
    table = telemetry_csv(document)
    if table is not None and contents.get(TELEMETRY_FILE) != table:
        result.problems.append(f"{TELEMETRY_FILE}: does not match the readings in {EVIDENCE_FILE}")
    result.checked.append(f"evidence {evidence_id} fixed in ledger entry seq {fixed[0].seq}")
