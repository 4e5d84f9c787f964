"""Bearer tokens. The bootstrap token is an administrator's, accepted from start-up."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="API token")


def token_is_valid(request: Request, token: str | None) -> bool:
    if not token:
        return False
    expected: str = request.app.state.runtime.settings.bootstrap_token.get_secret_value()
    return hmac.compare_digest(token.encode(), expected.encode())


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's identity, for the record; 401 without a valid token."""
    token = credentials.credentials if credentials is not None else None
    if not token_is_valid(request, token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "admin:bootstrap"


Caller = Annotated[str, Depends(require_token)]
