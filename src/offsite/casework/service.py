"""From finding to clue, evidence, case and alert.

A new clue is announced first, in a short transaction of its own (the clue row, its source,
its first step and the alert), so a duty officer sees it without waiting for the evidence.
The evidence, the case of a red clue, the merge with a reported clue and the ledger entries
follow in a second transaction. A clue whose second transaction never ran (a crash in
between) has no evidence yet; `Casework.complete_pending` finishes it at start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from offsite.casework import ledger
from offsite.casework.canonical import canonical_json, sha256_hex
from offsite.casework.directory import DeviceInfo
from offsite.casework.records import CLUE_COLUMNS, CluePublic
from offsite.detectors.findings import Finding
from offsite.detectors.video.ring import StoredFrame
from offsite.gateway.equipment_payloads import EQUIPMENT_FIELDS

_LOG = logging.getLogger(__name__)
ALERT_CHANNEL = "offsite_alerts"
NOTIFY_PAYLOAD_MAX = 7900
"""PostgreSQL refuses a notification payload of 8000 bytes or more."""
SYSTEM_ACTOR = "offsite:detector"


FrameSource = Callable[[str, datetime, datetime], list[StoredFrame]]
"""A camera's kept frames between two instants (the runtime's frame rings)."""


def pick_frames(frames: list[StoredFrame], limit: int) -> list[StoredFrame]:
    """At most `limit` frames spread evenly over the window, the first and last included:
    enough to see what happened without storing every frame of a 10 fps camera."""
    if len(frames) <= limit:
        return frames
    if limit == 1:
        return [frames[-1]]
    step = (len(frames) - 1) / (limit - 1)
    return [frames[round(i * step)] for i in range(limit)]


def clue_id_for(key: str) -> str:
    """Deterministic: the same episode is the same clue, across restarts and workers."""
    return "clu_" + sha256_hex(key.encode())[:20]


GAS_COLUMNS = ("ts", "seq", "lel_pct", "co_ppm", "valve", "fault")
EQUIPMENT_COLUMNS = ("ts", "seq", *EQUIPMENT_FIELDS)
WINDOW_COLUMNS: dict[str, tuple[str, ...]] = {"gas": GAS_COLUMNS, "equipment": EQUIPMENT_COLUMNS}
"""The columns of a telemetry window in evidence, by device domain."""


async def read_window(
    conn: psycopg.AsyncConnection[Any],
    domain: str,
    device_id: str,
    start: datetime,
    end: datetime,
) -> list[list[Any]]:
    """A device's stored readings in [start, end], as evidence rows (time as RFC 3339)."""
    columns = WINDOW_COLUMNS.get(domain)
    if columns is None:
        return []
    table = sql.Identifier(f"telemetry_{domain}")
    cur = await conn.execute(
        sql.SQL(
            "SELECT time, {} FROM {} WHERE device_id = %s AND time >= %s AND time <= %s"
            " ORDER BY time, seq"
        ).format(sql.SQL(", ").join(map(sql.Identifier, columns[1:])), table),
        (device_id, start, end),
    )
    return [[r[0].isoformat(), *r[1:]] for r in await cur.fetchall()]


async def append_alert(
    conn: psycopg.AsyncConnection[Any], kind: str, clue: CluePublic, extra: Mapping[str, Any]
) -> None:
    body = {"clue": clue.model_dump(mode="json"), **extra}
    # One statement. The notification is delivered at commit and carries the alert when it
    # fits (`alerts.alert_of_notification`); otherwise listeners read the alerts table from
    # their last seq on. In a pipeline its result, an error included, comes at the next sync.
    await conn.execute(
        "WITH alert AS (INSERT INTO alerts (type, clue_id, severity, department, body)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING seq, type, at, body),"
        " note AS (SELECT seq, json_build_object('seq', seq, 'type', type,"
        " 'at_us', (extract(epoch FROM at) * 1000000)::bigint, 'body', body)::text AS whole"
        " FROM alert)"
        " SELECT pg_notify(%s, CASE WHEN octet_length(whole) < %s THEN whole ELSE seq::text END)"
        " FROM note",
        (
            kind,
            clue.id,
            clue.severity,
            clue.department,
            Jsonb(body),
            ALERT_CHANNEL,
            NOTIFY_PAYLOAD_MAX,
        ),
    )


