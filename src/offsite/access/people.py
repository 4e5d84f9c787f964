"""People, roles and API tokens, stored in PostgreSQL.

A token is `ofs_<id>_<secret>`: the id finds the row, the secret is 32 random bytes
(url-safe base64). Only the SHA-256 of the whole token is stored. A plain fast hash is
enough here, unlike for passwords: the secret has 256 bits of entropy, so there is nothing
to guess or to brute-force from a leaked hash, and a slow hash (bcrypt, argon2) would only
add its cost to every API call. The comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import psycopg
import psycopg.rows
from psycopg import sql

from offsite.casework import ledger

Role = Literal["admin", "duty", "department", "auditor"]
ROLES: tuple[Role, ...] = get_args(Role)
BOOTSTRAP_ACTOR = "admin:bootstrap"
"""The actor of the bootstrap token: the first administrator, not a row in `people`."""
MAX_TTL = timedelta(days=366)
_TOKEN = re.compile(r"^ofs_(?P<id>[1-9][0-9]{0,17})_(?P<secret>[A-Za-z0-9_-]{43})$")
_LAST_USED_EVERY = timedelta(minutes=1)
"""`last_used_at` is written at most this often per token, not on every request."""


class PeopleError(Exception):
    """A person or token request that cannot be done; `status` is the HTTP answer."""

    status = 422


class NotFoundError(PeopleError):
    status = 404


class ConflictError(PeopleError):
    status = 409


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the bootstrap administrator (`person_id` None) or a person by token."""

    person_id: int | None
    name: str
    role: Role
    department: str | None
    token_id: int | None = None

    @property
    def actor(self) -> str:
        """The name recorded in the ledger and in clue and case histories."""
        if self.person_id is None:
            return BOOTSTRAP_ACTOR
        return f"person:{self.person_id}:{self.name}"

    @property
    def scope(self) -> str | None:
        """The department whose clues and cases alone this principal sees; None: all."""
        return self.department if self.role == "department" else None


BOOTSTRAP = Principal(person_id=None, name="bootstrap", role="admin", department=None)


@dataclass(frozen=True, slots=True)
class Person:
    id: int
    name: str
    role: Role
    department: str | None
    active: bool
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    person_id: int
    name: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: Token
    secret: str
    """The whole bearer token, shown once; only its SHA-256 is kept."""


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


_PERSON_FIELDS = ("id", "name", "role", "department_id", "active", "created_at", "created_by")
_PERSON_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, _PERSON_FIELDS))
_TOKEN_FIELDS = (
    "id",
    "person_id",
    "name",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "last_used_at",
)
_TOKEN_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, _TOKEN_FIELDS))


def _person(row: Any) -> Person:
    return Person(*row)


def _token(row: Any) -> Token:
    return Token(*row)


