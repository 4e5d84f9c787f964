"""The one settings object: every knob of offsite, read from `OFFSITE_*` variables."""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_TOKEN = "offsite-dev-token"  # noqa: S105 - refused outside development mode
DEFAULT_PASSWORDS = frozenset(
    {"", "offsite", "postgres", "password", "public", "admin", "changeme", "secret", "mosquitto"}
)
"""Passwords that ship as defaults somewhere (ours in docker-compose, the images', EMQX's
`public`); refused in production in the database and broker URLs and the MQTT password."""


class Settings(BaseSettings):
    """Settings of one offsite process.

    `database_url` and `mqtt_url` left unset mean "start an embedded one" (`offsite run`),
    which is for a laptop demo, not for production.
    """

    model_config = SettingsConfigDict(env_prefix="OFFSITE_", extra="ignore")

    mode: Literal["development", "production"] = Field(
        "development", description="production refuses default secrets"
    )
    database_url: str | None = Field(None, description="postgresql:// URL; unset: embedded")
    mqtt_url: str | None = Field(
        None, description="mqtt://host:port, or mqtts://host:port for TLS; unset: embedded broker"
    )
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT version of the gateway's own connection"
    )
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_client_id: str = Field("offsite-gateway", description="persistent session id")
    mqtt_tls_ca_file: Path | None = Field(
        None, description="CA certificates that sign the broker's (mqtts://); unset: the system's"
    )
    mqtt_tls_cert_file: Path | None = Field(
        None, description="client certificate, for a broker that demands one (mqtts://)"
    )
    mqtt_tls_key_file: Path | None = Field(None, description="the client certificate's key")
    device_credentials: Path | None = Field(
        None,
        description="simulators: JSON {device_id: secret} from `offsite devices credentials"
        " issue --output`; each device logs in as its id",
    )
    mqtt_shared_group: str | None = Field(
        None, description="subscribe as $share/<group>/... so several workers split the load"
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    http_tls_cert_file: Path | None = Field(
        None, description="serve HTTPS with this certificate chain (PEM); unset: plain HTTP"
    )
    http_tls_key_file: Path | None = Field(None, description="the HTTPS certificate's key")
    bootstrap_token: SecretStr = Field(
        SecretStr(DEVELOPMENT_TOKEN), description="admin API token accepted from start-up"
    )
    live_token_recheck_s: float = Field(
        30.0, gt=0, description="a live stream's token is checked again this often"
    )
    storage: Literal["auto", "timescaledb", "postgres"] = Field(
        "auto", description="auto: TimescaleDB when the extension can be created"
    )
    retention_days: int = Field(
        400, ge=1, description="raw telemetry kept this long; rollups longer (x4, x20)"
    )
    data_dir: Path = Field(Path(".offsite"), description="embedded services keep data here")

    max_payload_bytes: int = Field(256 * 1024, gt=0, description="larger payloads quarantined")
    max_readings_per_message: int = Field(1000, gt=0)
    ingest_queue_messages: int = Field(
        20_000, gt=0, description="bounded hand-off from MQTT to the writer; full: back-pressure"
    )
    ingest_batch_messages: int = Field(5_000, gt=0)
    ingest_write_linger_s: float = Field(
        0.05,
        ge=0,
        le=1.0,
        description="a batch smaller than ingest_batch_messages waits up to this long for"
        " more before it is written: fewer, larger transactions under light load (alerts do"
        " not wait for it: readings are judged before they are written)",
    )
    ingest_write_concurrency: int = Field(
        2,
        ge=1,
        le=8,
        description="batches written at once, each on its own database connection"
        " (acknowledged and judged in arrival order all the same)",
    )
    flood_factor: float = Field(
        10.0,
        ge=0,
        description="a device is throttled above this many times its declared rate (one message"
        " per expected_interval_s); 0: no throttling",
    )
    flood_burst_messages: int = Field(
        600, ge=1, description="messages a device may send at once beyond its rate (a backlog)"
    )
    flood_min_rate_per_s: float = Field(
        1.0, gt=0, description="the throttle never holds a device below this many messages/s"
    )
    flood_quiet_s: float = Field(
        60.0, gt=0, description="a flooding episode ends after this long without a refusal"
    )

    gas_level1_pct: float = Field(25.0, gt=0, le=100, description="GB/T 50493: at most 25")
    gas_level2_pct: float = Field(50.0, gt=0, le=100, description="GB/T 50493: at most 50")
    gas_confirm_s: float = Field(15.0, ge=0, description="held this long before a clue")
    rule_overrides: Path | None = Field(
        None, description="TOML file of [[overrides]]: thresholds per device or subject"
    )

    evidence_before_s: float = Field(120.0, ge=0, description="telemetry kept before a trigger")
    video_dir: Path | None = Field(
        None, description="the real clips (default: shared/data/video above the checkout)"
    )
    video_budget_fps: float = Field(
        100.0, gt=0, description="frames judged per second over all cameras; the rest are shed"
    )
    video_workers: int = Field(1, ge=1, le=64, description="processes judging frames")
    video_ring_s: float = Field(30.0, gt=0, description="seconds of frames kept per camera")
    video_evidence_before_s: float = Field(
        5.0, ge=0, description="frames before a video trigger fixed as evidence"
    )
    video_evidence_frames: int = Field(
        12, ge=1, le=200, description="at most this many frames in one clue's evidence"
    )
    silent_after_intervals: float = Field(
        3.0, gt=1, description="a device is silent after this many expected intervals"
    )
    silent_sweep_s: float = Field(5.0, gt=0)
    checkpoint_s: float = Field(
        2.0, gt=0, description="detector state is checkpointed this often (and at stop)"
    )
    ledger_signing_key: SecretStr | None = Field(
        None,
        description="Ed25519 seed (base64, 32 bytes) signing ledger checkpoints; unset in"
        " development: one made once and kept in data_dir",
    )
    credit_assess_s: float = Field(
        3600.0, gt=0, description="how often subjects' risk tiers are recomputed from their record"
    )
    ledger_checkpoint_s: float = Field(
        60.0, gt=0, description="the ledger head is signed this often when it has moved"
    )
    clue_merge_window_s: float = Field(
        7 * 86400.0,
        ge=0,
        description="a report joins an open clue of the same subject and matter this recent",
    )
    clue_deadline_red_s: float = Field(2 * 3600.0, gt=0, description="red clue closed within")
    clue_deadline_orange_s: float = Field(24 * 3600.0, gt=0)
    clue_deadline_yellow_s: float = Field(72 * 3600.0, gt=0)
    clue_deadline_blue_s: float = Field(7 * 86400.0, gt=0)
    clue_deadline_sweep_s: float = Field(
        30.0, gt=0, description="clues past their deadline are flagged overdue this often"
    )

    def clue_deadlines_s(self) -> dict[str, float]:
        """Seconds to close a clue, by severity; `clue_deadlines` rows override per department."""
        return {
            "red": self.clue_deadline_red_s,
            "orange": self.clue_deadline_orange_s,
            "yellow": self.clue_deadline_yellow_s,
            "blue": self.clue_deadline_blue_s,
        }

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("OFFSITE_DATABASE_URL must be a postgresql:// URL")
        return value

    @field_validator("ledger_signing_key")
    @classmethod
    def _ed25519_seed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            seed = base64.b64decode(value.get_secret_value().strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("OFFSITE_LEDGER_SIGNING_KEY must be base64") from None
        if len(seed) != 32:
            raise ValueError("OFFSITE_LEDGER_SIGNING_KEY must be a 32-byte Ed25519 seed")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
            raise ValueError("OFFSITE_MQTT_URL must look like mqtt://host:port or mqtts://...")
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Self:
        for cert, key, name in (
            (self.mqtt_tls_cert_file, self.mqtt_tls_key_file, "OFFSITE_MQTT_TLS"),
            (self.http_tls_cert_file, self.http_tls_key_file, "OFFSITE_HTTP_TLS"),
        ):
            if (cert is None) != (key is None):
                raise ValueError(f"{name}_CERT_FILE and {name}_KEY_FILE go together")
        return self

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Self:
        if self.mode == "production":
            if self.bootstrap_token.get_secret_value() == DEVELOPMENT_TOKEN:
                raise ValueError("OFFSITE_BOOTSTRAP_TOKEN must be set in production mode")
            if len(self.bootstrap_token.get_secret_value()) < 24:
                raise ValueError("OFFSITE_BOOTSTRAP_TOKEN must be at least 24 characters")
            if self.ledger_signing_key is None:
                # A key made on the fly would sign checkpoints nobody can check it against.
                raise ValueError("OFFSITE_LEDGER_SIGNING_KEY must be set in production mode")
            self._no_default_service_secret()
        return self

    def _no_default_service_secret(self) -> None:
        # The embedded PostgreSQL and broker run without passwords: a laptop's, not a network's.
        if self.database_url is None or self.mqtt_url is None:
            raise ValueError(
                "OFFSITE_DATABASE_URL and OFFSITE_MQTT_URL must be set in production mode"
                " (the embedded services are for development)"
            )
        if urlsplit(self.database_url).password in DEFAULT_PASSWORDS:
            raise ValueError("OFFSITE_DATABASE_URL carries a default password in production mode")
        mqtt_url_password = urlsplit(self.mqtt_url).password
        if mqtt_url_password is not None and mqtt_url_password in DEFAULT_PASSWORDS:
            raise ValueError("OFFSITE_MQTT_URL carries a default password in production mode")
        if (
            self.mqtt_password is not None
            and self.mqtt_password.get_secret_value() in DEFAULT_PASSWORDS
        ):
            raise ValueError("OFFSITE_MQTT_PASSWORD is a default password in production mode")

    @staticmethod
    def mqtt_host_port_of(url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        default = 8883 if parts.scheme == "mqtts" else 1883
        return parts.hostname or "127.0.0.1", parts.port or default

    def mqtt_tls(self, url: str) -> ssl.SSLContext | None:
        """The TLS context for an mqtts:// URL (the broker's certificate and name verified),
        None for plain mqtt://."""
        if urlsplit(url).scheme != "mqtts":
            return None
        ca = self.mqtt_tls_ca_file
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.mqtt_tls_cert_file is not None and self.mqtt_tls_key_file is not None:
            context.load_cert_chain(self.mqtt_tls_cert_file, self.mqtt_tls_key_file)
        return context

    def device_secrets(self) -> dict[str, str]:
        """The simulators' device secrets (empty: anonymous, the development broker)."""
        if self.device_credentials is None:
            return {}
        data = json.loads(self.device_credentials.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError(f"{self.device_credentials}: expected a JSON object of strings")
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
