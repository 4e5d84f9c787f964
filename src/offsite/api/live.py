"""`/api/v1/alerts/live`: alerts pushed as they happen, resumable by sequence number.

Browsers cannot set headers on a WebSocket, so the token may also come as `?token=`.
A client that passes `?after=N` first receives every alert after N, then the live ones,
with no gap and no repeat between the two. A department officer receives only the alerts
whose clue or case was routed to their department (`offsite.access.scope.alert_visible`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect, status

from offsite.access.people import Principal, Refused
from offsite.access.scope import alert_visible
from offsite.api.auth import principal_for
from offsite.api.context import Api
from offsite.casework.alerts import AlertHub, SubscriberLaggingError, Subscription, read_alerts

router = APIRouter()


@router.websocket("/api/v1/alerts/live")
async def alerts_live(
    websocket: WebSocket,
    token: str | None = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> None:
    header = websocket.headers.get("authorization", "")
    bearer = header[7:] if header.lower().startswith("bearer ") else None
    credential = bearer or token
    principal = await principal_for(websocket, credential)
    if isinstance(principal, Refused):
        # Accept, then close with a reason: a browser sees a close code, not an HTTP 403.
        await websocket.accept()
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid token")
        return
    api: Api = websocket.app.state.api
    hub: AlertHub = api.hub
    await websocket.accept()
    sub = hub.subscribe()  # before the replay, so nothing falls between the two
    sender = asyncio.create_task(_send(websocket, api, principal, sub, after))
    receiver = asyncio.create_task(_until_disconnect(websocket))
    recheck = asyncio.create_task(
        _until_refused(websocket, credential, api.settings.live_token_recheck_s)
    )
    tasks = {sender, receiver, recheck}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if recheck in done:
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason=recheck.result())
    finally:
        hub.unsubscribe(sub)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until_refused(websocket: WebSocket, token: str | None, every_s: float) -> str:
    """A stream outlives the check at its opening: a token revoked or expired since, or its
    person deactivated, ends the stream within `every_s`. Returns why."""
    while True:
        await asyncio.sleep(every_s)
        found = await principal_for(websocket, token)
        if isinstance(found, Refused):
            return found.reason


async def _until_disconnect(websocket: WebSocket) -> None:
    """Clients send nothing we need; reading is how a closed connection is noticed."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _send(
    websocket: WebSocket,
    api: Api,
    principal: Principal,
    sub: Subscription,
    after: int | None,
) -> None:
    hub = api.hub
    try:
        last = hub.last_seq if after is None else after
        await websocket.send_json({"type": "hello", "last_seq": hub.last_seq})
        if after is not None:
            while True:
                async with api.pool.connection() as conn:
                    missed = await read_alerts(conn, last, department=principal.scope)
                for alert in missed:
                    await websocket.send_json(alert.to_json())
                    last = alert.seq
                if len(missed) < 1000:
                    break
        while True:
            alert = await sub.get()
            if alert.seq <= last or not alert_visible(principal.scope, alert.body):
                continue
            await websocket.send_json(alert.to_json())
            last = alert.seq
    except SubscriberLaggingError:
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER, reason="resume with after")
    except (WebSocketDisconnect, RuntimeError):
        return
