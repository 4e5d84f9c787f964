"""MQTT over TLS against a real mosquitto TLS listener (CA made in the test), with device
credentials and the ACL; HTTPS for the API (issue 6)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import psycopg
import pytest

from offsite.api.server import ApiServer
from offsite.cli import http_config
from offsite.config import Settings
from offsite.gateway.errors import BrokerUnavailableError
from offsite.gateway.mqtt import MqttGateway, MqttOptions
from offsite.simulators.device import DeviceSecurity
from offsite.simulators.gas import run_gas
from tests.fixtures.gateway import TOKEN, eventually, gas_reading, start_gateway
from tests.fixtures.secure_broker import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    SecureBroker,
    connect,
    issue,
)


def _settings(**values: Any) -> Settings:
    return Settings(**values)


async def test_gateway_and_simulated_devices_over_tls_with_their_credentials(
    tls_broker: SecureBroker, database_url: str
) -> None:
    assert tls_broker.tls is not None
    secrets = issue(database_url, "gas-0001", "gas-0002")
    tls_broker.reload()
    async with start_gateway(
        database_url,
        tls_broker.url,
        mqtt_username=GATEWAY_USER,
        mqtt_password=GATEWAY_PASSWORD,
        mqtt_tls_ca_file=tls_broker.tls.ca,
        mqtt_shared_group="workers",  # `$share/...` granted by the exported ACL
    ) as gw:
        assert gw.runtime.gateway is not None
        assert gw.runtime.gateway.connected
        # the simulators as `offsite simulate gas --credentials FILE` runs them
        security = DeviceSecurity(
            secrets, _settings(mqtt_tls_ca_file=tls_broker.tls.ca).mqtt_tls(tls_broker.url)
        )
        stop = threading.Event()
        sent = await asyncio.to_thread(
            run_gas,
            "127.0.0.1",
            tls_broker.port,
            devices=2,
            rate_hz=5,
            scenario="normal",
            duration_s=1.5,
            protocol="5",
            stop=stop,
            security=security,
        )
        assert sent >= 10

        async def all_stored() -> bool:
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM telemetry_gas WHERE device_id IN ('gas-0001', 'gas-0002')"
                )
                row = await cur.fetchone()
            return row is not None and row[0] == sent

        await eventually(all_stored)
        # a device with its own credentials, over TLS, on another device's topic: refused
        base = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp() * 1000)
        a = connect(tls_broker.port, "gas-0001", secrets["gas-0001"], ca=tls_broker.tls.ca)
        try:
            assert a.connack == [0]
            forged = gas_reading(base, 999_999, 80.0)
            assert a.publish("offsite/v1/gas/gas-0002/telemetry", forged) == 0x87
        finally:
            a.close()
        await asyncio.sleep(0.5)
        clues = (await gw.http.get("/api/v1/clues", params={"device_id": "gas-0002"})).json()
        assert clues == []


async def test_gateway_refuses_a_broker_it_cannot_verify(tls_broker: SecureBroker) -> None:
    """Without the test CA, the broker's self-signed chain is not trusted: no connection."""
    settings = _settings(mqtt_username=GATEWAY_USER, mqtt_password=GATEWAY_PASSWORD)
    tls = settings.mqtt_tls(tls_broker.url)
    assert tls is not None
    gateway = MqttGateway(
        MqttOptions(
            "127.0.0.1",
            tls_broker.port,
            "gw-untrusting",
            username=GATEWAY_USER,
            password=GATEWAY_PASSWORD,
            tls=tls,
        ),
        asyncio.get_running_loop(),
    )
    with pytest.raises(BrokerUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await gateway.start(timeout_s=2)


def test_tls_settings() -> None:
    assert Settings.mqtt_host_port_of("mqtts://broker.example") == ("broker.example", 8883)
    assert _settings().mqtt_tls("mqtt://127.0.0.1:1883") is None
    context = _settings().mqtt_tls("mqtts://127.0.0.1")
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    with pytest.raises(ValueError, match="go together"):
        _settings(http_tls_cert_file="cert.pem")
    with pytest.raises(ValueError, match="mqtts"):
        _settings(mqtt_url="https://broker")


async def test_api_over_https(tls_broker: SecureBroker, database_url: str) -> None:
    """The API served by `offsite run`'s server configuration with a certificate and key."""
    tls = tls_broker.tls
    assert tls is not None
    async with start_gateway(database_url, None) as gw:
        settings = _settings(
            http_host="127.0.0.1",
            http_port=0,
            http_tls_cert_file=tls.cert,
            http_tls_key_file=tls.key,
        )
        async with ApiServer(gw.runtime, partial(http_config, settings)) as server:
            async with httpx.AsyncClient(
                base_url=f"https://127.0.0.1:{server.port}",
                verify=ssl.create_default_context(cafile=str(tls.ca)),
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as client:
                response = await client.get("/api/v1/devices")
                assert response.status_code == 200
                assert any(d["id"] == "gas-0001" for d in response.json())
            # plain HTTP to the HTTPS port gets no API answer
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as plain:
                with pytest.raises(httpx.TransportError):
                    await plain.get("/healthz")
