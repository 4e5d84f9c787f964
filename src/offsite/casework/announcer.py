"""Clues announced from a thread of their own.

Under load the gateway's event loop is busy decoding and judging most of the time, and each
await of an announcement (its two round trips to the database, the connection) waits for
the loop's turn. The announcer runs `Casework.announce_many` on an event loop of its own,
in its own thread, with its own connections: between its round trips it needs only the
interpreter's lock, which a busy thread hands over within the switch interval
(`SWITCH_INTERVAL_S`, set by `offsite run`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from offsite.casework.directory import DeviceInfo
from offsite.casework.service import Casework
from offsite.detectors.findings import Finding

T = TypeVar("T")

SWITCH_INTERVAL_S: Final = 0.0005
"""How long a thread waits for the interpreter's lock before a busy thread is asked to let
go (Python's default is 5 ms: two round trips would wait up to 10 ms)."""


class Announcer:
    """`announce_many` on a loop in a thread of its own; `start` before use, `close` after."""

    def __init__(self, conninfo: str, deadlines: Mapping[str, float]) -> None:
        self._conninfo = conninfo
        self._deadlines = dict(deadlines)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="offsite-announcer", daemon=True
        )
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._casework: Casework | None = None

    async def start(self) -> None:
        self._thread.start()
        await self._there(self._open())

    async def announce_many(self, findings: Sequence[tuple[Finding, DeviceInfo]]) -> list[bool]:
        """`Casework.announce_many`, run on the announcer's loop; its errors are raised here."""
        if self._casework is None:
            raise RuntimeError("announcer not started")
        return await self._there(self._casework.announce_many(findings))

    async def close(self) -> None:
        if self._thread.is_alive():
            if self._pool is not None:
                await self._there(self._pool.close(timeout=5))
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _open(self) -> None:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo, min_size=1, max_size=2, open=False, name="offsite-announcer"
        )
        await pool.open(wait=True, timeout=30)
        self._pool = pool
        self._casework = Casework(pool, timedelta(0), deadlines=self._deadlines)

    async def _there(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the announcer's loop and wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))