async def add_person(
    conn: psycopg.AsyncConnection[Any],
    name: str,
    role: str,
    department: str | None,
    actor: str,
) -> Person:
    """A new active person; a department officer needs an active department. Recorded in
    the ledger in the caller's transaction, which must be open."""
    if role not in ROLES:
        raise PeopleError(f"role must be one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or ":" in name:
        raise PeopleError("a name is required and may not contain ':'")
    if role == "department" and department is None:
        raise PeopleError("a department officer needs a department")
    if department is not None:
        cur = await conn.execute("SELECT active FROM departments WHERE id = %s", (department,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            raise PeopleError(f"no active department {department!r}")
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO people (name, role, department_id, created_by) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING {}"
        ).format(_PERSON_COLUMNS),
        (name, role, department, actor),
    )
    row = await cur.fetchone()
    if row is None:
        raise ConflictError(f"a person named {name!r} exists")
    person = _person(row)
    await ledger.append(
        conn,
        [
            ledger.Draft(
                actor,
                "person.added",
                "person",
                str(person.id),
                {"name": person.name, "role": person.role, "department": person.department},
            )
        ],
    )
    return person


async def set_active(
    conn: psycopg.AsyncConnection[Any], person_id: int, active: bool, actor: str
) -> Person:
    """Deactivating a person refuses all their tokens at once (they stay on record)."""
    cur = await conn.execute(
        sql.SQL("UPDATE people SET active = %s WHERE id = %s RETURNING {}").format(_PERSON_COLUMNS),
        (active, person_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no person {person_id}")
    action = "person.activated" if active else "person.deactivated"
    await ledger.append(conn, [ledger.Draft(actor, action, "person", str(person_id), {})])
    return _person(row)


async def find_person(conn: psycopg.AsyncConnection[Any], key: str | int) -> Person:
    """By id, or by name (the CLI takes either)."""
    if isinstance(key, int) or key.isdigit():
        query = sql.SQL("SELECT {} FROM people WHERE id = %s").format(_PERSON_COLUMNS)
        cur = await conn.execute(query, (int(key),))
    else:
        query = sql.SQL("SELECT {} FROM people WHERE name = %s").format(_PERSON_COLUMNS)
        cur = await conn.execute(query, (key,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no person {key!r}")
    return _person(row)


async def list_people(conn: psycopg.AsyncConnection[Any]) -> list[Person]:
    cur = await conn.execute(sql.SQL("SELECT {} FROM people ORDER BY id").format(_PERSON_COLUMNS))
    return [_person(r) for r in await cur.fetchall()]


async def issue_token(
    conn: psycopg.AsyncConnection[Any],
    person_id: int,
    ttl: timedelta,
    name: str,
    actor: str,
    now: datetime,
) -> IssuedToken:
    """A new token for an active person, valid for `ttl` (at most `MAX_TTL`)."""
    if not timedelta(0) < ttl <= MAX_TTL:
        raise PeopleError(f"a token lives more than 0 s and at most {MAX_TTL.days} days")
    person = await find_person(conn, person_id)
    if not person.active:
        raise ConflictError(f"person {person_id} is not active")
    cur = await conn.execute("SELECT nextval(pg_get_serial_sequence('api_tokens', 'id'))")
    row = await cur.fetchone()
    assert row is not None
    token_id = int(row[0])
    secret = f"ofs_{token_id}_{secrets.token_urlsafe(32)}"
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO api_tokens (id, person_id, sha256, name, created_at, created_by,"
            " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {}"
        ).format(_TOKEN_COLUMNS),
        (token_id, person_id, token_hash(secret), name, now, actor, now + ttl),
    )
    row = await cur.fetchone()
    assert row is not None
    token = _token(row)
    await ledger.append(
        conn,
        [
            ledger.Draft(
                actor,
                "token.issued",
                "token",
                str(token.id),
                {
                    "person_id": person_id,
                    "name": name,
                    "expires_at": token.expires_at.isoformat(),
                },
            )
        ],
    )
    return IssuedToken(token, secret)


async def revoke_token(
    conn: psycopg.AsyncConnection[Any], token_id: int, actor: str, now: datetime
) -> Token:
    """Revoked from now on; revoking a revoked token changes nothing and says so (409)."""
    cur = await conn.execute(
        sql.SQL(
            "UPDATE api_tokens SET revoked_at = %s, revoked_by = %s"
            " WHERE id = %s AND revoked_at IS NULL RETURNING {}"
        ).format(_TOKEN_COLUMNS),
        (now, actor, token_id),
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute("SELECT 1 FROM api_tokens WHERE id = %s", (token_id,))
        if await cur.fetchone() is None:
            raise NotFoundError(f"no token {token_id}")
        raise ConflictError(f"token {token_id} is already revoked")
    await ledger.append(conn, [ledger.Draft(actor, "token.revoked", "token", str(token_id), {})])
    return _token(row)


async def list_tokens(
    conn: psycopg.AsyncConnection[Any], person_id: int | None = None
) -> list[Token]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT {} FROM api_tokens WHERE (%s::bigint IS NULL OR person_id = %s) ORDER BY id"
        ).format(_TOKEN_COLUMNS),
        (person_id, person_id),
    )
    return [_token(r) for r in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Refused:
    """A token that names a row but cannot be used; the reason goes to its holder."""

    reason: str


async def authenticate(
    conn: psycopg.AsyncConnection[Any], token: str, now: datetime
) -> Principal | Refused | None:
    """The principal a bearer token stands for; None when it is no token of ours, `Refused`
    when it is (the secret matches) but expired, revoked or its person is inactive."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    async with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        await cur.execute(
            "SELECT t.sha256, t.expires_at, t.revoked_at, t.last_used_at, p.id, p.name,"
            " p.role, p.department_id, p.active"
            " FROM api_tokens t JOIN people p ON p.id = t.person_id WHERE t.id = %s",
            (int(match["id"]),),
        )
        row = await cur.fetchone()
    # Hash and compare even for an unknown id, so the answer takes the same time either way.
    stored = bytes(row[0]) if row is not None else b"\0" * 32
    if not hmac.compare_digest(stored, token_hash(token)) or row is None:
        return None
    expires_at, revoked_at, last_used_at = row[1], row[2], row[3]
    if revoked_at is not None:
        return Refused("token revoked")
    if expires_at <= now:
        return Refused("token expired")
    if not row[8]:
        return Refused("person deactivated")
    token_id = int(match["id"])
    if last_used_at is None or now - last_used_at >= _LAST_USED_EVERY:
        await conn.execute("UPDATE api_tokens SET last_used_at = %s WHERE id = %s", (now, token_id))
    return Principal(
        person_id=int(row[4]),
        name=str(row[5]),
        role=row[6],
        department=row[7],
        token_id=token_id,
    )


def parse_ttl(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `3600s` (or plain seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 30d, 12h, 90m)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return timedelta(seconds=float(match[1]) * unit)
