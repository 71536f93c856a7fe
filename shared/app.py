"""What every service app has: request context, /health, /ready, /metrics, errors, discovery."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import TokenVerifier
from shared.discovery import Discovery, ServiceInstance, make_discovery
from shared.errors import ServiceUnavailable, error_response, install_error_handlers
from shared.gc_tuning import tune_gc
from shared.http_server import limited_protocol, raise_open_file_limit
from shared.input_guard import InputGuard
from shared.logging import (
    configure_logging,
    new_correlation_id,
    valid_correlation_id,
)
from shared.metrics import route_template
from shared.openapi import install_openapi
from shared.service_auth import DEV_SERVICE_SECRET, ServiceTokenSource, token_url_from_discovery
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[Any]]

http_requests = Counter(
    "dante_http_requests_total", "HTTP requests served.", ["method", "route", "status"]
)
http_latency = Histogram(
    "dante_http_request_duration_seconds", "HTTP request latency.", ["method", "route"]
)


class _Series:
    """The RED series of one (method, route, status), resolved once: ``labels()`` looks the
    child up by a tuple of strings each time (two of them per request). The label values are
    the small sets ``shared.metrics`` describes, so this holds as many entries as there are
    series."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                http_requests.labels(method, route, str(status)),
                http_latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


_series = _Series()
_QUIET_PATHS = frozenset({"/health", "/metrics"})


class RequestContext:
    """Pure ASGI middleware: correlation id in and out, one log line and metrics per request.

    Pure ASGI rather than ``BaseHTTPMiddleware`` so streamed responses (logs, objects) pass
    through untouched. It runs on every request of every service, so it keeps to plain
    calls: the correlation id is bound and reset by token (not a generator context
    manager), and the metric children are resolved once per series (``_Series``).
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
        header = (b"x-request-id", cid.encode())
        status = 500
        started = False
        start = time.perf_counter()

        async def _send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(correlation_id=cid)
        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            # Answered here, not re-raised: past this point Starlette re-raises to uvicorn,
            # which logs it a second time and closes the connection, and the gateway's next
            # request on that connection failed with 503 (issue 18).
            log.error("request.crashed", error=type(exc).__name__, exc_info=exc)
            if started:
                raise  # half a response is out: only closing the connection can tell
            response = error_response(500, "internal_error", "internal error")
            await response(scope, receive, _send)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            _series.record(scope["method"], route, status, elapsed)
            if route not in _QUIET_PATHS:
                # the idle cluster's own traffic (heartbeats, revocation polls) goes to debug
                level = logging.DEBUG if _routine(scope["path"], status) else logging.INFO
                log.log(
                    level,
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=round(elapsed * 1000, 1),
                )
            structlog.contextvars.reset_contextvars(**tokens)


def _routine(path: str, status: int) -> bool:
    """A request every idle cluster repeats (a daemon's heartbeat, a service polling the
    revocation feed): logged at debug unless it failed, or ``make dev`` logged ~36 lines a
    minute with nothing happening."""
    return status < 400 and (path.endswith("/heartbeat") or path == "/internal/revocations")


def correlation_id(request: Request) -> str:
    return scope_correlation_id(request.scope)


def scope_correlation_id(scope: Scope) -> str:
    """The request's correlation id (``RequestContext`` set it), for pure ASGI code."""
    cid: str | None = scope.get("state", {}).get("correlation_id")
    return cid or new_correlation_id()


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    service: str


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(description="each dependency checked: ok")


def _ops_router() -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/health")
    async def health(request: Request) -> HealthOut:
        return HealthOut(service=service_state(request.app).settings.service_name)

    @router.get(
        "/ready",
        response_model=ReadyOut,
        responses={503: {"description": "a dependency is unavailable (error: not_ready)"}},
    )
    async def ready(request: Request) -> Response:
        results: dict[str, str] = {}
        ok = True
        # a copy: a loop starting meanwhile adds its check (shared/loops.py)
        for name, check in list(service_state(request.app).ready_checks.items()):
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"unavailable: {type(exc).__name__}"
        if ok:
            return JSONResponse(ReadyOut(checks=results).model_dump())
        return error_response(503, "not_ready", results)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


@dataclass
class ServiceState:
    """What every service app holds, typed, instead of free-form ``app.state`` attributes.

    Built by :func:`create_service_app`; the lifespan helpers fill in ``verifier``
    (:func:`service_runtime`) and ``sessions`` (``shared.db.service_database``). A service keeps
    its own clients in its own state class, set with :func:`set_own_state`.
    """

    settings: ServiceSettings
    ready_checks: dict[str, ReadyCheck] = field(default_factory=dict)
    verifier: TokenVerifier | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None


def service_state(app: Starlette) -> ServiceState:
    state: ServiceState = app.state.service
    return state


S = TypeVar("S")


def set_own_state(app: Starlette, state: object) -> None:
    """The service's own lifespan state (its ``State`` class in ``main.py``)."""
    app.state.own = state


def own_state(app: Starlette, kind: type[S]) -> S:
    state = getattr(app.state, "own", None)
    if not isinstance(state, kind):
        raise ServiceUnavailable("the service is still starting")
    return state


