"""The API served from a thread and event loop of its own.

Under load the gateway's loop is busy decoding, judging and writing most of the time. An
alert's notification read on that loop waited for a turn of it, and its WebSocket frame for
another: measured under `offsite bench ingest`, 17 to 43 ms from the alert's commit to its
fan-out at half load. Here the API, its alert stream and their database connections run on
a loop in a thread of their own, which needs only the interpreter's lock between its reads
and writes (handed over within `SWITCH_INTERVAL_S`, set by `offsite run`).

What the routes need of the gateway is `Api`: the settings, the metrics, a pool and an
alert hub of the API's own loop, and the few calls that must run on the gateway's loop
(sending a command goes out on the gateway's MQTT connection) bridged there.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Generator
from typing import Any, Self

import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from offsite.api.app import create_app
from offsite.api.context import Api
from offsite.casework.alerts import AlertHub
from offsite.runtime import Runtime


class QuietServer(uvicorn.Server):
    """Signals are handled by `offsite run`, so that shutdown closes the runtime first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiServer:
    """`async with ApiServer(runtime, config) as api:` serves the API (`config(app)` says
    where and how) from a thread of its own until the block ends or `stop` is called;
    `api.port` is the port it listens on, `await api.wait()` returns when it has stopped."""

    def __init__(self, runtime: Runtime, config: Callable[[FastAPI], uvicorn.Config]) -> None:
        self._runtime = runtime
        self._config = config
        self._thread = threading.Thread(target=self._main, name="offsite-api", daemon=True)
        self._caller: asyncio.AbstractEventLoop | None = None
        self._started: asyncio.Future[int] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._server: QuietServer | None = None
        self._stop_asked = False
        self.port = 0

    async def __aenter__(self) -> Self:
        self._caller = asyncio.get_running_loop()
        self._started = self._caller.create_future()
        self._stopped = self._caller.create_future()
        self._thread.start()
        try:
            self.port = await self._started
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    def stop(self) -> None:
        """Ask the server to stop (from any thread); `wait` for it."""
        self._stop_asked = True
        if self._server is not None:
            self._server.should_exit = True

    async def wait(self) -> None:
        assert self._stopped is not None
        await asyncio.shield(self._stopped)

    async def _close(self) -> None:
        self.stop()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    # on the API's thread

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the caller, which decides
            self._report(self._started, exc)
            self._report(self._stopped, exc)
        else:
            self._report(self._stopped, None)

    def _report(self, future: asyncio.Future[Any] | None, outcome: Any) -> None:
        assert self._caller is not None
        assert future is not None

        def settle() -> None:
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the caller's loop has closed
            self._caller.call_soon_threadsafe(settle)

    async def _serve(self) -> None:
        assert self._caller is not None
        runtime = self._runtime
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            runtime.database_url, min_size=2, max_size=10, open=False, name="offsite-api"
        )
        hub = AlertHub(runtime.database_url)
        hub_task: asyncio.Task[None] | None = None
        try:
            await pool.open(wait=True, timeout=30)
            hub_task = asyncio.create_task(hub.run(), name="alert-hub")
            await asyncio.wait_for(hub.ready.wait(), 30)
            api = Api(runtime, self._caller, pool, hub)
            server = QuietServer(self._config(create_app(api)))
            self._server = server
            server.should_exit = self._stop_asked
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():  # noqa: ASYNC110 - no event in uvicorn
                await asyncio.sleep(0.02)
            if task.done():
                task.result()
                raise RuntimeError("the API server stopped before it started")
            self._report(self._started, server.servers[0].sockets[0].getsockname()[1])
            await task
        finally:
            if hub_task is not None:
                hub_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await hub_task
            await pool.close(timeout=5)
