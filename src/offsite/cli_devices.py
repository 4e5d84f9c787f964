"""`offsite devices credentials ...`: issue, rotate, revoke and list device credentials,
and export the Mosquitto password and ACL files from them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import psycopg

from offsite.config import Settings
from offsite.embedded import start_postgres
from offsite.ingest.schema import migrate
from offsite.registry import credentials


def _connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    url = settings.database_url or start_postgres(settings.data_dir)
    migrate(url, settings.storage)
    return psycopg.connect(url)


def _secrets_out(args: argparse.Namespace, issued: dict[str, str]) -> None:
    """Secrets are shown once: on stdout, or into a JSON file the simulators read."""
    if args.output:
        path = Path(args.output)
        path.write_text(json.dumps(issued, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)
        print(f"{len(issued)} secrets written to {path} (keep it; they are not stored)")
        return
    for device_id, secret in issued.items():
        print(f"{device_id}\t{secret}")
    print(
        "# username = device id; shown once, only a hash is stored."
        " Export and reload the broker: offsite devices credentials export-mosquitto",
        file=sys.stderr,
    )


def cmd_issue(settings: Settings, args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        ids = list(args.device_ids)
        if args.all:
            rows = conn.execute(
                "SELECT id FROM devices d WHERE active AND NOT EXISTS (SELECT 1 FROM"
                " device_credentials c WHERE c.device_id = d.id AND c.revoked_at IS NULL)"
                " ORDER BY id"
            ).fetchall()
            ids += [str(r[0]) for r in rows if str(r[0]) not in ids]
        if not ids:
            print("offsite devices credentials issue: no device given", file=sys.stderr)
            return 2
        # all or nothing: a secret printed for a transaction that then failed would be a lie
        issued = {device_id: credentials.issue(conn, device_id) for device_id in ids}
    _secrets_out(args, issued)
    return 0


def cmd_rotate(settings: Settings, args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        issued = {device_id: credentials.rotate(conn, device_id) for device_id in args.device_ids}
    _secrets_out(args, issued)
    return 0


def cmd_revoke(settings: Settings, args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        for device_id in args.device_ids:
            credentials.revoke(conn, device_id)
    print(f"revoked {len(args.device_ids)}; export and reload the broker to refuse them")
    return 0


def cmd_list(settings: Settings, _: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        for info in credentials.list_credentials(conn):
            state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else "in force"
            print(f"{info.device_id}\t{info.domain}\tissued {info.issued_at.isoformat()}\t{state}")
    return 0


def cmd_export_mosquitto(settings: Settings, args: argparse.Namespace) -> int:
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else ""
    with _connect(settings) as conn:
        report = credentials.export_mosquitto(
            conn, Path(args.passwd), Path(args.acl), settings.mqtt_username or "", password
        )
    print(f"{report.devices} devices and the gateway written to {report.passwd} and {report.acl}")
    if args.reload_pid is not None:
        credentials.reload_mosquitto(args.reload_pid)
        print(f"mosquitto (pid {args.reload_pid}) told to reread them (SIGHUP)")
    return 0


def add_devices_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = sub.add_parser("devices", help="device credentials for the broker")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    creds = devices_sub.add_parser("credentials", help="each device's own MQTT credentials")
    creds_sub = creds.add_subparsers(dest="credentials_command", required=True)

    issue = creds_sub.add_parser("issue", help="new credentials; the secret is shown once")
    issue.add_argument("device_ids", nargs="*", metavar="DEVICE_ID")
    issue.add_argument("--all", action="store_true", help="every active device without any")
    issue.add_argument("--output", help="write {device_id: secret} as JSON here (mode 600)")
    issue.set_defaults(func=cmd_issue)
    rotate = creds_sub.add_parser("rotate", help="a new secret replacing the old one")
    rotate.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
    rotate.add_argument("--output", help="write {device_id: secret} as JSON here (mode 600)")
    rotate.set_defaults(func=cmd_rotate)
    revoke = creds_sub.add_parser("revoke", help="refused at the next export and reload")
    revoke.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
    revoke.set_defaults(func=cmd_revoke)
    creds_sub.add_parser("list", help="devices with credentials and their state").set_defaults(
        func=cmd_list
    )
    export = creds_sub.add_parser(
        "export-mosquitto", help="write mosquitto's password_file and acl_file"
    )
    export.add_argument("--passwd", required=True, help="password file to write")
    export.add_argument("--acl", required=True, help="ACL file to write")
    export.add_argument(
        "--reload-pid", type=int, default=None, help="send SIGHUP to this mosquitto afterwards"
    )
    export.set_defaults(func=cmd_export_mosquitto)