class Casework:
    """Turns findings into records. Owned by the runtime; uses its pool."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        evidence_before: timedelta,
        frames: FrameSource | None = None,
        frames_before: timedelta = timedelta(seconds=5),
        max_frames: int = 12,
        deadlines: Mapping[str, float] | None = None,
        merge_window: timedelta = timedelta(days=7),
    ) -> None:
        self._pool = pool
        self._merge_window = merge_window
        self._deadlines = dict(deadlines or DEFAULT_DEADLINES_S)
        self._before = evidence_before
        self._frames = frames
        self._frames_before = frames_before
        self._max_frames = max_frames

    async def handle(self, finding: Finding, device: DeviceInfo) -> str:
        """Record one finding, completely; returns the clue id."""
        if await self.announce(finding, device):
            await self.complete(finding, device)
        return clue_id_for(finding.key)

    async def announce(self, finding: Finding, device: DeviceInfo) -> bool:
        """First step: a new clue is recorded and its alert pushed; an episode's later
        findings update their clue. True when the clue is new and waits for `complete`."""
        (opened,) = await self.announce_many([(finding, device)])
        return opened

    async def announce_many(
        self,
        findings: Sequence[tuple[Finding, DeviceInfo]],
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[bool]:
        """`announce` for findings raised together, in order, in one transaction (on
        `conn` if given, else on a connection of the pool). A group of openings goes to the
        database as one message of one statement each (`OPEN_SQL`), run as one
        transaction: one write, one round trip. A group with an episode going on is
        pipelined instead, one more round trip (its alert carries the clue as updated). A
        clue opened already (a replay after a restart) is updated after the commit, in a
        transaction of its own."""
        # Everything a statement needs is built before anything is sent: from the
        # announcer's thread, each pause for Python work between two sends can wait for
        # the interpreter's lock, held by the busy gateway.
        prepared = [
            self._opening(f, device) if f.phase == "opened" else None for f, device in findings
        ]
        if conn is None:
            async with self._pool.connection() as own:
                opened = await self._announce_on(own, findings, prepared)
        else:
            opened = await self._announce_on(conn, findings, prepared)
        for (f, _), new in zip(findings, opened, strict=True):
            if new:
                _LOG.info(
                    "clue %s opened: %s on %s (%s)",
                    clue_id_for(f.key),
                    f.rule,
                    f.device_id,
                    f.severity,
                )
        return opened

    async def _announce_on(
        self,
        conn: psycopg.AsyncConnection[Any],
        findings: Sequence[tuple[Finding, DeviceInfo]],
        prepared: Sequence[dict[str, Any] | None],
    ) -> list[bool]:
        if all(params is not None for params in prepared):
            found = await self._open_all(conn, [p for p in prepared if p is not None])
        else:
            found = await self._open_and_update(conn, findings, prepared)
        opened = [row is not None for row in found]
        replayed = [
            f
            for (f, _), row, params in zip(findings, found, prepared, strict=True)
            if row is None and params is not None
        ]  # open already: goes on
        if replayed:
            async with conn.transaction():
                for f in replayed:
                    await self._update_and_alert(conn, f)
        return opened

    @staticmethod
    async def _open_all(
        conn: psycopg.AsyncConnection[Any], prepared: Sequence[dict[str, Any]]
    ) -> list[tuple[Any, ...] | None]:
        """The openings as one simple-protocol message (its statements run as one
        transaction, committed after the last); each one's row, or None."""
        cur = psycopg.AsyncClientCursor(conn)
        await cur.execute("; ".join(cur.mogrify(OPEN_SQL, params) for params in prepared))
        rows: list[tuple[Any, ...] | None] = []
        while True:
            rows.append(await cur.fetchone())
            if not cur.nextset():
                break
        if conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.commit()  # a connection outside autocommit opened a transaction
        return rows

    async def _open_and_update(
        self,
        conn: psycopg.AsyncConnection[Any],
        findings: Sequence[tuple[Finding, DeviceInfo]],
        prepared: Sequence[dict[str, Any] | None],
    ) -> list[tuple[Any, ...] | None]:
        """Openings and episodes going on, pipelined in one transaction; each opening's
        row (None when open already), None for the others."""
        async with conn.pipeline(), conn.transaction():
            cursors: list[psycopg.AsyncCursor[Any] | None] = []
            for (f, _), params in zip(findings, prepared, strict=True):
                if params is not None:
                    cursors.append(await conn.execute(OPEN_SQL, params))
                else:
                    await self._update_and_alert(conn, f)
                    cursors.append(None)
        return [None if cur is None else await cur.fetchone() for cur in cursors]

    async def _update_and_alert(self, conn: psycopg.AsyncConnection[Any], f: Finding) -> None:
        row = await (await self._update_clue(conn, clue_id_for(f.key), f)).fetchone()
        if row is None:
            _LOG.warning("finding %s for a clue never opened (%s); ignored", f.phase, f.key)
        else:
            await append_alert(conn, f"clue.{f.phase}", CluePublic.from_row(row), {})

    async def complete(self, finding: Finding, device: DeviceInfo) -> None:
        """Second step of a new clue: evidence, case, merge and ledger entries. Committed
        without waiting for the flush, then flushed (`flush_log`): its alert's notification
        holds other alerts only for the commit itself. A connection lost in between leaves
        the caller to try again, which does nothing if the commit survived."""
        async with self._pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                await self._complete(conn, clue_id_for(finding.key), finding, device)
            await flush_log(conn)

    async def complete_pending(self, directory: Mapping[str, DeviceInfo]) -> int:
        """Fix the evidence of detector clues announced before a crash and never completed.
        Returns how many were completed."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, rule, device_id, severity, triggered_at, opened_at, title, value,"
                " peak, threshold, details FROM clues"
                " WHERE source = 'detector' AND evidence_id IS NULL ORDER BY opened_at"
            )
            rows = await cur.fetchall()
        done = 0
        for row in rows:
            device = directory.get(str(row[2]))
            if device is None:
                _LOG.warning("clue %s: device %s no longer registered", row[0], row[2])
                continue
            finding = Finding(
                rule=row[1],
                device_id=row[2],
                severity=row[3],
                phase="opened",
                episode_start=row[4],
                at=row[5],
                title=row[6],
                value=row[7],
                peak=row[8],
                threshold=row[9],
                details=dict(row[10] or {}),
            )
            async with self._pool.connection() as conn, conn.transaction():
                await self._complete(conn, str(row[0]), finding, device)
            done += 1
        if done:
            _LOG.info("completed the evidence of %d clue(s) announced before a restart", done)
        return done

    def _opening(self, f: Finding, device: DeviceInfo) -> dict[str, Any]:
        """The parameters of `OPEN_SQL` for the finding's clue: the clue with its source,
        first step and alert, in one statement (a row back when it opened, none when the
        clue was open already). JSON goes as text, serialized here.

        The alert's clue is the row as inserted, built here: only its deadline comes from
        the database (the department's own limit, `DEADLINE_SQL`), set into the alert
        there. Times are in UTC, as pydantic writes them."""
        clue_id = clue_id_for(f.key)
        clue = CluePublic(
            id=clue_id,
            rule=f.rule,
            severity=f.severity,
            domain=device.domain,
            device_id=device.id,
            subject_id=device.subject_id,
            matter_id=device.matter_id,
            department=device.department,
            cooperating_departments=list(device.cooperating_departments),
            status="new",
            title=f.title,
            triggered_at=f.episode_start.astimezone(UTC),
            opened_at=f.at.astimezone(UTC),
            last_at=f.at.astimezone(UTC),
            cleared_at=None,
            value=f.value,
            peak=f.peak,
            threshold=f.threshold,
            updates=0,
            evidence_id=None,
            case_id=None,
            details=f.details,
            source="detector",
            deadline_at=None,
            overdue=False,
            disposition=None,
            closed_at=None,
            acknowledged_at=None,
            acknowledged_by=None,
        )
        return {
            "id": clue_id,
            "key": f.key,
            "rule": f.rule,
            "severity": f.severity,
            "domain": device.domain,
            "device_id": device.id,
            "subject_id": device.subject_id,
            "matter_id": device.matter_id,
            "department": device.department,
            "cooperating": list(device.cooperating_departments),
            "title": f.title,
            "triggered_at": f.episode_start,
            "at": f.at,
            "value": f.value,
            "peak": f.peak,
            "threshold": f.threshold,
            "details": json.dumps(f.details),
            "default_s": self._deadlines[f.severity],
            "actor": SYSTEM_ACTOR,
            "body": '{"clue":' + clue.model_dump_json() + "}",
            "channel": ALERT_CHANNEL,
            "payload_max": NOTIFY_PAYLOAD_MAX,
        }

    async def _complete(
        self, conn: psycopg.AsyncConnection[Any], clue_id: str, f: Finding, device: DeviceInfo
    ) -> None:
        """Evidence, case, merge and ledger of an announced clue, then an alert with the
        clue as it now stands."""
        cur = await conn.execute(
            "SELECT deadline_at FROM clues WHERE id = %s AND evidence_id IS NULL FOR UPDATE",
            (clue_id,),
        )
        pending = await cur.fetchone()
        if pending is None:
            return  # completed already
        drafts = [
            ledger.Draft(
                SYSTEM_ACTOR,
                "clue.opened",
                "clue",
                clue_id,
                {
                    "clue_id": clue_id,
                    "key": f.key,
                    "rule": f.rule,
                    "severity": f.severity,
                    "device_id": device.id,
                    "subject_id": device.subject_id,
                    "matter_id": device.matter_id,
                    "department": device.department,
                    "triggered_at": f.episode_start,
                    "opened_at": f.at,
                    "deadline_at": pending[0],
                },
            )
        ]
        evidence_id = await self._fix_evidence(conn, clue_id, f, device, drafts)
        case_id = None
        if f.severity == "red":
            case_id = await open_or_join_case(
                conn,
                clue_id,
                CaseFacts(
                    title=f"{f.title}: {device.subject_name}",
                    subject_id=device.subject_id,
                    matter_id=device.matter_id,
                    department=device.department,
                    cooperating_departments=device.cooperating_departments,
                    legal_basis=device.legal_basis,
                ),
                f.at,
                SYSTEM_ACTOR,
                drafts,
            )
        merged_into = None
        if case_id is None:
            merged_into = await self._join_reported(conn, clue_id, f, device, drafts)
        # Last in the transaction: the ledger's lock is held from here to the commit only.
        await ledger.append(conn, drafts)
        if merged_into is not None:
            await conn.execute(
                "UPDATE clues SET status = 'closed', disposition = 'merged', closed_at = now()"
                " WHERE id = %s",
                (clue_id,),
            )
            await record_event(
                conn,
                clue_id,
                SYSTEM_ACTOR,
                "closed",
                "new",
                "closed",
                device.department,
                f"merged into {merged_into}",
                {"disposition": "merged", "merged_into": merged_into},
            )
            await append_alert(
                conn,
                "clue.source_added",
                await read_clue(conn, merged_into),
                {"channel": "detector"},
            )
        await conn.execute(
            "UPDATE clues SET evidence_id = %s, case_id = %s,"
            " status = CASE WHEN %s::text IS NULL THEN status ELSE 'escalated' END"
            " WHERE id = %s",
            (evidence_id, case_id, case_id, clue_id),
        )
        if case_id is not None:
            # The case carries it from here (its `case.clue_joined` entry is the ledger's
            # record of this step); no deadline runs for the clue any more.
            await record_event(
                conn,
                clue_id,
                SYSTEM_ACTOR,
                "escalated",
                "new",
                "escalated",
                device.department,
                "red clue: cased on opening",
                {"case_id": case_id},
            )
        clue = await read_clue(conn, clue_id)
        kind = {"escalated": "clue.escalated", "closed": "clue.closed"}.get(clue.status)
        await append_alert(conn, kind or "clue.updated", clue, {"evidence_id": evidence_id})

    async def _join_reported(
        self,
        conn: psycopg.AsyncConnection[Any],
        clue_id: str,
        f: Finding,
        device: DeviceInfo,
        drafts: list[ledger.Draft],
    ) -> str | None:
        """When a reported clue (hotline, complaint...) on the same subject and matter is
        still being dealt with, the detector's clue becomes one more source of it and is
        closed as merged: one department inspects the facts once. The detector clue keeps
        its evidence and goes on recording the episode. Returns the clue joined, if any."""
        await merge_lock(conn, device.subject_id, device.matter_id)
        cur = await conn.execute(
            "SELECT id, status, department FROM clues WHERE subject_id = %s AND matter_id = %s"
            " AND source <> 'detector' AND status NOT IN ('closed', 'escalated')"
            " AND last_at >= %s::timestamptz - %s AND id <> %s"
            " ORDER BY opened_at LIMIT 1 FOR UPDATE",
            (device.subject_id, device.matter_id, f.at, self._merge_window, clue_id),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        target, status, department = str(row[0]), str(row[1]), str(row[2])
        source_id = await add_source(conn, target, "detector", clue_id, f.title, f.at, SYSTEM_ACTOR)
        await conn.execute(
            "UPDATE clues SET last_at = greatest(last_at, %s), updates = updates + 1 WHERE id = %s",
            (f.at, target),
        )
        await record_event(
            conn,
            target,
            SYSTEM_ACTOR,
            "source_added",
            status,
            status,
            department,
            None,
            {"source_id": source_id, "channel": "detector", "clue_id": clue_id},
        )
        drafts.append(
            ledger.Draft(
                SYSTEM_ACTOR,
                "clue.source_added",
                "clue",
                target,
                {
                    "clue_id": target,
                    "source_id": source_id,
                    "channel": "detector",
                    "reference": clue_id,
                    "reported_at": f.at,
                },
            )
        )
        drafts.append(
            ledger.Draft(
                SYSTEM_ACTOR,
                "clue.closed",
                "clue",
                clue_id,
                {
                    "clue_id": clue_id,
                    "from_status": "new",
                    "to_status": "closed",
                    "disposition": "merged",
                    "merged_into": target,
                },
            )
        )
        _LOG.info("clue %s merged into reported clue %s", clue_id, target)
        return target

    async def _update_clue(
        self, conn: psycopg.AsyncConnection[Any], clue_id: str, f: Finding
    ) -> psycopg.AsyncCursor[Any]:
        """An episode goes on (or clears); the cursor has the clue's row, or none when the
        clue was never opened."""
        cleared = f.phase == "cleared"
        return await conn.execute(
            sql.SQL(
                "UPDATE clues SET last_at = greatest(last_at, %s), value = %s,"
                " peak = greatest(peak, %s), updates = updates + 1,"
                " cleared_at = CASE WHEN %s THEN %s ELSE cleared_at END"
                " WHERE id = %s RETURNING {}"
            ).format(CLUE_COLUMNS),
            (f.at, f.value, f.peak, cleared, f.at, clue_id),
        )

    async def _fix_evidence(
        self,
        conn: psycopg.AsyncConnection[Any],
        clue_id: str,
        f: Finding,
        device: DeviceInfo,
        drafts: list[ledger.Draft],
    ) -> str:
        """Freeze the telemetry window from before the trigger up to the firing, or for a
        camera the frames kept from before the trigger up to the firing, hashed."""
        video = device.domain == "video"
        window_from = f.episode_start - (self._frames_before if video else self._before)
        window_to = f.at
        readings = await read_window(conn, device.domain, device.id, window_from, window_to)
        frames = (
            pick_frames(self._frames(device.id, window_from, window_to), self._max_frames)
            if video and self._frames is not None
            else []
        )
        evidence_id = "ev_" + clue_id.removeprefix("clu_")
        kind = "video_frames" if video else "telemetry_window"
        content = {
            "kind": kind,
            "evidence_id": evidence_id,
            "clue_id": clue_id,
            "rule": f.rule,
            "severity": f.severity,
            "triggered_at": f.episode_start,
            "fired_at": f.at,
            "threshold": f.threshold,
            "device": {
                "id": device.id,
                "domain": device.domain,
                "kind": device.kind,
                "attributes": device.attributes,
            },
            "subject": {
                "id": device.subject_id,
                "name": device.subject_name,
                "risk_tier": device.risk_tier,
            },
            "matter": {"id": device.matter_id, "legal_basis": list(device.legal_basis)},
            "window": {"from": window_from, "to": window_to},
            "columns": list(WINDOW_COLUMNS.get(device.domain, ())),
            "readings": readings,
        }
        if video:
            content["frames"] = [
                {"ts": fr.ts, "seq": fr.seq, "bytes": len(fr.jpeg), "sha256": sha256_hex(fr.jpeg)}
                for fr in frames
            ]
        data = canonical_json(content)
        content_sha256 = sha256_hex(data)
        await conn.execute(
            "INSERT INTO evidence (id, clue_id, kind, window_from, window_to, item_count,"
            " content, sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                evidence_id,
                clue_id,
                kind,
                window_from,
                window_to,
                len(frames) if video else len(readings),
                data.decode("utf-8"),
                content_sha256,
            ),
        )
        frame_hashes = [sha256_hex(fr.jpeg) for fr in frames]
        if frames:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO evidence_frames (evidence_id, idx, ts, seq, sha256, jpeg)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (evidence_id, i, fr.ts, fr.seq, frame_hashes[i], fr.jpeg)
                        for i, fr in enumerate(frames)
                    ],
                )
        drafts.append(
            ledger.Draft(
                SYSTEM_ACTOR,
                "evidence.fixed",
                "evidence",
                evidence_id,
                {
                    "evidence_id": evidence_id,
                    "clue_id": clue_id,
                    "kind": kind,
                    "content_sha256": content_sha256,
                    "frames": [{"idx": i, "sha256": h} for i, h in enumerate(frame_hashes)],
                },
            )
        )
        return evidence_id


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What a case is filed on: taken from the device for a detector clue, from the clue
    and the matters list for one escalated by hand."""

    title: str
    subject_id: str
    matter_id: str
    department: str
    cooperating_departments: tuple[str, ...]
    legal_basis: tuple[str, ...]


async def open_or_join_case(
    conn: psycopg.AsyncConnection[Any],
    clue_id: str,
    facts: CaseFacts,
    at: datetime,
    actor: str,
    drafts: list[ledger.Draft],
) -> str:
    """File a case with the given department, unless one is open for the same subject and
    matter: the same facts are not cased twice. The clue joins the case either way."""
    cur = await conn.execute(
        "SELECT id FROM cases WHERE subject_id = %s AND matter_id = %s"
        " AND status NOT IN ('closed', 'handed_over') ORDER BY opened_at LIMIT 1 FOR UPDATE",
        (facts.subject_id, facts.matter_id),
    )
    row = await cur.fetchone()
    if row is not None:
        case_id = str(row[0])
    else:
        cur = await conn.execute(
            "SELECT to_char(%s::timestamptz, 'YYYY') || '-' ||"
            " lpad(nextval('case_number_seq')::text, 6, '0')",
            (at,),
        )
        number_row = await cur.fetchone()
        assert number_row is not None
        number = str(number_row[0])
        case_id = "case_" + sha256_hex(f"case|{clue_id}".encode())[:20]
        await conn.execute(
            "INSERT INTO cases (id, number, title, matter_id, subject_id, department,"
            " cooperating_departments, legal_basis, opened_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                case_id,
                number,
                facts.title,
                facts.matter_id,
                facts.subject_id,
                facts.department,
                list(facts.cooperating_departments),
                list(facts.legal_basis),
                actor,
            ),
        )
        drafts.append(
            ledger.Draft(
                actor,
                "case.filed",
                "case",
                case_id,
                {
                    "case_id": case_id,
                    "number": number,
                    "department": facts.department,
                    "subject_id": facts.subject_id,
                    "matter_id": facts.matter_id,
                    "legal_basis": list(facts.legal_basis),
                    "clue_id": clue_id,
                },
            )
        )
        await conn.execute(
            "INSERT INTO case_events (case_id, actor, action, to_status, department, details)"
            " VALUES (%s, %s, 'filed', 'filed', %s, %s)",
            (case_id, actor, facts.department, Jsonb({"clue_id": clue_id})),
        )
        _LOG.info("case %s (%s) filed with %s", number, case_id, facts.department)
    cur = await conn.execute(
        "INSERT INTO case_clues (case_id, clue_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        " RETURNING case_id",
        (case_id, clue_id),
    )
    if await cur.fetchone() is not None:
        drafts.append(
            ledger.Draft(
                actor,
                "case.clue_joined",
                "case",
                case_id,
                {"case_id": case_id, "clue_id": clue_id},
            )
        )
    return case_id


