"""The FastAPI application around a running Runtime."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from offsite import __version__
from offsite.api import live, people, routes
from offsite.api.models import Health
from offsite.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    """The runtime is opened and closed by its owner (`offsite run`), not by the app."""
    app = FastAPI(
        title="offsite",
        version=__version__,
        description="IoT and off-site remote supervision gateway",
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime
    app.include_router(routes.router)
    app.include_router(people.router)
    app.include_router(live.router)
    console = resources.files("offsite.api").joinpath("static/console.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def duty_console() -> str:
        return console

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(request: Request, response: Response) -> Health:
        rt: Runtime = request.app.state.runtime
        database = True
        try:
            async with rt.pool.connection(timeout=2) as conn:
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
        rt: Runtime = request.app.state.runtime
        rt.metrics.mqtt_connected.set(1 if rt.gateway is not None and rt.gateway.connected else 0)
        rt.metrics.alerts_sent.set(rt.hub.sent)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
