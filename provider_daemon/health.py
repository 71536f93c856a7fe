"""The daemon's own small HTTP server: /health, /ready (NATS, registered, loops), /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from provider_daemon.settings import DaemonSettings
from shared.app import create_service_app, service_state
from shared.http_server import limited_protocol


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent's stop event decides when to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_app(settings: DaemonSettings, nc: NATS, registered: Callable[[], bool]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = create_service_app(settings, title="Dante provider daemon", lifespan=lifespan)

    async def nats_ok() -> None:
        await nc.flush(timeout=2)

    async def registered_ok() -> None:
        if not registered():
            raise RuntimeError("not registered")

    service_state(app).ready_checks["nats"] = nats_ok
    service_state(app).ready_checks["registered"] = registered_ok
    return app


def health_server(app: FastAPI, settings: DaemonSettings) -> QuietServer:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # the same header limits and timeouts as every service (issue 18)
        http=limited_protocol(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout_seconds,
        ),
        timeout_keep_alive=int(settings.http_keepalive_seconds),
    )
    return QuietServer(config)
