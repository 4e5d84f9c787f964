"""The casework ledger in a real PostgreSQL: append-only, one chain under concurrent
appenders, signed checkpoints, and the signing key's life in development and production."""

from __future__ import annotations

import asyncio
import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from offsite.casework import ledger
from offsite.casework.canonical import sha256_hex
from offsite.casework.ledger import Draft, Entry, SigningKey, chain_problems
from offsite.cli import main
from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import LEDGER_SEED, eventually, gas_reading, publish, start_gateway

KEY = SigningKey.from_seed(LEDGER_SEED)


def _draft(i: int, who: str = "t") -> Draft:
    return Draft(f"tester:{who}", "clue.opened", "clue", f"clu_{who}_{i}", {"i": i, "who": who})


async def _append(url: str, drafts: list[Draft]) -> list[Entry]:
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        return await ledger.append(conn, drafts)


async def _all(url: str) -> list[Entry]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            psycopg.sql.SQL("SELECT {} FROM ledger ORDER BY seq").format(ledger.ENTRY_COLUMNS)
        )
        return [ledger.entry_from_row(r) for r in await cur.fetchall()]


async def test_entries_chain_from_genesis_and_read_back_identical(database_url: str) -> None:
    made = await _append(database_url, [_draft(1), _draft(2)])
    made += await _append(database_url, [_draft(3)])
    stored = await _all(database_url)
    assert stored == made  # `at` and the payload bytes survive the round trip exactly
    assert [e.seq for e in stored] == [1, 2, 3]
    assert stored[0].prev_hash == ledger.GENESIS_HASH
    assert chain_problems(stored) == []
    assert stored[1].payload == '{"i":2,"who":"t"}'


async def test_append_needs_the_callers_transaction(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(ledger.LedgerError, match="open transaction"):
            await ledger.append(conn, [_draft(1)])


async def test_the_database_refuses_update_delete_and_truncate(database_url: str) -> None:
    await _append(database_url, [_draft(1), _draft(2)])
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await ledger.checkpoint(conn, KEY)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in (
            "UPDATE ledger SET actor = 'someone else' WHERE seq = 1",
            "DELETE FROM ledger WHERE seq = 2",
            "TRUNCATE ledger CASCADE",
            "UPDATE ledger_checkpoints SET signature = 'x'",
            "DELETE FROM ledger_checkpoints",
            "TRUNCATE ledger_checkpoints",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement.encode())
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (2,)
        assert conn.execute("SELECT actor FROM ledger WHERE seq = 1").fetchone() == ("tester:t",)
        # Even a writer that skips the application's lock cannot fork the chain.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO ledger SELECT seq + 10, at, actor, action, object_kind, object_id,"
                " payload, payload_sha256, prev_hash, repeat('e', 64) FROM ledger WHERE seq = 2"
            )


async def test_concurrent_appenders_keep_one_chain(database_url: str) -> None:
    """Four workers, each appending 25 transactions of 1 to 3 entries, interleaved."""

    async def worker(name: str) -> int:
        count = 0
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for i in range(25):
                async with conn.transaction():
                    drafts = [_draft(i * 10 + j, name) for j in range(1 + i % 3)]
                    await ledger.append(conn, drafts)
                    await asyncio.sleep(0.001)  # hold the lock while the others queue
                count += len(drafts)
        return count

    counts = await asyncio.gather(*(worker(f"w{n}") for n in range(4)))
    entries = await _all(database_url)
    assert len(entries) == sum(counts) == 4 * (9 * 1 + 8 * 2 + 8 * 3)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert chain_problems(entries) == []
    assert len({e.actor for e in entries}) == 4