DEFAULT_DEADLINES_S: dict[str, float] = {
    "red": 2 * 3600.0,
    "orange": 24 * 3600.0,
    "yellow": 72 * 3600.0,
    "blue": 7 * 86400.0,
}


def deadline_sql(
    start: sql.Composable,
    department: sql.Composable,
    severity: sql.Composable,
    default_s: sql.Composable,
) -> sql.Composed:
    """A clue's deadline: from an instant, the department's own limit for the severity, else
    the default given."""
    return sql.SQL(
        "{}::timestamptz + make_interval(secs => coalesce((SELECT within_s FROM clue_deadlines"
        " WHERE department = {} AND severity = {}), {}))"
    ).format(start, department, severity, default_s)


DEADLINE_SQL = deadline_sql(
    sql.Placeholder(), sql.Placeholder(), sql.Placeholder(), sql.Placeholder()
)
"""`deadline_sql` with parameters: start, department, severity, default seconds."""


def _utc_text(column: str) -> sql.Composed:
    """A timestamptz as pydantic writes a UTC datetime: microseconds only when not zero."""
    c = sql.Identifier(column)
    return sql.SQL(
        "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        " || CASE WHEN to_char({c}, 'US') = '000000' THEN '' ELSE '.' || to_char({c}, 'US') END"
        " || 'Z'"
    ).format(c=c)


