"""PostgreSQL LISTEN with one reconnect loop, for every process that follows a channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

_LOG = logging.getLogger(__name__)

OnConnection = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
OnWake = Callable[[psycopg.AsyncConnection[Any], list[str]], Awaitable[None]]
"""Called with the payloads of the notifications that woke it (none after a quiet poll)."""


async def listen_forever(
    conninfo: str,
    channel: str,
    *,
    on_connected: OnConnection,
    on_wake: OnWake,
    poll_s: float | None = None,
) -> None:
    """LISTEN on `channel` until cancelled, reconnecting with backoff.

    `on_connected` runs after each (re)connection, `on_wake` after each notification and,
    with `poll_s`, at least that often as a safety net for a missed one. Both may use the
    connection: the notification generator has returned by then (it holds the connection
    while it waits).
    """
    delay = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                await on_connected(conn)
                delay = 0.5
                while True:
                    payloads = [
                        n.payload async for n in conn.notifies(timeout=poll_s, stop_after=1)
                    ]
                    await on_wake(conn, payloads)
        except psycopg.OperationalError as exc:
            _LOG.warning(
                "listener on %s lost the database (%s); retry in %.1f s", channel, exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