async def test_checkpoints_sign_the_head_once_per_key(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        assert await ledger.checkpoint(conn, KEY) is None  # nothing to sign yet
    await _append(database_url, [_draft(1), _draft(2)])
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        first = await ledger.checkpoint(conn, KEY)
        assert first is not None
        assert (first.seq, first.key_id, first.public_key) == (2, KEY.key_id, KEY.public_base64)
        assert first.problems() == []
        assert first.problems(KEY.public_base64) == []
        assert await ledger.checkpoint(conn, KEY) == first  # the head has not moved
    await _append(database_url, [_draft(3)])
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        second = await ledger.checkpoint(conn, KEY)
        assert second is not None
        assert second.seq == 3
        assert await ledger.covering_checkpoint(conn, 1, KEY) == first
        assert await ledger.covering_checkpoint(conn, 3, KEY) == second
    entries = await _all(database_url)
    assert second.head_hash == entries[-1].hash

    other = SigningKey.from_seed(bytes(32))
    assert second.problems(other.public_base64) == [
        f"checkpoint: signed by {KEY.key_id}, not by the expected public key ({other.key_id})"
    ]
    forged = ledger.Checkpoint(
        second.seq, "f" * 64, second.at, second.key_id, second.public_key, second.signature
    )
    assert forged.problems() == ["checkpoint seq 3: the signature does not verify"]


def test_chain_problems_name_the_entry() -> None:
    entries: list[Entry] = []
    prev = ledger.GENESIS_HASH
    for seq in range(1, 5):
        payload = f'{{"n":{seq}}}'
        sha = sha256_hex(payload.encode())
        digest = ledger.entry_hash(
            seq, "2026-01-01T00:00:00.000000+00:00", "a", "x", "clue", "c", sha, prev
        )
        entries.append(
            Entry(
                seq,
                "2026-01-01T00:00:00.000000+00:00",
                "a",
                "x",
                "clue",
                "c",
                payload,
                sha,
                prev,
                digest,
            )
        )
        prev = digest
    assert chain_problems(entries) == []
    removed = [entries[0], entries[2], entries[3]]
    assert chain_problems(removed) == [
        "ledger entry seq 3 (x c): follows seq 1; an entry is missing or out of order",
        "ledger entry seq 3 (x c): prev_hash is not the hash of seq 1; the chain is broken"
        " (an entry removed, changed or reordered)",
    ]
    swapped = [entries[0], entries[2], entries[1], entries[3]]
    assert len(chain_problems(swapped)) == 6
    changed = list(entries)
    changed[1] = Entry(**{**entries[1].to_json(), "payload": '{"n":9}'})
    assert chain_problems(changed) == [
        "ledger entry seq 2 (x c): payload does not match its payload_sha256"
    ]
    changed[1] = Entry(**{**entries[1].to_json(), "actor": "b"})
    assert chain_problems(changed) == [
        "ledger entry seq 2 (x c): hash does not match the entry's content"
    ]


def test_development_key_is_made_once_private_and_stable(tmp_path: Path) -> None:
    first = ledger.load_signing_key(None, "development", tmp_path / "data")
    path = tmp_path / "data" / ledger.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ledger.load_signing_key(None, "development", tmp_path / "data")
    assert again.public_raw == first.public_raw
    assert [p.name for p in (tmp_path / "data").iterdir()] == [ledger.KEY_FILE]
    configured = ledger.load_signing_key(
        base64.b64encode(LEDGER_SEED).decode(), "development", tmp_path / "data"
    )
    assert configured.public_raw == KEY.public_raw
    with pytest.raises(ledger.LedgerError, match="must be set in production"):
        ledger.load_signing_key(None, "production", tmp_path / "prod")
    assert not (tmp_path / "prod").exists()


async def test_the_runtime_signs_the_head_as_it_moves(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(
        database_url, broker.url, gas_confirm_s=10, ledger_checkpoint_s=0.2
    ) as gw:
        assert gw.runtime.ledger_key.key_id == KEY.key_id
        base = int((datetime.now(UTC) - timedelta(minutes=3)).timestamp() * 1000)
        readings = [gas_reading(base + i * 1000, i, 5.0 if i < 30 else 70.0) for i in range(60)]
        publish(broker.port, "offsite/v1/gas/gas-0008/telemetry", readings)

        async def signed_head() -> tuple[int, str] | None:
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                cur = await conn.execute(
                    "SELECT c.seq, c.head_hash FROM ledger_checkpoints c"
                    " JOIN ledger l ON l.seq = c.seq AND l.hash = c.head_hash"
                    " WHERE c.seq = (SELECT max(seq) FROM ledger) AND c.key_id = %s",
                    (KEY.key_id,),
                )
                row = await cur.fetchone()
            return (int(row[0]), str(row[1])) if row else None

        seq, _ = await eventually(signed_head)
        assert seq >= 4  # clue opened, evidence fixed, case filed, clue joined
    entries = await _all(database_url)
    assert chain_problems(entries) == []
    assert {"clue.opened", "evidence.fixed", "case.filed", "case.clue_joined"} <= {
        e.action for e in entries
    }


def test_the_public_key_command_prints_the_key_to_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OFFSITE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OFFSITE_LEDGER_SIGNING_KEY", raising=False)
    assert main(["ledger", "public-key"]) == 0
    made = capsys.readouterr().out.split()
    assert main(["ledger", "public-key"]) == 0
    assert capsys.readouterr().out.split() == made  # kept in the data directory
    assert made[1] == ledger.key_id_of(base64.b64decode(made[0]))
    monkeypatch.setenv("OFFSITE_LEDGER_SIGNING_KEY", base64.b64encode(LEDGER_SEED).decode())
    assert main(["ledger", "public-key"]) == 0
    assert capsys.readouterr().out.split() == [KEY.public_base64, KEY.key_id]


async def test_a_stopping_gateway_signs_what_it_appended(
    database_url: str, broker: BrokerProcess
) -> None:
    # checkpoints an hour apart: only the one at stop can cover the new entries
    async with start_gateway(
        database_url, broker.url, gas_confirm_s=10, ledger_checkpoint_s=3600
    ) as gw:
        base = int((datetime.now(UTC) - timedelta(minutes=3)).timestamp() * 1000)
        readings = [gas_reading(base + i * 1000, i, 70.0) for i in range(30)]
        publish(broker.port, "offsite/v1/gas/gas-0009/telemetry", readings)

        async def clue() -> list[dict[str, object]] | None:
            found: list[dict[str, object]] = (await gw.http.get("/api/v1/clues")).json()
            return found or None

        await eventually(clue)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT (SELECT max(seq) FROM ledger), (SELECT max(seq) FROM ledger_checkpoints)"
        )
        row = await cur.fetchone()
    assert row is not None
    assert row[0] is not None
    assert row[1] == row[0]
