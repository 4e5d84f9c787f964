"""The live alert stream: alerts are rows with a sequence number, announced by NOTIFY.

Every process that serves `/api/v1/alerts/live` listens on the channel and reads the alerts
table from the last sequence number it saw, so a missed notification, a reconnect to the
database or several gateway workers writing alerts lose nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from offsite.access.scope import alert_filter
from offsite.casework.service import ALERT_CHANNEL
from offsite.notify import listen_forever

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Alert:
    seq: int
    type: str
    at: str
    body: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": self.at, **self.body}


class SubscriberLaggingError(Exception):
    """A live client fell too far behind; it reconnects and resumes from its last seq."""


class Subscription:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Alert | None] = asyncio.Queue(maxsize)

    async def get(self) -> Alert:
        alert = await self.queue.get()
        if alert is None:
            raise SubscriberLaggingError
        return alert


async def read_alerts(
    conn: psycopg.AsyncConnection[Any], after: int, limit: int = 1000, department: str | None = None
) -> list[Alert]:
    """Alerts after `after`; with a department, only those in its scope (`access.scope`)."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT seq, type, at, body FROM alerts WHERE seq > %s AND {} ORDER BY seq LIMIT %s"
        ).format(alert_filter(department)),
        (after, limit),
    )
    return [Alert(int(r[0]), str(r[1]), r[2].isoformat(), dict(r[3])) for r in await cur.fetchall()]


class AlertHub:
    """Fans alerts out to live subscribers; owned by the runtime (`run()` as one task)."""

    def __init__(self, conninfo: str, subscriber_queue: int = 1000) -> None:
        self._conninfo = conninfo
        self._subscribers: set[Subscription] = set()
        self._queue_size = subscriber_queue
        self.last_seq = 0
        self.sent = 0
        self.ready = asyncio.Event()

    def subscribe(self) -> Subscription:
        sub = Subscription(self._queue_size)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def run(self) -> None:
        """Listen until cancelled; a second's poll backs up any missed notification."""
        await listen_forever(
            self._conninfo,
            ALERT_CHANNEL,
            on_connected=self._connected,
            on_wake=self._catch_up,
            poll_s=1.0,
        )

    async def _connected(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not self.ready.is_set():
            cur = await conn.execute("SELECT coalesce(max(seq), 0) FROM alerts")
            row = await cur.fetchone()
            self.last_seq = int(row[0]) if row else 0
        await self._catch_up(conn)
        self.ready.set()

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            alerts = await read_alerts(conn, self.last_seq)
            for alert in alerts:
                self.last_seq = alert.seq
                self._fan_out(alert)
            if len(alerts) < 1000:
                return

    def _fan_out(self, alert: Alert) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(alert)
                self.sent += 1
            except asyncio.QueueFull:
                # Never grow without bound for a slow client: drop it, it resumes by seq.
                self._subscribers.discard(sub)
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                sub.queue.put_nowait(None)
