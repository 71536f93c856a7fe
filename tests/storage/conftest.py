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


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan ourselves (no asgi-lifespan) and talk to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as client:
            yield client


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
    async with served(app) as client:
        yield Storage(backend, app, client, mint_token)