OPEN_SQL = sql.SQL(
    "WITH clue AS (INSERT INTO clues (id, key, rule, severity, domain, device_id, subject_id,"
    " matter_id, department, cooperating_departments, title, triggered_at, opened_at, last_at,"
    " value, peak, threshold, details, deadline_at)"
    " VALUES (%(id)s, %(key)s, %(rule)s, %(severity)s, %(domain)s, %(device_id)s,"
    " %(subject_id)s, %(matter_id)s, %(department)s, %(cooperating)s, %(title)s,"
    " %(triggered_at)s, %(at)s, %(at)s, %(value)s, %(peak)s, %(threshold)s, %(details)s::jsonb,"
    " {deadline})"
    " ON CONFLICT (key) DO NOTHING RETURNING id, deadline_at),"
    " source AS (INSERT INTO clue_sources (clue_id, channel, reference, description,"
    " reported_at, actor) SELECT id, 'detector', %(device_id)s, %(title)s, %(at)s, %(actor)s"
    " FROM clue),"
    " step AS (INSERT INTO clue_events (clue_id, actor, action, from_status, to_status,"
    " department, reason, details) SELECT id, %(actor)s, 'opened', NULL, 'new', %(department)s,"
    " NULL, '{{}}' FROM clue),"
    " alert AS (INSERT INTO alerts (type, clue_id, severity, department, body)"
    " SELECT 'clue.opened', id, %(severity)s, %(department)s,"
    " jsonb_set(%(body)s::jsonb, '{{clue,deadline_at}}', to_jsonb({deadline_text})) FROM clue"
    " RETURNING seq, type, at, body),"
    " note AS (SELECT seq, json_build_object('seq', seq, 'type', type,"
    " 'at_us', (extract(epoch FROM at) * 1000000)::bigint, 'body', body)::text AS whole"
    " FROM alert),"
    " sent AS (SELECT pg_notify(%(channel)s, CASE WHEN octet_length(whole) < %(payload_max)s"
    " THEN whole ELSE seq::text END) FROM note)"
    " SELECT clue.id, (SELECT count(*) FROM sent) FROM clue"
).format(
    deadline=deadline_sql(
        sql.Placeholder("at"),
        sql.Placeholder("department"),
        sql.Placeholder("severity"),
        sql.Placeholder("default_s"),
    ),
    deadline_text=_utc_text("deadline_at"),
)
"""A new clue, its source, its first step and its `clue.opened` alert, in one statement
(`Casework._open_clue`): the same rows as `add_source`, `record_event` and `append_alert`
would write. A row back when the clue opened, none when it was open already."""


