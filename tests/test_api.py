"""The HTTP surface: tokens, registry, health, OpenAPI, console page."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import start_gateway

PROTECTED = [
    "/api/v1/departments",
    "/api/v1/matters",
    "/api/v1/subjects",
    "/api/v1/devices",
    "/api/v1/devices/gas-0001",
    "/api/v1/telemetry/gas-0001",
    "/api/v1/clues",
    "/api/v1/clues/clu_x",
    "/api/v1/cases",
    "/api/v1/cases/case_x",
    "/api/v1/evidence/ev_x",
    "/api/v1/evidence/ev_x/verify",
    "/api/v1/quarantine",
    "/api/v1/alerts",
]


async def test_every_api_path_needs_a_valid_token(database_url: str, broker: BrokerProcess) -> None:
    async with (
        start_gateway(database_url, broker.url) as gw,
        httpx.AsyncClient(base_url=gw.base_url) as anonymous,
    ):
        for path in PROTECTED:
            response = await anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            wrong = await anonymous.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
        assert (await anonymous.get("/healthz")).status_code == 200
        page = await anonymous.get("/")
        assert page.status_code == 200
        assert "duty console" in page.text
        schema = (await anonymous.get("/openapi.json")).json()
        for path in ("/api/v1/clues", "/api/v1/evidence/{evidence_id}/verify", "/healthz"):
            assert path in schema["paths"]


async def test_registry_is_readable(database_url: str, broker: BrokerProcess) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        departments = (await gw.http.get("/api/v1/departments")).json()
        assert {"housing", "market", "emergency"} <= {d["id"] for d in departments}
        matters = {m["id"]: m for m in (await gw.http.get("/api/v1/matters")).json()}
        assert matters["gas-safety"]["lead_department"] == "housing"
        assert matters["special-equipment"]["lead_department"] == "market"
        assert matters["hazardous-chemicals"]["lead_department"] == "emergency"
        assert matters["hazardous-chemicals"]["domain"] is None
        assert all(m["legal_basis"] for m in matters.values())
        subjects = (await gw.http.get("/api/v1/subjects")).json()
        assert {s["risk_tier"] for s in subjects} <= {"A", "B", "C", "D"}
        devices = (await gw.http.get("/api/v1/devices", params={"domain": "gas"})).json()
        assert len(devices) == 20
        device = (await gw.http.get("/api/v1/devices/elev-0001")).json()
        assert {k: device[k] for k in ("id", "domain", "kind", "subject_id")} == {
            "id": "elev-0001",
            "domain": "equipment",
            "kind": "elevator",
            "subject_id": "elev-jinhui-garden-3",
        }
        assert device["attributes"]["rated_speed_mps"] == 1.75
        assert (await gw.http.get("/api/v1/devices/nope")).status_code == 404
        assert (await gw.http.get("/api/v1/telemetry/nope")).status_code == 404


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/clues", {"since": "yesterday"}),
        ("/api/v1/clues", {"limit": "0"}),
        ("/api/v1/telemetry/gas-0001", {"from": "2026-01-01T00:00:00"}),
        ("/api/v1/alerts", {"after": "-1"}),
    ],
)
async def test_bad_query_parameters_are_422(
    database_url: str, broker: BrokerProcess, path: str, params: dict[str, str]
) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        assert (await gw.http.get(path, params=params)).status_code == 422


async def test_health_reports_degraded_without_broker(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url) as gw:
        assert (await gw.http.get("/healthz")).json()["mqtt"] is True
        broker.stop()
        for _ in range(100):
            response = await gw.http.get("/healthz")
            if response.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 503
        assert response.json() == {
            "status": "degraded",
            "database": True,
            "mqtt": False,
            "storage": "postgres",
            "version": response.json()["version"],
        }
