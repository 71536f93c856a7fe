from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from api_gateway import console, console_session
from api_gateway.auth import Authenticate
from api_gateway.fastlane import FastLane
from api_gateway.limits import BodyLimit
from api_gateway.openapi import docs_router
from api_gateway.proxy import Upstreams
from api_gateway.ratelimit import RateLimit
from api_gateway.routes import ROUTES, router
from api_gateway.settings import GatewaySettings
from api_gateway.state import State
from api_gateway.submit import Submissions
from shared.app import create_service_app, service_runtime, set_own_state
from shared.nats import close_nats, connect, nats_runtime


def create_app(
    settings: GatewaySettings | None = None,
    *,
    jwks: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            nats_runtime(app, settings.nats_url, "gateway", ["JOBS", "LOGS"]) as nats,
            service_runtime(app, settings, jwks=jwks) as rt,
        ):
            upstreams = Upstreams(rt.discovery, settings.upstream_timeout_seconds)
            # submissions on a connection of their own, without a reconnect buffer
            # (api_gateway/submit.py): a 503 then says truly whether the job can exist
            submit_nc = await connect(
                settings.nats_url, "gateway-submit", buffer_while_disconnected=False
            )
            submissions = Submissions(submit_nc, submit_nc.jetstream())
            set_own_state(app, State(nats.js, upstreams, rt.http, submissions))
            try:
                yield
            finally:
                await upstreams.aclose()
                await close_nats(submit_nc)

    app = create_service_app(
        settings, title="Dante API gateway", lifespan=lifespan, openapi_url=None
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, exempt=("/api/v1/storage/",))
    app.add_middleware(
        RateLimit,
        enabled=settings.rate_limit_enabled,
        user_rate=settings.rate_limit_user_per_second,
        user_burst=settings.rate_limit_user_burst,
        ip_rate=settings.rate_limit_ip_per_second,
        ip_burst=settings.rate_limit_ip_burst,
        provider_rate=settings.rate_limit_provider_per_second,
        provider_burst=settings.rate_limit_provider_burst,
    )
    app.add_middleware(Authenticate)  # added last, so it runs first: before the rate limit
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
    app.include_router(docs_router(ROUTES))  # /openapi.json and /docs: the merged public API
    app.include_router(router)
    # innermost, after every middleware above and shared.app's (request id, input guard): the
    # hot paths skip FastAPI's routing and dependency solving (api_gateway/fastlane.py)
    app.user_middleware.append(Middleware(FastLane, routes=router.routes))
    return app