FLUSH_SQL: Final = (
    "SET LOCAL synchronous_commit = on; SELECT pg_logical_emit_message(true, 'offsite.flush', '')"
)
"""A transaction that writes a record to the log (a transactional logical message, the
smallest write there is, allowed to every role) and commits synchronously: its commit
returns once the log is on disk up to its own record, after the announcements committed
before it. (A transaction that writes nothing else, `pg_current_xact_id()` alone, commits
without the flush: the database flushes only for a transaction that wrote to the log.)"""


async def flush_log(conn: psycopg.AsyncConnection[Any]) -> None:
    """Returns once every transaction committed before it is on disk (`FLUSH_SQL`): for a
    transaction committed without waiting for the flush, so that it holds the lock every
    notifying commit takes only for its own work. That lock is taken before the commit is
    flushed and released after: one notifying transaction waiting for the disk (behind the
    ingest's writes, or during a checkpoint's sync) held every other one, an alert's
    included, behind it (seen: an announcement waiting 75 ms on it)."""
    await psycopg.AsyncClientCursor(conn).execute(FLUSH_SQL)
    if conn.info.transaction_status != TransactionStatus.IDLE:
        await conn.commit()  # a connection outside autocommit opened a transaction


async def clue_recorded(conn: psycopg.AsyncConnection[Any], key: str) -> bool:
    """Whether the clue of an episode (`Finding.key`) is in the database."""
    cur = await conn.execute("SELECT 1 FROM clues WHERE key = %s", (key,))
    return await cur.fetchone() is not None


