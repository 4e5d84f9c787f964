"""What the API's routes see of the gateway (`server.ApiServer` makes it)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from offsite.casework import commands
from offsite.casework.alerts import AlertHub
from offsite.config import Settings
from offsite.runtime import Runtime

R = TypeVar("R")


@dataclass
class Api:
    """What the routes see of the gateway: everything here is used on the API's loop."""

    runtime: Runtime
    """Read only for plain values (settings, metrics, status); its coroutines run on the
    gateway's loop, through `on_gateway`."""
    gateway_loop: asyncio.AbstractEventLoop
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    hub: AlertHub

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    async def on_gateway(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run a coroutine of the runtime on the gateway's loop and wait for it here."""
        future = asyncio.run_coroutine_threadsafe(coro, self.gateway_loop)
        return await asyncio.wrap_future(future)

    async def send_command(self, **what: Any) -> commands.Command:
        """`Runtime.send_command`, which publishes on the gateway's MQTT connection."""
        return await self.on_gateway(self.runtime.send_command(**what))
