"""The running gateway: one owner for the pool, the MQTT connection and every task.

Data path: MQTT (paho thread) -> bounded hand-off -> decode -> batch write (COPY, commit)
-> acknowledge to the broker -> detectors -> findings queue -> casework (clue, evidence,
case, alert) -> NOTIFY -> live alert stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Self, TypeVar

import msgspec
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from offsite.casework import commands
from offsite.casework.announcer import Announcer, Item
from offsite.casework.cases import mark_overdue_tasks
from offsite.casework.credit import Assessment, assess
from offsite.casework.directory import DeviceInfo, read_directory
from offsite.casework.ledger import SigningKey, load_signing_key
from offsite.casework.ledger import checkpoint as ledger_checkpoint
from offsite.casework.lifecycle import mark_overdue
from offsite.casework.service import Casework
from offsite.config import Settings
from offsite.detectors.batch import batch_from_readings, concat_batches, gas_batch
from offsite.detectors.engine import ScalarEngine
from offsite.detectors.findings import Finding
from offsite.detectors.flapping import FlappingDetector
from offsite.detectors.rulepack import (
    DeviceProfile,
    RulePack,
    builtin_packs,
    load_overrides,
    retune,
)
from offsite.detectors.silence import SilenceDetector
from offsite.frames import FRAME_TOPIC, FrameIntake, FrameSettings, camera_configs
from offsite.gateway.columns import GasColumns
from offsite.gateway.decode import (
    IDENTITY_MISMATCH,
    Decoded,
    KnownDevice,
    Refusal,
    decode_message,
    gas_readings,
    identity_refusal,
    latest_ms,
    parse_topic,
)
from offsite.gateway.equipment_payloads import EquipmentReading
from offsite.gateway.errors import BrokerUnavailableError
from offsite.gateway.flooding import RATE_LIMITED, FloodGuard, Verdict
from offsite.gateway.mqtt import Inbound, MqttGateway, MqttOptions, user_properties
from offsite.gateway.payloads import CommandAck, GasWire, epoch_us
from offsite.ingest.schema import Flavour, migrate
from offsite.ingest.writer import BatchResult, StatusChange, write_batch
from offsite.metrics import Metrics
from offsite.notify import listen_forever

_LOG = logging.getLogger(__name__)
T = TypeVar("T")


def rule_packs(settings: Settings) -> list[RulePack]:
    """The built-in packs, with the gas alarm levels and delay the settings give (the
    operator's written set points; a subject's risk tier then tightens them)."""
    packs = []
    for pack in builtin_packs():
        if pack.name == "gas":
            for rule, threshold in (
                ("gas.lel.level1", settings.gas_level1_pct),
                ("gas.lel.level2", settings.gas_level2_pct),
            ):
                pack = retune(pack, rule, threshold=threshold, confirm_s=settings.gas_confirm_s)  # noqa: PLW2901
        packs.append(pack)
    return packs


_REGISTRY_CHANNEL = "offsite_registry"


_SNAPSHOT_SLICE = 100
"""Device snapshots taken between two yields to the event loop at a checkpoint."""
_DECODE_SLICE = 250
"""Messages decoded between two yields to the event loop."""
_ADMITTED: Final = Verdict.ADMITTED
_UNANNOUNCED_MAX = 10_000
"""Findings handed to the announcer and not yet announced, past which detection waits."""


_Raised = tuple[float, "asyncio.Future[None] | None"]
"""When a finding was raised, and the commit of the readings behind it (if any)."""


@dataclass(slots=True)
class _DecodedBatch:
    now: datetime
    gas_readings: list[GasWire] = field(default_factory=list)
    gas_runs: list[tuple[str, int]] = field(default_factory=list)
    """The device of `gas_readings`, (device, count) a message, in order."""
    equipment: list[tuple[str, EquipmentReading]] = field(default_factory=list)
    acks: list[tuple[str, CommandAck]] = field(default_factory=list)
    gas_columns: GasColumns | None = None
    """The gas readings as columns, made once for the writer and the detectors."""
    refusals: list[Refusal] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    """Device time of each message's first reading, for publish-to-commit latency."""
    flagged: list[Finding] = field(default_factory=list)
    """Devices found flooding in this batch (raised after its commit, with the rest)."""
    raised: int = 0
    """`_Unannounced.added` of the last finding this batch raised (0: none): the batch is
    acknowledged once it is announced."""

    @classmethod
    def merge(cls, parts: Sequence[_DecodedBatch]) -> _DecodedBatch:
        """Batches judged apart, written as one (received at the first one's time)."""
        if len(parts) == 1:
            return parts[0]
        columns = [p.gas_columns for p in parts if p.gas_columns is not None]
        return cls(
            now=parts[0].now,
            gas_readings=[r for p in parts for r in p.gas_readings],
            gas_runs=[r for p in parts for r in p.gas_runs],
            equipment=[e for p in parts for e in p.equipment],
            acks=[a for p in parts for a in p.acks],
            gas_columns=GasColumns.concat(columns) if columns else None,
            refusals=[r for p in parts for r in p.refusals],
            statuses=[s for p in parts for s in p.statuses],
            firsts=[t for p in parts for t in p.firsts],
            flagged=[f for p in parts for f in p.flagged],
            raised=max(p.raised for p in parts),
        )

    def gas_pairs(self) -> list[tuple[str, GasWire]]:
        """The gas readings as (device, reading)."""
        devices = (device_id for device_id, count in self.gas_runs for _ in range(count))
        return list(zip(devices, self.gas_readings, strict=True))