async def merge_lock(conn: psycopg.AsyncConnection[Any], subject_id: str, matter_id: str) -> None:
    """Held to the end of the transaction: two reports of the same facts arriving together
    (from outside or a detector) must not both open a clue, nor miss each other."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('clue-merge|' || %s || '|' || %s))",
        (subject_id, matter_id),
    )


SOURCE_SQL = (
    "INSERT INTO clue_sources (clue_id, channel, reference, description, reported_at, actor)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
"""A clue's source; parameters: clue, channel, reference, description, reported at, actor."""


async def add_source(
    conn: psycopg.AsyncConnection[Any],
    clue_id: str,
    channel: str,
    reference: str | None,
    description: str,
    reported_at: datetime,
    actor: str,
) -> int:
    cur = await conn.execute(
        SOURCE_SQL + " RETURNING id", (clue_id, channel, reference, description, reported_at, actor)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def record_event(
    conn: psycopg.AsyncConnection[Any],
    clue_id: str,
    actor: str,
    action: str,
    from_status: str | None,
    to_status: str,
    department: str | None,
    reason: str | None,
    details: Mapping[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO clue_events (clue_id, actor, action, from_status, to_status, department,"
        " reason, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (clue_id, actor, action, from_status, to_status, department, reason, Jsonb(details or {})),
    )


async def read_clue(conn: psycopg.AsyncConnection[Any], clue_id: str) -> CluePublic:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM clues WHERE id = %s").format(CLUE_COLUMNS), (clue_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    return CluePublic.from_row(row)


async def verify_evidence(
    conn: psycopg.AsyncConnection[Any], evidence_id: str
) -> dict[str, Any] | None:
    """Recompute the hash over the stored bytes, and re-read the source telemetry."""
    cur = await conn.execute("SELECT content, sha256 FROM evidence WHERE id = %s", (evidence_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    content_text, stored = str(row[0]), str(row[1])
    data = content_text.encode("utf-8")
    computed = sha256_hex(data)
    problems: list[str] = []
    if computed != stored:
        problems.append("content does not match its recorded SHA-256")
    source_intact = True
    try:
        content = json.loads(data)
        domain = content.get("device", {}).get("domain")
        if domain in WINDOW_COLUMNS:
            current = await read_window(
                conn,
                domain,
                content["device"]["id"],
                datetime.fromisoformat(content["window"]["from"]),
                datetime.fromisoformat(content["window"]["to"]),
            )
            if canonical_json(current) != canonical_json(content["readings"]):
                source_intact = False
                problems.append("telemetry in the database differs from the evidence window")
        if "frames" in content:
            cur = await conn.execute(
                "SELECT idx, jpeg FROM evidence_frames WHERE evidence_id = %s ORDER BY idx",
                (evidence_id,),
            )
            stored_frames = await cur.fetchall()
            listed = content["frames"]
            if len(stored_frames) != len(listed):
                source_intact = False
                problems.append(
                    f"{len(stored_frames)} frames stored, the evidence lists {len(listed)}"
                )
            for (idx, jpeg), item in zip(stored_frames, listed, strict=False):
                if sha256_hex(bytes(jpeg)) != item["sha256"]:
                    source_intact = False
                    problems.append(f"frame {idx} differs from its recorded SHA-256")
    except (ValueError, KeyError, TypeError) as exc:
        source_intact = False
        problems.append(f"content is not readable evidence: {exc}")
    return {
        "evidence_id": evidence_id,
        "valid": computed == stored,
        "stored_sha256": stored,
        "computed_sha256": computed,
        "source_intact": source_intact,
        "problems": problems,
    }
