"""Who is calling and what they may do.

Authentication: a bearer token, either the bootstrap token from the settings (the first
administrator, actor `admin:bootstrap`) or a person's token `ofs_<id>_<secret>` from the
`api_tokens` table (hashed, expiring, revocable; `offsite.access.people`). A missing, unknown,
expired or revoked token answers 401.

Roles: `admin` everything; `duty` (duty officer) reads everything and acts on clues, cases
and commands, but does not manage people; `department` (department officer) reads and acts
only on what was routed to their department (`offsite.access.scope`); `auditor` reads
everything and changes nothing.

The convention for every route (a test iterates over `app.routes` and fails for a route
without one, `tests/test_access.py`):

1. Declare who may call it with one of the annotated principals below, never a bare token
   check: `Reader` (every role; GETs), `Actor` (admin, duty, department; POSTs on casework),
   `Admin` (admin; people and tokens), or `Depends(allow(...))` for another set. A role not
   allowed gets 403. A new router takes `responses=AUTH_RESPONSES` (401 and 403 in OpenAPI).
2. If the route touches a clue, case, evidence, command or device by id, call
   `await require_visible(db, principal, "clue", clue_id)` first (in a step: inside its
   transaction, with `lock=True`, so a transfer cannot slip in between). For a department
   officer, an object outside their department answers 404 with the same message as one that
   does not exist, so existence does not leak. A list filters with
   `scope.routed_to(principal.scope)` or `scope.device_supervised(...)` in its WHERE clause.
3. Record `principal.actor` (`person:<id>:<name>`) as the actor of anything written.
4. Add the route to the expectations of `tests/test_access.py`.

`Caller` (one bootstrap token, actor "admin:bootstrap") is gone: a route written against it
becomes `principal: Actor` (or `Reader`) and passes `principal.actor` where it passed `caller`.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from offsite.access import people, scope
from offsite.access.people import BOOTSTRAP, ROLES, Principal, Refused, Role
from offsite.api.context import Api

__all__ = [
    "AUTH_RESPONSES",
    "ROLES",
    "Actor",
    "Admin",
    "Allow",
    "Principal",
    "Reader",
    "allow",
    "principal_for",
    "require_visible",
]

_bearer = HTTPBearer(auto_error=False, description="API token")


async def principal_for(connection: HTTPConnection, token: str | None) -> Principal | Refused:
    """The principal of a bearer token, or why it is refused (also for the WebSocket)."""
    if not token:
        return Refused("a valid bearer token is required")
    api: Api = connection.app.state.api
    expected: str = api.settings.bootstrap_token.get_secret_value()
    if hmac.compare_digest(token.encode(), expected.encode()):
        return BOOTSTRAP
    # A connection of its own, returned at once: the route's connection stays outside any
    # transaction until the route opens one.
    async with api.pool.connection() as conn:
        found = await people.authenticate(conn, token, datetime.now(UTC))
    return found if found is not None else Refused("a valid bearer token is required")


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller; 401 without a valid token."""
    found = await principal_for(request, credentials.credentials if credentials else None)
    if isinstance(found, Refused):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, found.reason, headers={"WWW-Authenticate": "Bearer"}
        )
    return found


class Allow:
    """A dependency that lets the given roles through and answers 403 to the others; the
    roles stay readable on the route (`tests/test_access.py` reads them)."""

    def __init__(self, *roles: Role) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown or not roles:
            raise ValueError(f"roles must be among {ROLES}, got {roles}")
        self.roles = frozenset(roles)

    async def __call__(self, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in self.roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"the {principal.role} role may not do this"
            )
        return principal


def allow(*roles: Role) -> Allow:
    return Allow(*roles)


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid bearer token (missing, unknown, expired or revoked)"},
    403: {"description": "the caller's role may not do this"},
}
"""For the OpenAPI schema of every router behind `allow(...)`."""

Reader = Annotated[Principal, Depends(allow("admin", "duty", "department", "auditor"))]
"""Reads: every role (a department officer's reads are scoped by the route)."""
Actor = Annotated[Principal, Depends(allow("admin", "duty", "department"))]
"""Casework actions: not the auditor."""
Admin = Annotated[Principal, Depends(allow("admin"))]
"""People and tokens."""
AdminOrAuditor = Annotated[Principal, Depends(allow("admin", "auditor"))]
"""Reading who has access: administrators and auditors."""


async def require_visible(
    db: psycopg.AsyncConnection[Any],
    principal: Principal,
    kind: scope.Kind,
    object_id: str,
    detail: str | None = None,
    *,
    lock: bool = False,
) -> None:
    """404 when the object is outside a department officer's scope, with the message of one
    that does not exist (`detail`, default `no <kind> '<id>'`). In a step, `lock=True` holds
    the row (`FOR UPDATE`) so that what was checked is what is changed."""
    if not await scope.visible(db, kind, principal.scope, object_id, lock=lock):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail or f"no {kind} {object_id!r}")
