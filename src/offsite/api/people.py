"""`/api/v1/people`, `/api/v1/tokens`, `/api/v1/me`: who may use the API (administrators
manage, auditors read; see `offsite.api.auth` for the roles)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from offsite.access import people
from offsite.access.people import Role
from offsite.api.auth import AUTH_RESPONSES, Admin, AdminOrAuditor, Reader

router = APIRouter(prefix="/api/v1", tags=["people"], responses=AUTH_RESPONSES)


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (PostgreSQL text cannot hold NUL; a name is shown in histories)."""


class PersonCreate(_Create):
    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f:]+$", description="unique; no ':'"
    )
    role: Role = Field(description="admin, duty, department (officer) or auditor")
    department: str | None = Field(
        None,
        max_length=100,
        pattern=_PRINTABLE,
        description="required for a department officer: what they see and act on",
    )


class PersonUpdate(_Create):
    active: bool = Field(description="false: every token of the person is refused at once")


class PersonPublic(_Public):
    id: int
    name: str
    role: Role
    department: str | None
    active: bool
    created_at: datetime
    created_by: str


class TokenCreate(_Create):
    name: str = Field("", max_length=200, pattern=_PRINTABLE, description="what the token is for")
    ttl_s: int = Field(
        30 * 86400,
        gt=0,
        le=int(people.MAX_TTL.total_seconds()),
        description="seconds until it expires (default 30 days, at most 366 days)",
    )


class TokenPublic(_Public):
    id: int
    person_id: int
    name: str
    created_at: datetime
    created_by: str
    expires_at: AwareDatetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenIssued(TokenPublic):
    token: str = Field(description="the bearer token, shown this once; only its hash is kept")


class Me(_Public):
    person_id: int | None = Field(description="None: the bootstrap token")
    name: str
    role: Role
    department: str | None
    actor: str = Field(description="how this caller's actions are recorded in the ledger")
    token_id: int | None


async def _connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with request.app.state.api.pool.connection() as conn:
        yield conn


Db = Annotated[psycopg.AsyncConnection[Any], Depends(_connection)]
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _person(p: people.Person) -> PersonPublic:
    return PersonPublic(
        id=p.id,
        name=p.name,
        role=p.role,
        department=p.department,
        active=p.active,
        created_at=p.created_at,
        created_by=p.created_by,
    )


def _token(t: people.Token) -> TokenPublic:
    return TokenPublic(
        id=t.id,
        person_id=t.person_id,
        name=t.name,
        created_at=t.created_at,
        created_by=t.created_by,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        last_used_at=t.last_used_at,
    )


@router.get("/me", response_model=Me)
async def me(principal: Reader) -> Me:
    """Who this token is: any valid token may ask."""
    return Me(
        person_id=principal.person_id,
        name=principal.name,
        role=principal.role,
        department=principal.department,
        actor=principal.actor,
        token_id=principal.token_id,
    )


@router.get("/people", response_model=list[PersonPublic])
async def list_people(db: Db, _: AdminOrAuditor) -> list[PersonPublic]:
    return [_person(p) for p in await people.list_people(db)]


@router.post("/people", response_model=PersonPublic, status_code=201)
async def add_person(db: Db, principal: Admin, body: PersonCreate) -> PersonPublic:
    """A person with a role; recorded in the ledger."""
    try:
        async with db.transaction():
            person = await people.add_person(
                db, body.name, body.role, body.department, principal.actor
            )
    except people.PeopleError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return _person(person)


@router.patch("/people/{person_id}", response_model=PersonPublic)
async def update_person(
    db: Db, principal: Admin, person_id: RowId, body: PersonUpdate
) -> PersonPublic:
    """Deactivate (or reactivate) a person; recorded in the ledger."""
    try:
        async with db.transaction():
            person = await people.set_active(db, person_id, body.active, principal.actor)
    except people.PeopleError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return _person(person)


@router.get("/tokens", response_model=list[TokenPublic])
async def list_tokens(
    db: Db, _: AdminOrAuditor, person_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> list[TokenPublic]:
    """Tokens (never their secret), with expiry, revocation and last use."""
    return [_token(t) for t in await people.list_tokens(db, person_id)]


@router.post("/people/{person_id}/tokens", response_model=TokenIssued, status_code=201)
async def issue_token(db: Db, principal: Admin, person_id: RowId, body: TokenCreate) -> TokenIssued:
    """A new token for the person; the answer is the only place its secret appears."""
    try:
        async with db.transaction():
            issued = await people.issue_token(
                db,
                person_id,
                timedelta(seconds=body.ttl_s),
                body.name,
                principal.actor,
                datetime.now(UTC),
            )
    except people.PeopleError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return TokenIssued(**_token(issued.token).model_dump(), token=issued.secret)


@router.delete("/tokens/{token_id}", response_model=TokenPublic)
async def revoke_token(db: Db, principal: Admin, token_id: RowId) -> TokenPublic:
    """Refused from now on; kept on record."""
    try:
        async with db.transaction():
            token = await people.revoke_token(db, token_id, principal.actor, datetime.now(UTC))
    except people.PeopleError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return _token(token)
