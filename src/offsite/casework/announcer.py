"""Clues announced from a thread of their own.

Under load the gateway's event loop is busy decoding, judging and writing most of the time,
and each of its turns can last milliseconds. A finding handed to a task on that loop waits
for a turn before it is announced, and for another after each round trip to the database.
The announcer takes findings straight from the detectors (`submit`, callable from any
thread) and announces them on an event loop of its own, in its own thread, with its own
connections: between its round trips it needs only the interpreter's lock, which a busy
thread hands over within the switch interval (`SWITCH_INTERVAL_S`, set by `offsite run`).
The caller hears back on its own loop (`on_announced`), in submission order.

An announcement commits without waiting for the log to reach the disk (`synchronous_commit`
off on the announcer's connections): its notification, and so the alert, goes out at the
commit. Under ingest the log is flushed behind the writers' large transactions, and during
a checkpoint's sync the disk is slow for all of them; a notifying transaction also holds
the database's one notification lock until its commit is flushed (`service.flush_log`).
Announcements were seen waiting 75 to 130 ms on the log and on that lock. The announcer then
flushes on the same connection before it reports the group announced, and the readings
behind a clue are acknowledged to the broker only after that report, so nothing is
acknowledged on the strength of a clue the database could still lose. A connection lost
between the two (the database restarting may have lost the commit) makes the group be
announced again, unless one of the clues it opened is found recorded: the group's
transaction survived whole, and is not done twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, Final, Generic, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from offsite.casework.directory import DeviceInfo
from offsite.casework.service import Casework, clue_recorded, flush_log
from offsite.detectors.findings import Finding

T = TypeVar("T")
R = TypeVar("R")

_LOG = logging.getLogger(__name__)

SWITCH_INTERVAL_S: Final = 0.0005
"""How long a thread waits for the interpreter's lock before a busy thread is asked to let
go (Python's default is 5 ms: two round trips would wait up to 10 ms)."""

GROUP: Final = 64
"""Findings waiting together are announced together, in one transaction, up to this many."""

Item = tuple[Finding, DeviceInfo, T]
"""A finding, its device, and what the caller wants back with it."""


class Announcer(Generic[T]):
    """Announces submitted findings in order, on a loop in a thread of its own; `start`
    before use, `close` after.

    `on_announced(items, opened, at)` is called on the loop that started the announcer, once
    per group, in submission order: `opened[i]` tells whether `items[i]` opened a new clue
    (which then waits for its evidence), `at` is the `time.time()` of the commit. A finding
    the database refuses is logged and reported as not opened; while the database is away,
    the announcer waits for it, and what is submitted meanwhile waits too."""

    def __init__(
        self,
        conninfo: str,
        deadlines: Mapping[str, float],
        on_announced: Callable[[Sequence[Item[T]], Sequence[bool], float], None],
    ) -> None:
        self._conninfo = conninfo
        self._deadlines = dict(deadlines)
        self._on_announced = on_announced
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="offsite-announcer", daemon=True
        )
        self._caller: asyncio.AbstractEventLoop | None = None
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._casework: Casework | None = None
        self._waiting: collections.deque[Item[T]] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._caller = asyncio.get_running_loop()
        self._thread.start()
        await self._there(self._open())
        self._runner = await self._there(self._spawn())

    def submit(self, items: Sequence[Item[T]]) -> None:
        """Queue findings for announcement; returns at once, from any thread."""
        if items:
            self._loop.call_soon_threadsafe(self._take, list(items))

    async def announce(self, findings: Sequence[tuple[Finding, DeviceInfo]]) -> list[bool]:
        """Announce findings now, together, on the announcer's loop (`submit` is the way in
        for the detectors; this is for one-off callers). Same refusals as `submit`."""
        if self._casework is None:
            raise RuntimeError("announcer not started")
        return await self._there(self._announce(findings))

    async def close(self) -> None:
        if self._thread.is_alive():
            if self._runner is not None:
                await self._there(_cancelled(self._runner))
            if self._pool is not None:
                await self._there(self._pool.close(timeout=5))
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 10)
        if not self._thread.is_alive():
            self._loop.close()

    # on the announcer's loop

    async def _open(self) -> None:
        self._arrived = asyncio.Event()
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=2,
            open=False,
            name="offsite-announcer",
            # a group of openings is one message, committed as one transaction by the
            # server (`Casework._open_all`): no BEGIN of its own to wait for
            kwargs={"autocommit": True},
            configure=_commit_without_flush,
        )
        await pool.open(wait=True, timeout=30)
        self._pool = pool
        self._casework = Casework(pool, timedelta(0), deadlines=self._deadlines)

    async def _spawn(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._run(), name="offsite-announcer")

    def _take(self, items: list[Item[T]]) -> None:
        self._waiting.extend(items)
        assert self._arrived is not None
        self._arrived.set()

    async def _run(self) -> None:
        assert self._arrived is not None
        assert self._caller is not None
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            group = [self._waiting.popleft() for _ in range(min(GROUP, len(self._waiting)))]
            try:
                opened = await self._announce([(f, device) for f, device, _ in group])
            except Exception:  # a fault of ours: the rest must still be announced
                _LOG.exception("%d finding(s) could not be announced", len(group))
                opened = [False] * len(group)
            self._caller.call_soon_threadsafe(self._on_announced, group, opened, time.time())

    async def _announce(self, findings: Sequence[tuple[Finding, DeviceInfo]]) -> list[bool]:
        """Findings raised together in one transaction; if the database refuses the group,
        each on its own, so that one it refuses does not hold back the others' alerts.
        Returns once what was committed is on disk."""
        what = (
            f"finding {findings[0][0].key}"
            if len(findings) == 1
            else f"{len(findings)} findings raised together"
        )
        opened = await _persisting(what, partial(self._durably, findings, [False] * len(findings)))
        if opened is not None:
            return opened
        if len(findings) == 1:
            return [False]
        alone = [
            await _persisting(f"finding {f.key}", partial(self._durably, [(f, d)], [False]))
            for f, d in findings
        ]
        return [one is not None and one[0] for one in alone]

    async def _durably(
        self, findings: Sequence[tuple[Finding, DeviceInfo]], seen: list[bool]
    ) -> list[bool]:
        """Announce, then flush the log on the same connection. `seen` carries which clues
        the last try opened, for a try after a lost connection: that try's transaction
        survived whole or not at all, and one of its clues tells which. If it survived, it
        is not done again (its alerts would go out twice); if not, it is redone."""
        assert self._pool is not None
        assert self._casework is not None
        async with self._pool.connection() as conn:
            survived = False
            if any(seen):
                key = next(f.key for (f, _), new in zip(findings, seen, strict=True) if new)
                survived = await clue_recorded(conn, key)
            if not survived:
                seen[:] = await self._casework.announce_many(findings, conn)
            await flush_log(conn)
        return list(seen)

    async def _there(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run `coro` on the announcer's loop and wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))


async def _commit_without_flush(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET synchronous_commit = off")


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait until it has finished."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _persisting(what: str, step: Callable[[], Awaitable[R]]) -> R | None:
    """Run `step`, waiting for the database while it is away; a step the database refuses
    is logged and skipped (None)."""
    delay = 0.2
    while True:
        try:
            return await step()
        except (psycopg.OperationalError, TimeoutError) as exc:
            _LOG.warning("announcing waits for the database (%s)", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except psycopg.Error:
            _LOG.exception("%s could not be recorded", what)
            return None
