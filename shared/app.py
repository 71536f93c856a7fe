"""What every service app has: request context, /health, /ready, /metrics, errors, discovery."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import TokenVerifier
from shared.discovery import Discovery, ServiceInstance, make_discovery
from shared.errors import error_response, install_error_handlers
from shared.logging import (
    configure_logging,
    new_correlation_id,
    valid_correlation_id,
)
from shared.metrics import route_template
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[Any]]

http_requests = Counter(
    "dante_http_requests_total", "HTTP requests served.", ["method", "route", "status"]
)
http_latency = Histogram(
    "dante_http_request_duration_seconds", "HTTP request latency.", ["method", "route"]
)


class RequestContext:
    """Pure ASGI middleware: correlation id in and out, one log line and metrics per request.

    Pure ASGI rather than ``BaseHTTPMiddleware`` so streamed responses (logs, objects) pass
    through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        cid = incoming if valid_correlation_id(incoming) else new_correlation_id()
        scope.setdefault("state", {})["correlation_id"] = cid
        status = 500
        start = time.perf_counter()

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", cid.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=cid):
            try:
                await self.app(scope, receive, _send)
            finally:
                path = route_template(scope)
                elapsed = time.perf_counter() - start
                http_requests.labels(scope["method"], path, str(status)).inc()
                http_latency.labels(scope["method"], path).observe(elapsed)
                if path not in ("/health", "/metrics"):
                    log.info(
                        "http.request",
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        ms=round(elapsed * 1000, 1),
                    )


def correlation_id(request: Request) -> str:
    return request.scope.get("state", {}).get("correlation_id") or new_correlation_id()


def _ops_router() -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/health")
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "service": request.app.state.settings.service_name}

    @router.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        results: dict[str, str] = {}
        ok = True
        for name, check in request.app.state.ready_checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"unavailable: {type(exc).__name__}"
        if ok:
            return JSONResponse({"status": "ready", "checks": results})
        return error_response(503, "not_ready", results)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Callable[[FastAPI], Any],
    version: str = "0.1.0",
) -> FastAPI:
    app = FastAPI(title=title, version=version, lifespan=lifespan)
    app.state.settings = settings
    app.state.ready_checks = {}
    install_error_handlers(app)
    app.add_middleware(RequestContext)
    app.include_router(_ops_router())
    return app


@dataclass
class Runtime:
    """Per-process clients built in the lifespan and handed out from ``app.state``."""

    settings: ServiceSettings
    discovery: Discovery
    http: httpx.AsyncClient
    verifier: TokenVerifier
    instance: ServiceInstance
    extra: dict[str, Any] = field(default_factory=dict)


def jwks_from_discovery(discovery: Discovery, http: httpx.AsyncClient) -> Callable[[], Any]:
    async def fetch() -> dict[str, Any]:
        base = (await discovery.resolve("auth"))[0]
        resp = await http.get(f"{base}/.well-known/jwks.json", timeout=5)
        resp.raise_for_status()
        return resp.json()

    return fetch


def revocations_from_discovery(discovery: Discovery, http: httpx.AsyncClient) -> Callable[[], Any]:
    async def fetch() -> dict[str, Any]:
        base = (await discovery.resolve("auth"))[0]
        resp = await http.get(f"{base}/internal/revocations", timeout=2)
        resp.raise_for_status()
        return resp.json()

    return fetch


@asynccontextmanager
async def service_runtime(
    app: FastAPI,
    settings: ServiceSettings,
    *,
    jwks: Callable[[], Any] | None = None,
    revocations: Callable[[], Any] | None = None,
) -> AsyncIterator[Runtime]:
    """Discovery registration, an HTTP client and the token verifier, for one service process.

    Tests that hand in their own ``jwks`` (no auth service running) get no revocation feed
    unless they hand one in too.
    """
    discovery = make_discovery(settings)
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0))
    if revocations is None and jwks is None:
        revocations = revocations_from_discovery(discovery, http)
    verifier = TokenVerifier(
        jwks or jwks_from_discovery(discovery, http),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        fetch_revocations=revocations,
        revocation_poll=settings.revocation_poll_seconds,
    )
    instance = ServiceInstance(
        name=settings.service_name,
        instance_id=f"{settings.service_name}-{uuid.uuid4().hex[:8]}",
        host=settings.advertise_host or settings.host,
        port=settings.port,
    )
    app.state.verifier = verifier
    app.state.discovery = discovery
    app.state.http = http
    runtime = Runtime(settings, discovery, http, verifier, instance)
    await discovery.register(instance)
    log.info("service.started", port=settings.port, discovery=settings.discovery)
    try:
        yield runtime
    finally:
        try:
            await discovery.deregister(instance)
        except Exception as exc:  # shutting down anyway; say so and go on
            log.warning("discovery.deregister_failed", error=str(exc))
        await http.aclose()
        await discovery.close()
        log.info("service.stopped")


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service under uvicorn with our logging (no access log: the middleware logs)."""
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Longer than the gateway keeps an idle upstream connection (10 s): the side that
        # reuses a connection must be the one to close it first, or a request sent as the
        # server closes is lost ("Server disconnected"), and one with a body cannot be retried.
        timeout_keep_alive=30,
    )


def setup_logging(settings: ServiceSettings) -> None:
    configure_logging(settings.service_name, json=settings.json_logs, level=settings.log_level)
