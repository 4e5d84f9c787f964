"""The FastAPI application around a running gateway (`context.Api`)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from offsite import __version__
from offsite.api import live, people, routes
from offsite.api.context import Api
from offsite.api.models import Health, Problem

_ERRORS: dict[str, str] = {
    "400": "the body cannot be parsed (not JSON, not UTF-8)",
    "401": "no valid bearer token",
    "404": "no such resource",
    "409": "refused in the record's current state",
    "422": "the request is invalid: FastAPI's list of fields, or the domain's sentence",
}


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Every error an `/api/v1` operation can answer, in its OpenAPI description, so that
    clients (and schemathesis) can rely on the schema: 401 everywhere (a token is needed),
    400 where a body is read, 404 where a path names a resource, 409 where a POST, PATCH or
    DELETE asks for a transition the record may refuse (a token revoked twice), and 422 as
    either FastAPI's per-field list or a sentence (`HTTPException`)."""
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(problem.pop("$defs", {}))
    components["Problem"] = problem
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            codes = ["401", "422"]
            if "requestBody" in operation:
                codes.append("400")
            if "{" in path:
                codes.append("404")
            if method in ("post", "patch", "delete"):
                codes.append("409")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses[code] = {"description": _ERRORS[code], "content": content}
    return schema


def create_app(api: Api) -> FastAPI:
    """The gateway and the API's pool are opened and closed by their owner
    (`server.ApiServer`), not by the app."""
    app = FastAPI(
        title="offsite",
        version=__version__,
        description="IoT and off-site remote supervision gateway",
        openapi_url="/openapi.json",
    )
    app.state.api = api
    app.include_router(routes.router)
    app.include_router(people.router)

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Class 22 of SQLSTATE, and psycopg's own refusal of a NUL in text: a value from the
        # request that the database cannot hold. The caller's mistake, not a server fault.
        return JSONResponse({"detail": f"a value the database cannot hold: {exc}"}, status_code=422)

    app.include_router(live.router)
    console = resources.files("offsite.api").joinpath("static/console.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def duty_console() -> str:
        return console

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(request: Request, response: Response) -> Health:
        api: Api = request.app.state.api
        rt = api.runtime
        database = True
        try:
            async with api.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except Exception:
            database = False
        mqtt = rt.gateway.connected if rt.gateway is not None else None
        healthy = database and mqtt is not False
        if not healthy:
            response.status_code = 503
        return Health(
            status="ok" if healthy else "degraded",
            database=database,
            mqtt=mqtt,
            storage=rt.flavour,
            version=__version__,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        api: Api = request.app.state.api
        rt = api.runtime
        rt.metrics.mqtt_connected.set(1 if rt.gateway is not None and rt.gateway.connected else 0)
        rt.metrics.alerts_sent.set(api.hub.sent)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
