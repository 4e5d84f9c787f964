"""The casework ledger: hash-chained, append-only, signed from time to time.

Each entry's hash is a SHA-256 over its canonical form, which includes the previous entry's
hash; a checkpoint is an Ed25519 signature over the head (seq and hash). Whoever can write
to the database can still insert rows, but cannot change, drop or reorder one without
breaking every hash after it, nor forge a checkpoint without the signing key.

The hashing and signature checks here are pure, so that `offsite evidence verify` can use
them on an exported package with no database.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg import sql

from offsite.casework.canonical import canonical_json, sha256_hex

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first entry."""
_APPEND_LOCK = 0x0FF51ED6E  # advisory lock key: one appender at a time, across workers
KEY_FILE = "ledger-signing-key"
CHECKPOINT_TYPE = "offsite-ledger-checkpoint/1"


class LedgerError(Exception):
    """The ledger or its signing key cannot be used as configured."""


@dataclass(frozen=True, slots=True)
class Draft:
    """An action to append; seq, time and hashes are given when it is appended."""

    actor: str
    action: str
    object_kind: str
    object_id: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: str
    actor: str
    action: str
    object_kind: str
    object_id: str
    payload: str | None
    """The canonical JSON the payload hash is over; None where an export withholds it."""
    payload_sha256: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Entry:
        fields = cls.__dataclass_fields__
        missing = [name for name in fields if name not in document]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        values = {name: document[name] for name in fields}
        for name, value in values.items():
            wanted = int if name == "seq" else str
            if name == "payload" and value is None:
                continue  # withheld
            if not isinstance(value, wanted) or isinstance(value, bool):
                raise TypeError(f"{name} is not a {wanted.__name__}")
        return cls(**values)

    def computed_hash(self) -> str:
        return entry_hash(
            self.seq,
            self.at,
            self.actor,
            self.action,
            self.object_kind,
            self.object_id,
            self.payload_sha256,
            self.prev_hash,
        )


def entry_hash(
    seq: int,
    at: str,
    actor: str,
    action: str,
    object_kind: str,
    object_id: str,
    payload_sha256: str,
    prev_hash: str,
) -> str:
    """The hash over an entry's canonical form. It covers the payload through its hash, so
    an export may withhold other objects' payloads and the chain still verifies."""
    return sha256_hex(
        canonical_json(
            {
                "seq": seq,
                "at": at,
                "actor": actor,
                "action": action,
                "object_kind": object_kind,
                "object_id": object_id,
                "payload_sha256": payload_sha256,
                "prev_hash": prev_hash,
            }
        )
    )


def _instant(at: datetime) -> str:
    # One spelling of an instant, whatever the session time zone it was read back in.
    return at.astimezone(UTC).isoformat(timespec="microseconds")


ENTRY_FIELDS = (
    "seq",
    "at",
    "actor",
    "action",
    "object_kind",
    "object_id",
    "payload",
    "payload_sha256",
    "prev_hash",
    "hash",
)
ENTRY_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, ENTRY_FIELDS))


def entry_from_row(row: Sequence[Any]) -> Entry:
    return Entry(
        seq=int(row[0]),
        at=_instant(row[1]),
        actor=str(row[2]),
        action=str(row[3]),
        object_kind=str(row[4]),
        object_id=str(row[5]),
        payload=None if row[6] is None else str(row[6]),
        payload_sha256=str(row[7]),
        prev_hash=str(row[8]),
        hash=str(row[9]),
    )