def own_state_dependency(kind: type[S]) -> Callable[[Request], Awaitable[S]]:
    """A FastAPI dependency handing routes the service's own state, typed. ``async`` on
    purpose: FastAPI runs a plain ``def`` dependency in a worker thread, on every request
    (12 % of the gateway's CPU per job submission, profiled in issue 12)."""

    async def dependency(request: Request) -> S:
        return own_state(request.app, kind)

    return dependency


NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's own OpenTelemetry hook off: metrics are Prometheus (``RequestContext``), and with
it on FastAPI asked OpenTelemetry for its three global providers on every request, each a
read of the environment (~8 % of the gateway's CPU per job submission, issue 12)."""


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Callable[[FastAPI], Any],
    version: str = "0.1.0",
    openapi_url: str | None = "/openapi.json",
) -> FastAPI:
    """The app with what every service has. No ``/docs``: FastAPI's page loads Swagger UI
    from a CDN, which nothing here may do at run time; the gateway serves the public API's
    documents itself (``api_gateway/openapi.py``). ``/openapi.json`` declares every
    operation's errors and security (``shared/openapi.py``)."""
    app = FastAPI(
        title=title,
        version=version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=openapi_url,
        telemetry=NO_OPENTELEMETRY,
    )
    install_openapi(app)
    app.state.service = ServiceState(settings)
    install_error_handlers(app)
    app.add_middleware(InputGuard)  # inside RequestContext: refusals are logged and counted
    app.add_middleware(RequestContext)
    app.include_router(_ops_router())
    return app


@dataclass
class Runtime:
    """Per-process clients built in the lifespan (a service keeps what it needs in its state)."""

    settings: ServiceSettings
    discovery: Discovery
    http: httpx.AsyncClient
    verifier: TokenVerifier
    instance: ServiceInstance

    def service_tokens(self, client_id: str, client_secret: str) -> ServiceTokenSource:
        """This service's client-credentials token for its calls to other services (cached)."""
        return ServiceTokenSource(
            token_url_from_discovery(self.discovery), client_id, client_secret, http=self.http
        )

    def base_url(self, service: str) -> Callable[[], Awaitable[str]]:
        """Where ``service`` runs now (the first instance discovery names), asked per call."""

        async def resolve() -> str:
            return (await self.discovery.resolve(service))[0]

        return resolve


def _auth_document(
    discovery: Discovery, http: httpx.AsyncClient, path: str, timeout: float
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A fetcher for one JSON document the auth service serves (wherever discovery says)."""

    async def fetch() -> dict[str, Any]:
        base = (await discovery.resolve("auth"))[0]
        resp = await http.get(f"{base}{path}", timeout=timeout)
        resp.raise_for_status()
        document: dict[str, Any] = resp.json()
        return document

    return fetch


def revocations_from_discovery(
    discovery: Discovery, http: httpx.AsyncClient, settings: ServiceSettings
) -> Callable[[], Any] | None:
    """The auth service's revocation feed, read with this service's own service token
    (``/internal/*`` answers to nothing else); None when the service has no credentials."""
    client_id = settings.service_client_id or settings.service_name
    secret = settings.service_client_secret or (DEV_SERVICE_SECRET if settings.dev else "")
    if not secret:
        log.error(
            "revocations.no_credentials",
            detail="set SERVICE_CLIENT_SECRET (and list it in auth's SERVICE_CLIENTS): "
            "without it revoked tokens stay valid here until they expire",
        )
        return None
    tokens = ServiceTokenSource(token_url_from_discovery(discovery), client_id, secret, http=http)

    async def fetch() -> dict[str, Any]:
        base = (await discovery.resolve("auth"))[0]
        for _ in range(2):
            resp = await http.get(
                f"{base}/internal/revocations", timeout=2, headers=await tokens.headers()
            )
            if resp.status_code != 401:
                break
            tokens.invalidate()  # auth rotated its key or revoked the token: fetch a new one
        resp.raise_for_status()
        feed: dict[str, Any] = resp.json()
        return feed

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
        revocations = revocations_from_discovery(discovery, http, settings)
    verifier = TokenVerifier(
        jwks or _auth_document(discovery, http, "/.well-known/jwks.json", timeout=5),
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
    service_state(app).verifier = verifier
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
    """Run one service under uvicorn with our logging (no access log: the middleware logs),
    header limits and timeouts (shared/http_server.py), a raised open-file limit, and the
    garbage collector tuned for a long-running process (shared/gc_tuning.py)."""
    raise_open_file_limit()
    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        http=limited_protocol(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout_seconds,
        ),
        # Longer than the gateway keeps an idle upstream connection (10 s): the side that
        # reuses a connection must be the one to close it first, or a request sent as the
        # server closes is lost ("Server disconnected"), and one with a body cannot be retried.
        timeout_keep_alive=int(settings.http_keepalive_seconds),
        backlog=settings.http_backlog,
    )


def setup_logging(settings: ServiceSettings) -> None:
    configure_logging(settings.service_name, json=settings.json_logs, level=settings.log_level)