_Judged = tuple[list[Inbound], _DecodedBatch, "asyncio.Future[None]"]
"""A batch as received, decoded and judged, and the future its commit sets."""


def _all_of(parts: list[asyncio.Future[None]]) -> asyncio.Future[None]:
    """One future for a write of several batches: done, each part's is done; failed or
    cancelled, each part's is cancelled (their clues wait for a restart)."""
    if len(parts) == 1:
        return parts[0]
    whole: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(done: asyncio.Future[None]) -> None:
        ok = not done.cancelled() and done.exception() is None
        for part in parts:
            if ok:
                part.set_result(None)
            else:
                part.cancel()

    whole.add_done_callback(settle)
    return whole


class _Budget:
    """Messages judged and waiting for a writer: at most `limit`, past which the judging
    stage waits (and the rest waits, unacknowledged, in the gateway's bounded hand-off).
    A batch larger than the limit passes alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, messages: int) -> None:
        while self.used and self.used + messages > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += messages

    def give(self, messages: int) -> None:
        self.used -= messages
        self._freed.set()


class _Unannounced:
    """Findings handed to the casework and not yet announced, numbered as they enter its
    queue (which announces them in that order).

    A reading is acknowledged to the broker, and its device's detector state checkpointed,
    only once the findings it raised are announced: otherwise a gateway killed in between
    would lose the clue for good (the broker would not send the reading again, or the
    detectors, resumed past it, would pass over it)."""

    def __init__(self) -> None:
        self.added_n = 0
        self.announced_n = 0
        self._devices: Counter[str] = Counter()
        self._moved = asyncio.Event()

    def add(self, device_id: str) -> int:
        """Count a finding just put in the queue; its number."""
        self.added_n += 1
        self._devices[device_id] += 1
        return self.added_n

    def announced(self, device_ids: Sequence[str]) -> None:
        """The next findings of the queue, in order, are announced (or refused for good)."""
        self.announced_n += len(device_ids)
        for device_id in device_ids:
            self._devices[device_id] -= 1
            if not self._devices[device_id]:
                del self._devices[device_id]
        self._moved.set()
        self._moved = asyncio.Event()

    def pending(self, device_id: str) -> bool:
        return self._devices[device_id] > 0

    async def room(self, limit: int) -> None:
        """Wait until fewer than `limit` findings are waiting for their announcement."""
        while self.added_n - self.announced_n >= limit:
            await self._moved.wait()

    async def reach(self, number: int) -> None:
        """Wait until the findings up to `number` are announced."""
        while self.announced_n < number:
            await self._moved.wait()


class Runtime:
    """`async with Runtime(settings, database_url, mqtt_url) as rt:` runs the gateway."""

    def __init__(self, settings: Settings, database_url: str, mqtt_url: str | None) -> None:
        self.settings = settings
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.metrics = Metrics()
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            database_url, min_size=2, max_size=10, open=False, name="offsite"
        )
        self.flavour: Flavour = "postgres"
        self.directory: dict[str, DeviceInfo] = {}
        self._known: dict[str, KnownDevice] = {}
        self.packs = rule_packs(settings)
        overrides = load_overrides(settings.rule_overrides) if settings.rule_overrides else ()
        self.engine = ScalarEngine(self.packs, (), overrides)
        self.flapping = FlappingDetector.from_packs(self.packs)
        self.silence = SilenceDetector(settings.silent_after_intervals)
        self.flood: FloodGuard | None = (
            FloodGuard(
                settings.flood_factor,
                settings.flood_burst_messages,
                settings.flood_min_rate_per_s,
                settings.flood_quiet_s,
            )
            if settings.flood_factor > 0
            else None
        )
        self.frames = FrameIntake(
            FrameSettings(
                budget_fps=settings.video_budget_fps,
                workers=settings.video_workers,
                ring_seconds=settings.video_ring_s,
            ),
            self.metrics.registry,
            self._put_findings,
        )
        self.announcer: Announcer[_Raised] = Announcer(
            database_url, settings.clue_deadlines_s(), self._announced
        )
        self.casework = Casework(
            self.pool,
            timedelta(seconds=settings.evidence_before_s),
            frames=self.frames.frames,
            frames_before=timedelta(seconds=settings.video_evidence_before_s),
            max_frames=settings.video_evidence_frames,
            deadlines=settings.clue_deadlines_s(),
            merge_window=timedelta(seconds=settings.clue_merge_window_s),
        )
        secret = settings.ledger_signing_key
        self.ledger_key: SigningKey = load_signing_key(
            secret.get_secret_value() if secret else None, settings.mode, settings.data_dir
        )
        self._unannounced = _Unannounced()
        self._opened: asyncio.Queue[Item[_Raised]] = asyncio.Queue()
        """New clues, announced and waiting for their evidence (`_complete_loop`)."""
        self._dirty: set[str] = set()
        self.gateway: MqttGateway | None = None
        self.video_gateway: MqttGateway | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self.flavour = await asyncio.to_thread(migrate, self.database_url, self.settings.storage)
        _LOG.info("storage: %s", self.flavour)
        await self.pool.open(wait=True, timeout=30)
        try:
            await self.announcer.start()
            await self.refresh_directory()
            await self._seed_silence()
            await self.casework.complete_pending(self.directory)
            if self.mqtt_url is not None:
                host, port = self.settings.mqtt_host_port_of(self.mqtt_url)
                password = self.settings.mqtt_password
                tls = self.settings.mqtt_tls(self.mqtt_url)
                self.gateway = MqttGateway(
                    MqttOptions(
                        host=host,
                        port=port,
                        client_id=self.settings.mqtt_client_id,
                        protocol=self.settings.mqtt_protocol,
                        username=self.settings.mqtt_username,
                        password=password.get_secret_value() if password else None,
                        shared_group=self.settings.mqtt_shared_group,
                        capacity=self.settings.ingest_queue_messages,
                        tls=tls,
                    ),
                    asyncio.get_running_loop(),
                )
                await self.gateway.start()
                self._spawn(self._ingest_loop(self.gateway), "ingest")
                # Frames on a connection of their own: QoS 0, shed under overload, never in
                # the way of telemetry (frames.py).
                self.video_gateway = MqttGateway(
                    MqttOptions(
                        host=host,
                        port=port,
                        client_id=self.settings.mqtt_client_id + "-video",
                        protocol=self.settings.mqtt_protocol,
                        username=self.settings.mqtt_username,
                        password=password.get_secret_value() if password else None,
                        shared_group=self.settings.mqtt_shared_group,
                        capacity=2_000,
                        subscriptions=(FRAME_TOPIC,),
                        qos=0,
                        persistent=False,
                        tls=tls,
                    ),
                    asyncio.get_running_loop(),
                )
                await self.video_gateway.start()
                await self._resume_cameras()
                self._spawn(self.frames.run(self.video_gateway), "frames")
            self._spawn(self._complete_loop(), "casework")
            self._spawn(self._silence_loop(), "silence")
            self._spawn(self._registry_listener(), "registry-listener")
            self._spawn(self._partition_loop(), "partitions")
            self._spawn(self._checkpoint_loop(), "checkpoints")
            self._spawn(self._loop_lag(), "loop-lag")
            self._spawn(self._ledger_loop(), "ledger-checkpoints")
            self._spawn(self._credit_loop(), "credit")
            self._spawn(self._deadline_loop(), "clue-deadlines")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for gateway in (self.gateway, self.video_gateway):
            if gateway is not None:
                await gateway.stop()
        self.gateway = self.video_gateway = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # a task that died has been logged already (_task_done); stopping goes on
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        with contextlib.suppress(psycopg.Error, TimeoutError):
            await asyncio.wait_for(self.checkpoint(), 5)
            await asyncio.wait_for(self.checkpoint_cameras(), 5)
            # what was appended since the last checkpoint leaves signed
            await asyncio.wait_for(self.sign_ledger(), 5)
        await asyncio.to_thread(self.frames.close)
        await self.announcer.close()
        await self.pool.close(timeout=5)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _LOG.critical("task %s died", task.get_name(), exc_info=task.exception())

    async def refresh_directory(self) -> None:
        async with self.pool.connection() as conn:
            directory = await read_directory(conn)
        self.directory = directory
        self._known = {d.id: KnownDevice(d.id, d.domain, d.kind) for d in directory.values()}
        if self.flood is not None:
            self.flood.set_devices({d.id: d.expected_interval_s for d in directory.values()})
        self.engine.set_devices(
            DeviceProfile.of(d.id, d.kind, d.subject_id, d.risk_tier, d.attributes)
            for d in directory.values()
        )
        self.frames.set_cameras(
            camera_configs((d.id, d.kind, d.attributes) for d in directory.values())
        )
        _LOG.info("registry: %d active devices", len(directory))

    async def _seed_silence(self) -> None:
        """Resume silence tracking where the last run left it, from device_status."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT device_id, last_seen_at FROM device_status WHERE last_seen_at IS NOT NULL"
            )
            for device_id, last_seen in await cur.fetchall():
                info = self.directory.get(device_id)
                if info is not None:
                    self.silence.observe(device_id, info.expected_interval_s, last_seen)

    # ingest

    async def _ingest_loop(self, gateway: MqttGateway) -> None:
        """Two stages, each a task: one takes batches from the broker, decodes them and runs
        them through the detectors; the other writes them. The first runs ahead of the
        second by up to `ingest_queue_messages` messages (the hand-off's own bound, so at
        most twice that is held unacknowledged), so a slow commit does not hold back the
        next batch's detection.

        Each batch goes through the detectors as soon as it is decoded, in arrival order,
        before it is written: a clue is announced without waiting for the commit of the
        reading that fired it (that wait was most of an alert's latency under load). The
        reading is held, unacknowledged, until it is committed and its clue announced
        (`_Unannounced`), and the clue's evidence is fixed only after that commit
        (`_complete_loop`). After a crash the broker sends the
        unacknowledged readings again; the detectors, which remember the last reading they
        saw of each device, pass over those they had seen, and the database stores them."""
        judged: asyncio.Queue[_Judged] = asyncio.Queue()
        ahead = _Budget(self.settings.ingest_queue_messages)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._judge_loop(gateway, judged, ahead), name="ingest-judge")
                group.create_task(self._write_loop(gateway, judged, ahead), name="ingest-write")
        finally:
            while not judged.empty():
                judged.get_nowait()[2].cancel()  # never written: their clues wait for a restart

    async def _judge_loop(
        self, gateway: MqttGateway, judged: asyncio.Queue[_Judged], ahead: _Budget
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await gateway.get_batch(self.settings.ingest_batch_messages)
            self.metrics.backlog.set(gateway.backlog)
            decoded = await self._decode_batch(batch)
            committed: asyncio.Future[None] = loop.create_future()
            await self._detect(decoded, committed)
            await ahead.take(len(batch))
            judged.put_nowait((batch, decoded, committed))

    async def _write_loop(
        self, gateway: MqttGateway, judged: asyncio.Queue[_Judged], ahead: _Budget
    ) -> None:
        """Write batch N+1 while earlier batches are being written: up to
        `ingest_write_concurrency` at once, each on its own connection (one COPY keeps one
        database process busy; the database has more cores than that). The batches judged
        while a writer was awaited are written together, up to `ingest_batch_messages`
        (judging takes small batches, for latency; a transaction costs the same few round
        trips and a commit whatever its size). Whatever order the commits land in, batches
        are acknowledged in arrival order (MQTT wants PUBACKs in order)."""
        in_flight: collections.deque[tuple[asyncio.Task[None], asyncio.Future[None]]] = (
            collections.deque()
        )
        writers = self.settings.ingest_write_concurrency
        limit = self.settings.ingest_batch_messages
        linger = self.settings.ingest_write_linger_s
        loop = asyncio.get_running_loop()
        try:
            while True:
                parts = [await judged.get()]
                try:
                    deadline = loop.time() + linger
                    if len(in_flight) >= writers:
                        # at most `writers` batches writing, this one included
                        await asyncio.shield(in_flight[-writers][1])
                    while len(in_flight) > writers:
                        # ...and one more committed and being acknowledged
                        await in_flight.popleft()[0]
                    size = await self._gather(judged, parts, limit, deadline)
                except asyncio.CancelledError:
                    for part in parts:
                        part[2].cancel()  # never written: their clues wait for a restart
                    raise
                ahead.give(size)
                batch = [item for part in parts for item in part[0]]
                decoded = _DecodedBatch.merge([part[1] for part in parts])
                committed = _all_of([part[2] for part in parts])
                previous = in_flight[-1] if in_flight else None
                task = asyncio.create_task(
                    self._store(gateway, batch, decoded, committed, previous)
                )
                in_flight.append((task, committed))
        finally:
            for task, _ in in_flight:
                task.cancel()
            for task, _ in in_flight:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @staticmethod
    async def _gather(
        judged: asyncio.Queue[_Judged], parts: list[_Judged], limit: int, deadline: float
    ) -> int:
        """Add judged batches to `parts` until they hold `limit` messages or the loop's
        clock passes `deadline`; their size. Under load the queue has them at once; under
        light load a transaction per linger instead of one per small judged batch (each
        costs the gateway about a millisecond whatever its size)."""
        loop = asyncio.get_running_loop()
        size = sum(len(part[0]) for part in parts)
        while size < limit:
            if judged.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    part = await asyncio.wait_for(judged.get(), remaining)
                except TimeoutError:
                    break
            else:
                part = judged.get_nowait()
            parts.append(part)
            size += len(part[0])
        return size

    async def _decode_batch(self, batch: list[Inbound]) -> _DecodedBatch:
        now = datetime.now(UTC)
        out = _DecodedBatch(now)
        channels = Counter(item.topic.rsplit("/", 1)[-1] for item in batch)
        for channel, count in channels.items():
            self.metrics.messages.labels(channel).inc(count)
        known, flood = self._known, self.flood
        max_bytes = self.settings.max_payload_bytes
        max_readings = self.settings.max_readings_per_message
        received_at, at, latest = now, now.timestamp(), latest_ms(now)
        for index, item in enumerate(batch):
            if index % _DECODE_SLICE == _DECODE_SLICE - 1:
                # A commit that lands meanwhile is acknowledged now, and the casework's
                # round trips go on, not after the whole batch is decoded.
                await asyncio.sleep(0)
                known = self._known  # the registry may have been reloaded meanwhile
            if item.received_at is not received_at:  # one per TCP read
                received_at = item.received_at
                at, latest = received_at.timestamp(), latest_ms(received_at)
            if flood is not None and (topic := parse_topic(item.topic)) is not None:
                verdict = flood.admit(topic.device_id, at)
                if verdict is not _ADMITTED:
                    # refused before any decoding: a flood costs a lookup per message
                    self._throttled(item, topic.device_id, verdict, out)
                    continue
            usual = None
            if not item.properties:  # (properties may claim an identity: `_decode`)
                usual = gas_readings(
                    item.topic,
                    item.payload,
                    known,
                    latest,
                    max_payload_bytes=max_bytes,
                    max_readings=max_readings,
                )
            if usual is None:
                decoded = self._decode(item, now)
                self._add_decoded(out, decoded)
                usual = decoded.gas_device, decoded.gas_readings
            device_id, readings = usual
            if readings:
                out.firsts.append(epoch_us(readings[0].ts) / 1e6)
                out.gas_readings += readings
                out.gas_runs.append((device_id, len(readings)))
        if out.gas_readings:
            out.gas_columns = GasColumns.of_runs(out.gas_runs, out.gas_readings)
        return out

    async def _store(
        self,
        gateway: MqttGateway,
        batch: list[Inbound],
        d: _DecodedBatch,
        committed: asyncio.Future[None],
        previous: tuple[asyncio.Task[None], asyncio.Future[None]] | None,
    ) -> None:
        """Write one batch; once it and every batch before it are committed, and the clues
        they raised announced, acknowledge it and record the command answers it carries."""
        try:
            result = await self._write_until_committed(d)
            if previous is not None:
                await asyncio.shield(previous[1])  # the batch before is committed
            await self._unannounced.reach(d.raised)  # and the clues these readings raised
        except asyncio.CancelledError:
            committed.cancel()
            raise
        except BaseException as exc:
            committed.set_exception(exc)
            raise
        committed.set_result(None)
        now = time.time()
        self.metrics.commit_latency.observe_many([now - t for t in d.firsts])
        self.metrics.acked.inc(gateway.ack(batch))
        self.metrics.batches.inc()
        self.metrics.readings_stored.labels("gas").inc(result.stored)
        self.metrics.readings_duplicate.labels("gas").inc(result.duplicates)
        self.metrics.readings_stored.labels("equipment").inc(result.stored_equipment)
        self.metrics.readings_duplicate.labels("equipment").inc(result.duplicates_equipment)
        self.metrics.quarantined.inc(result.quarantined)
        if previous is not None:
            await previous[0]  # command answers in the order they arrived
        for device_id, ack in d.acks:
            await self.command_answered(device_id, ack, d.now)

    def _add_decoded(self, out: _DecodedBatch, decoded: Decoded) -> None:
        """What a message decoded the general way holds besides gas readings."""
        if decoded.equipment:
            out.firsts.append(decoded.equipment[0][1].ts.timestamp())
            out.equipment.extend(decoded.equipment)
        if decoded.refusals:
            out.refusals.extend(decoded.refusals)
            for refusal in decoded.refusals:
                if refusal.reason.startswith(IDENTITY_MISMATCH):
                    self.metrics.refused.labels(IDENTITY_MISMATCH, refusal.device_id).inc()
        if decoded.status is not None:
            out.statuses.append(StatusChange(decoded.status[0], decoded.status[1], out.now))
        if decoded.acks:
            out.acks.extend(decoded.acks)

    def _throttled(
        self, item: Inbound, device_id: str, verdict: Verdict, out: _DecodedBatch
    ) -> None:
        """A message the flood guard refused: counted, the first of an episode also kept as
        a quarantined sample and flagged as a device-health clue."""
        assert self.flood is not None
        self.metrics.refused.labels(RATE_LIMITED, device_id).inc()
        if verdict is Verdict.REFUSED_FIRST:
            out.flagged.extend(self.flood.take_opened())
            reason = (
                f"{RATE_LIMITED}: device far above its declared rate; this is the first"
                " message refused, the rest are counted in offsite_refused_messages"
            )
            out.refusals.append(Refusal(item.topic, device_id, reason, item.payload))

    def _decode(self, item: Inbound, now: datetime) -> Decoded:
        if item.properties:
            # MQTT 5: an identity in a user property must be the topic's, like one in the
            # payload (decode.py). The broker does not tell who published: its ACL is the
            # primary defence, this catches a device configured with another's id.
            claimed = user_properties(item.properties).get("device_id")
            topic = parse_topic(item.topic)
            if claimed is not None and topic is not None and claimed != topic.device_id:
                out = Decoded()
                refusal = identity_refusal(item.topic, topic.device_id, claimed, item.payload)
                out.refusals.append(refusal)
                return out
        return decode_message(
            item.topic,
            item.payload,
            self._known,
            item.received_at,
            max_payload_bytes=self.settings.max_payload_bytes,
            max_readings=self.settings.max_readings_per_message,
        )

    async def _write_until_committed(self, d: _DecodedBatch) -> BatchResult:
        """Retry while the database is away: nothing is acknowledged before it commits,
        and while this waits the bounded hand-off fills and the broker keeps the rest.

        A batch the database refuses as data is never retried as it is: its readings go to
        quarantine; if it is still refused, its device status changes are set aside; if
        even the quarantine records are refused, they are counted as refused
        (`offsite_refused_messages_total{reason="unstorable"}`) rather than retried for
        ever with the stream stalled behind them."""
        delay = 0.2
        gas, equipment, refusals, statuses = d.gas_columns, d.equipment, d.refusals, d.statuses
        while True:
            try:
                async with self.pool.connection() as conn:
                    return await write_batch(
                        conn,
                        self.flavour,
                        gas if gas is not None else (),
                        d.now,
                        refusals,
                        statuses,
                        equipment,
                    )
            except (psycopg.OperationalError, TimeoutError) as exc:
                self.metrics.write_errors.labels("unavailable").inc()
                _LOG.warning("database unavailable (%s); batch held, retry in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.DataError as exc:
                self.metrics.write_errors.labels("data").inc()
                if gas is not None or equipment:
                    _LOG.error("batch refused by the database: %s; quarantining it", exc)
                    refusals = [
                        *refusals,
                        *(
                            Refusal(
                                f"offsite/v1/{domain}/{device_id}/telemetry",
                                device_id,
                                f"refused by the database: {exc}",
                                body,
                            )
                            for domain, device_id, body in (
                                *(("gas", i, msgspec.json.encode(r)) for i, r in d.gas_pairs()),
                                *(
                                    ("equipment", i, r.model_dump_json().encode())
                                    for i, r in equipment
                                ),
                            )
                        ),
                    ]
                    gas, equipment = None, []
                elif statuses:
                    _LOG.error("device status refused by the database (%s); set aside", exc)
                    for change in statuses:
                        self.metrics.refused.labels("unstorable_status", change.device_id).inc()
                    statuses = []
                else:
                    _LOG.error("quarantine refused by the database (%s); counted", exc)
                    for refusal in refusals:
                        self.metrics.refused.labels("unstorable", refusal.device_id or "").inc()
                    return BatchResult(0, 0, 0)

    async def _detect(self, d: _DecodedBatch, committed: asyncio.Future[None]) -> None:
        """Judge a decoded batch; its findings are announced at once and completed (their
        evidence fixed) once `committed` is done."""
        findings: list[Finding] = list(d.flagged)
        if d.gas_runs or d.equipment:
            devices = {device_id for device_id, _ in d.gas_runs}
            devices.update(device_id for device_id, _ in d.equipment)
            await self._resume_devices(devices)
            findings.extend(self._feed(d))
            self._seen(d, devices, findings)
        if self.flapping is not None:
            for change in d.statuses:
                findings.extend(self.flapping.observe(change.device_id, change.status, change.at))
        d.raised = await self._put_findings(findings, committed)

    def _feed(self, d: _DecodedBatch) -> list[Finding]:
        """The batch through the scalar detectors."""
        batches = []
        if d.gas_columns is not None:
            batches.append(gas_batch(d.gas_columns, d.now))
        if d.equipment:
            batches.append(batch_from_readings(d.equipment, d.now))
        batch = batches[0] if len(batches) == 1 else concat_batches(batches)
        return self.engine.feed(batch)

    def _seen(self, d: _DecodedBatch, devices: set[str], findings: list[Finding]) -> None:
        """After detection: latency, devices to checkpoint, silence ended."""
        if findings:
            # readings' device time to now: the detection path's share of alert latency
            now = time.time()
            self.metrics.finding_latency.observe_many([now - f.at.timestamp() for f in findings])
        self._dirty |= devices
        for device_id in devices:
            info = self.directory.get(device_id)
            if info is not None:
                back = self.silence.observe(device_id, info.expected_interval_s, d.now)
                if back is not None:
                    findings.append(back)

    async def _put_findings(
        self, findings: list[Finding], stored: asyncio.Future[None] | None = None
    ) -> int:
        """Hand findings to the casework; `stored` is done when the readings behind them
        are committed (None: nothing to wait for). Returns the number of the last one
        (`_Unannounced`), 0 when there are none."""
        if not findings:
            return 0
        await self._unannounced.room(_UNANNOUNCED_MAX)
        raised = time.time()
        number = 0
        items: list[Item[_Raised]] = []
        for finding in findings:
            self.metrics.findings.labels(finding.rule, finding.phase).inc()
            device = self.directory.get(finding.device_id)
            if device is None:
                _LOG.warning("finding for unregistered device %s dropped", finding.device_id)
                continue
            items.append((finding, device, (raised, stored)))
            number = self._unannounced.add(finding.device_id)
        self.announcer.submit(items)
        return number

    async def _resume_cameras(self) -> None:
        """Cameras resume their episodes and references from the last checkpoint."""
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT device_id, state FROM detector_state WHERE detector = 'video'"
                )
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            _LOG.warning("camera checkpoints unreadable (%s); cameras start afresh", exc)
            return
        for camera_id, state in rows:
            await self.frames.restore(camera_id, state)

    async def _resume_devices(self, devices: set[str]) -> None:
        """Devices first seen by this worker resume from their checkpoint, if any (the
        checkpoints of the gas-only detector of earlier versions are read too)."""
        unknown = [d for d in devices if not self.engine.known(d)]
        if not unknown:
            return
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT DISTINCT ON (device_id) device_id, state FROM detector_state"
                    " WHERE detector IN ('scalar', 'gas') AND device_id = ANY(%s)"
                    " ORDER BY device_id, detector = 'scalar' DESC",
                    (unknown,),
                )
                for device_id, state in await cur.fetchall():
                    self.engine.restore(device_id, state)
        except psycopg.Error as exc:
            _LOG.warning("detector checkpoints unreadable (%s); devices start afresh", exc)

    async def checkpoint(self) -> int:
        """Write the state of devices that changed since the last checkpoint."""
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, set()
        rows: list[tuple[str, str]] = []
        for index, device_id in enumerate(sorted(dirty)):
            if index % _SNAPSHOT_SLICE == _SNAPSHOT_SLICE - 1:
                await asyncio.sleep(0)  # thousands of snapshots would hold every alert back
            if self._unannounced.pending(device_id):
                # past a finding not yet announced: resumed from here after a crash, the
                # detectors would pass over the reading that raised it
                self._dirty.add(device_id)
            elif self.engine.known(device_id):
                state = msgspec.json.encode(self.engine.snapshot(device_id)).decode()
                rows.append((device_id, state))
        try:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO detector_state (device_id, detector, state, updated_at)"
                    " VALUES (%s, 'scalar', %s::jsonb, now()) ON CONFLICT (device_id, detector)"
                    " DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    rows,
                )
        except psycopg.Error as exc:
            self._dirty |= dirty
            _LOG.warning("detector checkpoint failed (%s); will retry", exc)
            return 0
        return len(rows)

    async def checkpoint_cameras(self) -> int:
        """Write the cameras' episode state (the worker processes hold it)."""
        try:
            states = await self.frames.snapshots()
            if not states:
                return 0
            async with self.pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO detector_state (device_id, detector, state, updated_at)"
                    " VALUES (%s, 'video', %s, now()) ON CONFLICT (device_id, detector)"
                    " DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    [(camera_id, Jsonb(state)) for camera_id, state in sorted(states.items())],
                )
        except psycopg.Error as exc:
            _LOG.warning("camera checkpoint failed (%s); will retry", exc)
            return 0
        return len(states)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_s)
            await self.checkpoint()
            await self.checkpoint_cameras()
            if self.flavour == "postgres":
                await self.fold_rollups()

    async def _ledger_loop(self) -> None:
        """Sign the ledger head from time to time (a no-op while it has not moved)."""
        while True:
            await asyncio.sleep(self.settings.ledger_checkpoint_s)
            await self.sign_ledger()

    # remote enforcement

    async def send_command(
        self,
        *,
        device_id: str,
        command: str,
        params: dict[str, Any],
        case_id: str | None,
        reason: str | None,
        actor: str,
        allowed_s: float,
    ) -> commands.Command:
        """Record a command (and its ledger entry), then publish it to the device at QoS 1.
        A broker that is away leaves the command to time out, recorded as such."""
        async with self.pool.connection() as conn:
            cmd = await commands.issue(
                conn,
                device_id=device_id,
                command=command,
                params=params,
                case_id=case_id,
                reason=reason,
                actor=actor,
                now=datetime.now(UTC),
                allowed_for=timedelta(seconds=allowed_s),
            )
        body = {
            "command_id": cmd.id,
            "command": cmd.command,
            "params": cmd.params,
            "deadline": cmd.deadline_at.isoformat(),
        }
        if self.gateway is None:
            _LOG.warning("command %s not sent (no broker); it will time out", cmd.id)
            return cmd
        try:
            self.gateway.publish(cmd.topic, json.dumps(body).encode(), qos=1)
        except BrokerUnavailableError as exc:
            _LOG.warning("command %s not sent (%s); it will time out", cmd.id, exc)
        return cmd

    async def command_answered(self, device_id: str, ack: CommandAck, now: datetime) -> None:
        try:
            async with self.pool.connection() as conn:
                done = await commands.answer(
                    conn,
                    device_id=device_id,
                    command_id=ack.command_id,
                    ok=ack.ok,
                    detail=ack.detail,
                    now=now,
                )
        except psycopg.Error as exc:
            _LOG.warning("command answer from %s not recorded (%s)", device_id, exc)
            return
        if done is None:
            _LOG.warning("%s answered %s, which is not pending for it", device_id, ack.command_id)

    async def expire_commands(self, now: datetime) -> list[str]:
        try:
            async with self.pool.connection() as conn:
                return await commands.expire(conn, now)
        except psycopg.Error as exc:
            _LOG.warning("command expiry failed (%s); will retry", exc)
            return []

    async def _credit_loop(self) -> None:
        """Risk tiers from the subjects' records; a change reloads the directory (NOTIFY)."""
        while True:
            await self.assess_credit()
            await asyncio.sleep(self.settings.credit_assess_s)

    async def assess_credit(self, now: datetime | None = None) -> list[Assessment]:
        try:
            async with self.pool.connection() as conn:
                changed = await assess(conn, now or datetime.now(UTC))
        except psycopg.Error as exc:
            _LOG.warning("risk tier assessment failed (%s); will retry", exc)
            return []
        for a in changed:
            _LOG.info("subject %s now tier %s (%.1f points)", a.subject_id, a.tier, a.points)
        return changed

    async def sign_ledger(self) -> None:
        try:
            async with self.pool.connection() as conn:
                await ledger_checkpoint(conn, self.ledger_key)
        except psycopg.Error as exc:
            _LOG.warning("ledger checkpoint failed (%s); will retry", exc)

    async def fold_rollups(self) -> int:
        """Move the rollup deltas of recent batches into the accumulators (plain
        PostgreSQL); the rollup views are exact either way, this keeps them cheap to read."""
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute("SELECT offsite_fold_rollups()")
                row = await cur.fetchone()
        except psycopg.Error as exc:
            _LOG.warning("rollup fold failed (%s); will retry", exc)
            return 0
        return int(row[0]) if row else 0

    # clue deadlines

    async def _deadline_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.clue_deadline_sweep_s)
            await self.check_deadlines()
            await self.check_task_deadlines()

    async def check_deadlines(self, now: datetime | None = None) -> list[str]:
        """Flag the clues past their deadline and not closed as overdue (an alert each, for
        the console); returns their ids. Every worker may run it: rows are claimed."""
        try:
            async with self.pool.connection() as conn:
                return await mark_overdue(conn, now or datetime.now(UTC))
        except psycopg.Error as exc:
            _LOG.warning("clue deadline check failed (%s); will retry", exc)
            return []

    async def check_task_deadlines(self, now: datetime | None = None) -> list[int]:
        """Flag the tasks of open cases past their due time (an alert each, once); returns
        their ids. Every worker may run it: rows are claimed."""
        try:
            async with self.pool.connection() as conn:
                return await mark_overdue_tasks(conn, now or datetime.now(UTC))
        except psycopg.Error as exc:
            _LOG.warning("case task deadline check failed (%s); will retry", exc)
            return []

    # casework

    def _announced(self, items: Sequence[Item[_Raised]], opened: Sequence[bool], at: float) -> None:
        """The announcer's report on a group (in submission order): new clues go on to have
        their evidence fixed."""
        self._unannounced.announced([finding.device_id for finding, _, _ in items])
        for item, new in zip(items, opened, strict=True):
            if new:
                self.metrics.announce_latency.observe_many([at - item[2][0]])
                self._opened.put_nowait(item)

    async def _complete_loop(self) -> None:
        """Evidence, case, merge and ledger for each announced clue, in announcement order,
        each once the readings behind it are committed (the evidence is read back from the
        database): one clue's evidence never holds back another clue's alert. Readings
        never committed (the gateway stopping first) leave the clue to be completed at the
        next start, after the broker has sent them again."""
        while True:
            finding, device, (raised, stored) = await self._opened.get()
            if stored is not None:
                try:
                    await asyncio.shield(stored)
                except asyncio.CancelledError:
                    if not stored.cancelled():
                        raise  # this loop is stopping
                    continue
                except Exception as exc:
                    _LOG.error("clue %s left to complete at the next start: %s", finding.key, exc)
                    continue
            complete = partial(self.casework.complete, finding, device)
            await self._recorded(f"finding {finding.key}", complete)
            self.metrics.casework_latency.observe_many([time.time() - raised])

    async def _recorded(self, what: str, step: Callable[[], Awaitable[T]]) -> T | None:
        """Run one casework step for `what` (to name it in the log), waiting for the database
        while it is away; a step the database refuses is logged and skipped, None (a clue
        left uncompleted is completed at the next start)."""
        delay = 0.2
        while True:
            try:
                return await step()
            except (psycopg.OperationalError, TimeoutError) as exc:
                _LOG.warning("casework waits for the database (%s)", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.Error:
                _LOG.exception("%s could not be recorded", what)
                return None

    async def _loop_lag(self) -> None:
        """Sample how late the event loop runs a timer: work that holds the loop holds
        every alert behind it."""
        period = 0.01
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        while True:
            before = loop.time()
            await asyncio.sleep(period)
            lags.append(max(loop.time() - before - period, 0.0))
            if len(lags) >= 100:
                self.metrics.loop_lag.observe_many(lags)
                lags = []

    async def _silence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.silent_sweep_s)
            now = datetime.now(UTC)
            swept = self.silence.sweep(now)
            if self.flood is not None:
                swept.extend(self.flood.sweep(now.timestamp()))
            if self.flapping is not None:
                swept.extend(self.flapping.sweep(now))
            if self.video_gateway is not None:
                swept.extend(await self.frames.sweep(now))
            await self.expire_commands(now)
            await self._put_findings(swept)

    async def _registry_listener(self) -> None:
        """Reload the device directory when `offsite registry load` announces a change."""

        async def refresh(_: psycopg.AsyncConnection[Any], *__: list[str]) -> None:
            await self.refresh_directory()

        await listen_forever(
            self.database_url, _REGISTRY_CHANNEL, on_connected=refresh, on_wake=refresh
        )

    async def _partition_loop(self) -> None:
        """Partitions ready ahead of the data (plain PostgreSQL), retention applied."""
        keep = timedelta(days=self.settings.retention_days)
        while True:
            try:
                async with self.pool.connection() as conn:
                    for table in ("telemetry_gas", "telemetry_equipment"):
                        await conn.execute(
                            "SELECT offsite_ensure_partitions(%s::regclass, current_date - 1,"
                            " current_date + 3)",
                            (table,),
                        )
                    await conn.execute("SELECT offsite_apply_retention(%s)", (keep,))
            except psycopg.Error as exc:
                _LOG.warning("storage maintenance failed: %s", exc)
            await asyncio.sleep(3600)
