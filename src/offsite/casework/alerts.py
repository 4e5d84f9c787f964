"""The live alert stream: alerts are rows with a sequence number, announced by NOTIFY.

Every process that serves `/api/v1/alerts/live` listens on the channel. A notification
carries its alert (when it fits in one): the next alert in sequence goes out as it comes,
without reading the table. Otherwise the process reads the alerts table from the last
sequence number it sent, so a missed notification, a reconnect to the database or several
gateway workers writing alerts lose nothing.

Sequence numbers are taken when an alert is written, not when its transaction commits, so
a later alert can be visible before an earlier one. At such a gap the stream waits for the
earlier one, up to `GAP_WAIT_S` (a gap that outlasts it is a rolled-back transaction's
number, and is passed over), so that alerts go out in sequence and a client resuming after
the last number it saw misses none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import psycopg
from psycopg import sql

from offsite.access.scope import alert_filter
from offsite.casework.service import ALERT_CHANNEL
from offsite.gateway.payloads import EPOCH
from offsite.notify import listen_forever

_LOG = logging.getLogger(__name__)
GAP_WAIT_S = 3.0
"""How long the stream waits at a gap in sequence numbers for an alert still committing."""


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
    return [
        Alert(int(r[0]), str(r[1]), r[2].astimezone(UTC).isoformat(), dict(r[3]))
        for r in await cur.fetchall()
    ]


def alert_of_notification(payload: str) -> Alert | None:
    """The alert a notification carries (`append_alert`), or None when it carries only a
    sequence number (an alert too large for a notification)."""
    if not payload.startswith("{"):
        return None
    data = json.loads(payload)
    at = EPOCH + timedelta(microseconds=int(data["at_us"]))
    return Alert(int(data["seq"]), str(data["type"]), at.isoformat(), dict(data["body"]))


class AlertHub:
    """Fans alerts out to live subscribers; owned by the runtime (`run()` as one task)."""

    def __init__(self, conninfo: str, subscriber_queue: int = 1000) -> None:
        self._conninfo = conninfo
        self._subscribers: set[Subscription] = set()
        self._queue_size = subscriber_queue
        self.last_seq = 0
        self._gap_since: float | None = None
        self._behind = False
        """The last read stopped at a gap: alerts after it wait in the table."""
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
            on_wake=self._woken,
            poll_s=1.0,
        )

    async def _connected(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not self.ready.is_set():
            cur = await conn.execute("SELECT coalesce(max(seq), 0) FROM alerts")
            row = await cur.fetchone()
            self.last_seq = int(row[0]) if row else 0
        await self._catch_up(conn)
        self.ready.set()

    async def _woken(self, conn: psycopg.AsyncConnection[Any], payloads: list[str]) -> None:
        """Send the alerts the notifications carry while they come in sequence; read the
        table for anything else."""
        for payload in payloads:
            alert = alert_of_notification(payload)
            if alert is not None and alert.seq <= self.last_seq:
                continue  # sent already, read from the table
            if alert is None or alert.seq != self.last_seq + 1:
                break
            self._send(alert)
        else:
            if payloads and not self._behind:
                return
        await self._catch_up(conn)

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._behind = False
        while True:
            alerts = await read_alerts(conn, self.last_seq)
            for alert in alerts:
                if alert.seq != self.last_seq + 1 and not self._gap_passed():
                    self._behind = True  # an earlier alert may still be committing
                    return
                self._send(alert)
            if len(alerts) < 1000:
                return

    def _gap_passed(self) -> bool:
        """True once the stream has waited `GAP_WAIT_S` at the current gap."""
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        if now - self._gap_since < GAP_WAIT_S:
            return False
        _LOG.warning("alerts after %d: a gap in sequence passed over", self.last_seq)
        return True

    def _send(self, alert: Alert) -> None:
        self._gap_since = None
        self.last_seq = alert.seq
        self._fan_out(alert)

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