async def append(conn: psycopg.AsyncConnection[Any], drafts: Sequence[Draft]) -> list[Entry]:
    """Append in the caller's transaction, which must be open: the entries commit or vanish
    with the records they describe. The lock is held until that transaction ends, so two
    workers never read the same head; append last in a transaction to hold it briefly."""
    if not drafts:
        return []
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise LedgerError("ledger.append needs an open transaction")
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
    # Read after the lock: in READ COMMITTED this statement sees the last committed head.
    cur = await conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
    head = await cur.fetchone()
    seq, prev = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
    entries: list[Entry] = []
    for draft in drafts:
        seq += 1
        at = _instant(datetime.now(UTC))
        payload = canonical_json(draft.payload).decode("utf-8")
        payload_sha256 = sha256_hex(payload.encode("utf-8"))
        digest = entry_hash(
            seq,
            at,
            draft.actor,
            draft.action,
            draft.object_kind,
            draft.object_id,
            payload_sha256,
            prev,
        )
        entries.append(
            Entry(
                seq,
                at,
                draft.actor,
                draft.action,
                draft.object_kind,
                draft.object_id,
                payload,
                payload_sha256,
                prev,
                digest,
            )
        )
        prev = digest
    async with conn.cursor() as cur:
        await cur.executemany(
            sql.SQL("INSERT INTO ledger ({}) VALUES ({})").format(
                ENTRY_COLUMNS, sql.SQL(", ").join([sql.Placeholder()] * len(ENTRY_FIELDS))
            ),
            [
                (
                    e.seq,
                    datetime.fromisoformat(e.at),
                    e.actor,
                    e.action,
                    e.object_kind,
                    e.object_id,
                    e.payload,
                    e.payload_sha256,
                    e.prev_hash,
                    e.hash,
                )
                for e in entries
            ],
        )
    return entries


def chain_problems(entries: Sequence[Entry]) -> list[str]:
    """Everything wrong with a run of consecutive entries, each problem naming its entry:
    a payload that is not what its hash says, an entry whose hash is not its own, and a
    link that does not follow (an entry removed, inserted or moved)."""
    problems: list[str] = []
    previous: Entry | None = None
    for entry in entries:
        name = f"ledger entry seq {entry.seq} ({entry.action} {entry.object_id})"
        if entry.payload is not None and sha256_hex(entry.payload.encode()) != entry.payload_sha256:
            problems.append(f"{name}: payload does not match its payload_sha256")
        if entry.computed_hash() != entry.hash:
            problems.append(f"{name}: hash does not match the entry's content")
        if previous is not None:
            if entry.seq != previous.seq + 1:
                problems.append(
                    f"{name}: follows seq {previous.seq}; an entry is missing or out of order"
                )
            if entry.prev_hash != previous.hash:
                problems.append(
                    f"{name}: prev_hash is not the hash of seq {previous.seq}; the chain is"
                    " broken (an entry removed, changed or reordered)"
                )
        elif entry.seq == 1 and entry.prev_hash != GENESIS_HASH:
            problems.append(f"{name}: the first entry does not start from the genesis hash")
        previous = entry
    return problems


