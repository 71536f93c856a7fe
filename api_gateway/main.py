from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from api_gateway import console, console_session
from api_gateway.limits import BodyLimit
from api_gateway.proxy import Upstreams
from api_gateway.ratelimit import RateLimit
from api_gateway.routes import router
from api_gateway.settings import GatewaySettings
from shared.app import create_service_app, service_runtime
from shared.nats import close_nats, connect, ensure_streams


def create_app(
    settings: GatewaySettings | None = None, *, jwks: Callable[[], Any] | None = None
) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(settings.nats_url, "gateway")
        js = nc.jetstream()
        await ensure_streams(js, ["JOBS", "LOGS"])
        app.state.js = js
        app.state.ready_checks["nats"] = lambda: nc.flush(timeout=2)
        upstreams: Upstreams | None = None
        try:
            async with service_runtime(app, settings, jwks=jwks) as rt:
                upstreams = Upstreams(rt.discovery, settings.upstream_timeout_seconds)
                app.state.upstreams = upstreams
                yield
        finally:
            if upstreams is not None:
                await upstreams.aclose()
            await close_nats(nc)

    app = create_service_app(settings, title="Dante API gateway", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, exempt=("/api/v1/storage/",))
    app.add_middleware(
        RateLimit,
        enabled=settings.rate_limit_enabled,
        user_rate=settings.rate_limit_user_per_second,
        user_burst=settings.rate_limit_user_burst,
        ip_rate=settings.rate_limit_ip_per_second,
        ip_burst=settings.rate_limit_ip_burst,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id"],
        )
    # the console and its session before the catch-all proxy route (api_gateway/console.py)
    app.add_middleware(console.SecurityHeaders)
    app.include_router(console_session.router)
    app.include_router(console.console_router(settings.console_dir or console.CONSOLE_DIR))
    app.include_router(router)
    return app
