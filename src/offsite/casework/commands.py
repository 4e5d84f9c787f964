"""Remote enforcement (远程执法处置): a command to a device, its acknowledgement or its
time running out, each recorded with a ledger entry in the same transaction.

Sending is the runtime's (MQTT); this module records. A device answers on
`offsite/v1/{domain}/{device_id}/cmd/ack` with `{"command_id": ..., "ok": true|false,
"detail": "..."}`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from offsite.casework import ledger

COMMANDS: dict[str, tuple[str, ...]] = {
    "gas_detector": ("close_valve", "open_valve"),
    "elevator": ("out_of_service", "return_to_service"),
    "boiler": ("shutdown",),
    "pressure_vessel": ("shutdown",),
    "crane": ("lock_out",),
}
"""What each device kind can be told to do."""

Status = Literal["sent", "acked", "failed", "timed_out"]


class CommandError(Exception):
    """A command that cannot be sent as asked (unknown device, not for its kind)."""


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    device_id: str
    domain: str
    command: str
    params: dict[str, Any]
    case_id: str | None
    status: str
    issued_by: str
    issued_at: datetime
    deadline_at: datetime
    answered_at: datetime | None
    answer: dict[str, Any] | None
    reason: str | None

    @property
    def topic(self) -> str:
        return f"offsite/v1/{self.domain}/{self.device_id}/cmd"


_COLUMNS = (
    "c.id, c.device_id, d.domain, c.command, c.params, c.case_id, c.status, c.issued_by,"
    " c.issued_at, c.deadline_at, c.answered_at, c.answer, c.reason"
)


def _command(row: Any) -> Command:
    return Command(
        id=row[0],
        device_id=row[1],
        domain=row[2],
        command=row[3],
        params=dict(row[4]),
        case_id=row[5],
        status=row[6],
        issued_by=row[7],
        issued_at=row[8],
        deadline_at=row[9],
        answered_at=row[10],
        answer=None if row[11] is None else dict(row[11]),
        reason=row[12],
    )


async def read(conn: psycopg.AsyncConnection[Any], command_id: str) -> Command | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM device_commands c JOIN devices d ON d.id = c.device_id"  # noqa: S608
        " WHERE c.id = %s",
        (command_id,),
    )
    row = await cur.fetchone()
    return None if row is None else _command(row)


async def find(
    conn: psycopg.AsyncConnection[Any],
    visible: sql.Composable,
    *,
    case_id: str | None = None,
    device_id: str | None = None,
    limit: int = 200,
) -> list[Command]:
    """Commands newest first, optionally those of one case or one device; `visible` is SQL
    over `device_commands c` saying which the caller may see."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT " + _COLUMNS + " FROM device_commands c JOIN devices d ON d.id = c.device_id"  # noqa: S608 - constant columns
            " WHERE (%s::text IS NULL OR c.case_id = %s) AND (%s::text IS NULL OR c.device_id = %s)"
            " AND {} ORDER BY c.issued_at DESC, c.id LIMIT %s"
        ).format(visible),
        (case_id, case_id, device_id, device_id, limit),
    )
    return [_command(r) for r in await cur.fetchall()]


async def issue(
    conn: psycopg.AsyncConnection[Any],
    *,
    device_id: str,
    command: str,
    params: dict[str, Any],
    case_id: str | None,
    reason: str | None,
    actor: str,
    now: datetime,
    allowed_for: timedelta,
) -> Command:
    """Record a command to send (the caller publishes it after the commit)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT kind FROM devices WHERE id = %s AND active", (device_id,))
        row = await cur.fetchone()
        if row is None:
            raise CommandError(f"no active device {device_id!r}")
        allowed = COMMANDS.get(str(row[0]), ())
        if command not in allowed:
            names = ", ".join(allowed) or "none"
            raise CommandError(f"{command!r} is not a command for a {row[0]}; allowed: {names}")
        if case_id is not None:
            cur = await conn.execute("SELECT 1 FROM cases WHERE id = %s", (case_id,))
            if await cur.fetchone() is None:
                raise CommandError(f"no case {case_id!r}")
        command_id = "cmd_" + secrets.token_hex(10)
        await conn.execute(
            "INSERT INTO device_commands (id, device_id, case_id, command, params, reason,"
            " issued_by, issued_at, deadline_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (command_id, device_id, case_id, command, Jsonb(params), reason, actor, now,
             now + allowed_for),
        )  # fmt: skip
        await ledger.append(
            conn,
            [
                ledger.Draft(
                    actor=actor,
                    action="command.issued",
                    object_kind="command",
                    object_id=command_id,
                    payload={"device_id": device_id, "command": command, "params": params,
                             "case_id": case_id, "reason": reason},
                )
            ],
        )  # fmt: skip
    issued = await read(conn, command_id)
    assert issued is not None
    return issued


async def answer(
    conn: psycopg.AsyncConnection[Any],
    *,
    device_id: str,
    command_id: str,
    ok: bool,
    detail: str | None,
    now: datetime,
) -> Command | None:
    """A device's acknowledgement; None when it names no pending command of that device
    (late, repeated, or another device's: ignored, and said so in the log by the caller)."""
    async with conn.transaction():
        status: Status = "acked" if ok else "failed"
        cur = await conn.execute(
            "UPDATE device_commands SET status = %s, answered_at = %s, answer = %s"
            " WHERE id = %s AND device_id = %s AND status = 'sent' RETURNING id",
            (status, now, Jsonb({"ok": ok, "detail": detail}), command_id, device_id),
        )
        if await cur.fetchone() is None:
            return None
        await ledger.append(
            conn,
            [
                ledger.Draft(
                    actor=f"device:{device_id}",
                    action=f"command.{status}",
                    object_kind="command",
                    object_id=command_id,
                    payload={"ok": ok, "detail": detail},
                )
            ],
        )
    return await read(conn, command_id)


async def expire(conn: psycopg.AsyncConnection[Any], now: datetime) -> list[str]:
    """Commands whose time ran out without an answer become timed out; returns their ids."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE device_commands SET status = 'timed_out', answered_at = %s"
            " WHERE status = 'sent' AND deadline_at <= %s RETURNING id, device_id",
            (now, now),
        )
        rows = await cur.fetchall()
        if rows:
            await ledger.append(
                conn,
                [
                    ledger.Draft(
                        actor="offsite:commands",
                        action="command.timed_out",
                        object_kind="command",
                        object_id=str(command_id),
                        payload={"device_id": device_id},
                    )
                    for command_id, device_id in rows
                ],
            )
    return [str(r[0]) for r in rows]