# signing


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The Ed25519 key that signs checkpoints (and export manifests)."""

    private: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise LedgerError(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_base64(cls, text: str) -> SigningKey:
        return cls.from_seed(decode_base64(text, "the ledger signing key"))

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def public_base64(self) -> str:
        return base64.b64encode(self.public_raw).decode("ascii")

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_raw)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode("ascii")


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise LedgerError(f"{what} is not valid base64") from None


def key_id_of(public_raw: bytes) -> str:
    """A short fingerprint to name a key by: the first 16 hex digits of its SHA-256."""
    return "ed25519:" + sha256_hex(public_raw)[:16]


def verify_signature(public_base64: str, signature_base64: str, message: bytes) -> bool:
    try:
        public = Ed25519PublicKey.from_public_bytes(decode_base64(public_base64, "public key"))
        public.verify(decode_base64(signature_base64, "signature"), message)
    except (InvalidSignature, LedgerError, ValueError):
        return False
    return True


def load_signing_key(seed_base64: str | None, mode: str, data_dir: Path) -> SigningKey:
    """The configured key; in development without one, a key made once and kept in the
    data directory (0600), so checkpoints made before a restart still verify after it."""
    if seed_base64:
        return SigningKey.from_base64(seed_base64)
    if mode != "development":
        raise LedgerError("OFFSITE_LEDGER_SIGNING_KEY must be set in production mode")
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        seed = base64.b64encode(os.urandom(32)) + b"\n"
        # Written under a private name, then linked: two workers starting together both
        # end up with the one key that won, never a half-written file.
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, seed)
        finally:
            os.close(fd)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
    return SigningKey.from_base64(path.read_text(encoding="ascii"))


# checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    head_hash: str
    at: str
    key_id: str
    public_key: str
    signature: str

    def message(self) -> bytes:
        """The bytes the signature is over."""
        return checkpoint_message(self.seq, self.head_hash, self.at, self.key_id)

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": "Ed25519", **asdict(self)}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Checkpoint:
        fields = cls.__dataclass_fields__
        missing = [name for name in fields if name not in document]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(**{name: document[name] for name in fields})

    def problems(self, pinned_public_key: str | None = None) -> list[str]:
        found: list[str] = []
        try:
            public_raw = decode_base64(self.public_key, "the checkpoint's public key")
        except LedgerError as exc:
            return [str(exc)]
        if key_id_of(public_raw) != self.key_id:
            found.append(f"checkpoint: key_id {self.key_id} is not the public key's fingerprint")
        if pinned_public_key is not None and pinned_public_key.strip() != self.public_key:
            found.append(
                f"checkpoint: signed by {self.key_id}, not by the expected public key"
                f" ({key_id_of(decode_base64(pinned_public_key, 'the expected public key'))})"
            )
        if not verify_signature(self.public_key, self.signature, self.message()):
            found.append(f"checkpoint seq {self.seq}: the signature does not verify")
        return found


def checkpoint_message(seq: int, head_hash: str, at: str, key_id: str) -> bytes:
    return canonical_json(
        {"type": CHECKPOINT_TYPE, "seq": seq, "head_hash": head_hash, "at": at, "key_id": key_id}
    )


def _checkpoint_from_row(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(
        seq=int(row[0]),
        head_hash=str(row[1]),
        at=_instant(row[2]),
        key_id=str(row[3]),
        public_key=str(row[4]),
        signature=str(row[5]),
    )


_CHECKPOINT_COLUMNS = sql.SQL(", ").join(
    map(sql.Identifier, ("seq", "head_hash", "at", "key_id", "public_key", "signature"))
)
_CHECKPOINT_BY_KEY = sql.SQL(
    "SELECT {} FROM ledger_checkpoints WHERE seq = %s AND key_id = %s"
).format(_CHECKPOINT_COLUMNS)


async def checkpoint(conn: psycopg.AsyncConnection[Any], key: SigningKey) -> Checkpoint | None:
    """Sign the current head unless this key has signed it already; None on an empty
    ledger. Commits its own transaction (or a savepoint in the caller's)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
        head = await cur.fetchone()
        if head is None:
            return None
        seq, head_hash = int(head[0]), str(head[1])
        cur = await conn.execute(
            _CHECKPOINT_BY_KEY,
            (seq, key.key_id),
        )
        existing = await cur.fetchone()
        if existing is not None:
            return _checkpoint_from_row(existing)
        at = _instant(datetime.now(UTC))
        signature = key.sign(checkpoint_message(seq, head_hash, at, key.key_id))
        made = Checkpoint(seq, head_hash, at, key.key_id, key.public_base64, signature)
        # Two workers may sign the same head at once: the first one stays.
        await conn.execute(
            sql.SQL(
                "INSERT INTO ledger_checkpoints ({}) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING"
            ).format(_CHECKPOINT_COLUMNS),
            (seq, head_hash, datetime.fromisoformat(at), key.key_id, key.public_base64, signature),
        )
        cur = await conn.execute(
            _CHECKPOINT_BY_KEY,
            (seq, key.key_id),
        )
        stored = await cur.fetchone()
        return _checkpoint_from_row(stored) if stored else made


async def covering_checkpoint(
    conn: psycopg.AsyncConnection[Any], seq: int, key: SigningKey
) -> Checkpoint | None:
    """The earliest checkpoint by this key at or after `seq`."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT {} FROM ledger_checkpoints WHERE seq >= %s AND key_id = %s ORDER BY seq LIMIT 1"
        ).format(_CHECKPOINT_COLUMNS),
        (seq, key.key_id),
    )
    row = await cur.fetchone()
    return _checkpoint_from_row(row) if row else None
