"""Storage fixtures: a real S3 server (``weed mini``, signatures checked) and the app served
in-process over ``httpx.ASGITransport``, once per backend."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage_service.main import create_app
from storage_service.settings import MiB, StorageSettings
from tests.support.asgi import served
from tests.support.servers import S3Server, weed_mini

S3_ACCESS_KEY = "dante-test"
S3_SECRET_KEY = "dante-test-secret-0123456789"
MAX_OBJECT = 12 * MiB  # small enough to test the cap quickly, above one 5 MiB S3 part
BASE_URL = "http://storage.test"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with weed_mini(S3_ACCESS_KEY, S3_SECRET_KEY) as server:
        yield server


def storage_settings(
    backend: str, tmp: Path, s3: S3Server | None, **overrides: Any
) -> StorageSettings:
    values: dict[str, Any] = {
        "backend": backend,
        "root_dir": tmp / "objects",
        "max_object_size": MAX_OBJECT,
        "s3_part_size": 5 * MiB,
        "startup_wait_seconds": 0,
        "default_bucket": "dante",
    }
    if s3 is not None:
        values |= {
            "s3_endpoint": s3.endpoint,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
        }
    values |= overrides
    return StorageSettings(**values)


@dataclass
class Storage:
    """One backend's app, its client, and helpers to act as a given user."""

    backend: str
    app: Any
    client: httpx.AsyncClient
    mint: Callable[..., str]

    def user(self, role: str = "requester") -> User:
        user_id = str(uuid.uuid4())
        return User(self, user_id, self.mint(role, user_id))


@dataclass
class User:
    storage: Storage
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        return await self.storage.client.request(
            method, f"/api/v1/storage{path}", headers=headers, **kwargs
        )

    async def put(self, key: str, content: Any = b"", **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", f"/objects/{key}", content=content, **kwargs)

    async def get(self, key: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", f"/objects/{key}", **kwargs)


@pytest.fixture(scope="session", params=["local", "s3"])
async def storage(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    local_jwks: Callable[[], Any],
    mint_token: Callable[..., str],
) -> AsyncIterator[Storage]:
    backend = request.param
    s3 = request.getfixturevalue("s3_server") if backend == "s3" else None
    settings = storage_settings(backend, tmp_path_factory.mktemp(f"storage-{backend}"), s3)
    app = create_app(settings, jwks=local_jwks)
    async with served(app, BASE_URL) as client:
        yield Storage(backend, app, client, mint_token)


# --- the gateway in front of storage, both served on real sockets -----------------------------


@contextlib.asynccontextmanager
async def on_port(app: Any, port: int) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a real socket in this event loop (lifespan included): the
    gateway's upstream client and presigned URLs need a real address."""
    import asyncio

    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"server on {port} stopped before it started")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def echo_app() -> Any:
    """A stand-in upstream that tells what reached it, and one route that answers late."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"headers": dict(request.headers), "size": len(body)})

    async def slow(request: Request) -> JSONResponse:
        await request.body()
        await asyncio.sleep(3)  # past the gateway's 1 s upstream timeout
        return JSONResponse({})

    return Starlette(
        routes=[
            Route("/api/v1/providers/echo", echo, methods=["GET", "POST"]),
            Route("/api/v1/providers/slow", slow, methods=["GET", "POST"]),
        ]
    )


@dataclass
class Gateway:
    url: str
    client: httpx.AsyncClient  # a real HTTP client to the gateway; no token unless added
    via: Storage  # users whose requests go through the gateway to storage


@pytest.fixture(scope="session", params=["local", "s3"])
async def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    local_jwks: Callable[[], Any],
    mint_token: Callable[..., str],
    nats_url: str,
) -> AsyncIterator[Gateway]:
    """API gateway → storage (presigned URLs naming the gateway, as localdev sets it up), plus
    an echo upstream for the registry's routes and a dead port for the scheduler's. The S3
    backend signs URLs itself here (``presign_via=service``) so they also go through the
    gateway."""
    from api_gateway.main import create_app as create_gateway
    from api_gateway.settings import GatewaySettings
    from tests.support.servers import free_port

    backend = request.param
    s3 = request.getfixturevalue("s3_server") if backend == "s3" else None
    gw_port, storage_port, echo_port = free_port(), free_port(), free_port()
    gw_url = f"http://127.0.0.1:{gw_port}"
    settings = storage_settings(
        backend,
        tmp_path_factory.mktemp(f"gw-storage-{backend}"),
        s3,
        port=storage_port,
        public_url=gw_url,
        presign_via="service",
    )
    storage_app = create_app(settings, jwks=local_jwks)
    gw_settings = GatewaySettings(
        nats_url=nats_url,
        port=gw_port,
        max_body_bytes=64 * 1024,
        upstream_timeout_seconds=1.0,
        static_services={
            "storage": [f"http://127.0.0.1:{storage_port}"],
            "registry": [f"http://127.0.0.1:{echo_port}"],
            "scheduler": [f"http://127.0.0.1:{free_port()}"],  # nothing listens there
        },
    )
    async with (
        on_port(storage_app, storage_port),
        on_port(echo_app(), echo_port),
        on_port(create_gateway(gw_settings, jwks=local_jwks), gw_port),
        httpx.AsyncClient(base_url=gw_url, timeout=60) as client,
    ):
        yield Gateway(gw_url, client, Storage(backend, storage_app, client, mint_token))
