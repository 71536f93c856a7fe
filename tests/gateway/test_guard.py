"""The gateway's guard, in-process over real NATS and real sockets: token-bucket rate limits
per user and per address (429 + Retry-After), upstream timeout (504), no upstream (503 +
Retry-After)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from api_gateway.main import create_app
from api_gateway.ratelimit import TokenBuckets
from api_gateway.settings import GatewaySettings
from tests.support.asgi import served
from tests.support.servers import free_port


@contextlib.asynccontextmanager
async def gateway(
    nats_url: str, jwks: Callable[[], Any], **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(nats_url=nats_url, port=1, **overrides)
    app = create_app(settings, jwks=jwks)
    async with served(app, "http://gw", peer=("192.0.2.1", 5000)) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_token_bucket_refills_at_its_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("k", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", now=100.0) == 0.5  # one token takes half a second at 2/s
    assert buckets.take("k", now=100.5) == 0.0
    assert buckets.take("other", now=100.5) == 0.0


async def test_per_user_limit_answers_429_with_retry_after(
    nats_url: str, local_jwks: Callable[[], Any], mint_token: Callable[..., str]
) -> None:
    limits = {
        "rate_limit_user_per_second": 0.01,
        "rate_limit_user_burst": 3,
        "rate_limit_ip_per_second": 1000,
        "rate_limit_ip_burst": 1000,
    }
    async with gateway(nats_url, local_jwks, **limits) as gw:
        alice = _bearer(mint_token("requester", "alice"))
        codes = [
            (await gw.get("/api/v1/nothing-here", headers=alice)).status_code for _ in range(3)
        ]
        assert 429 not in codes
        r = await gw.get("/api/v1/nothing-here", headers=alice)
        assert r.status_code == 429
        assert r.json() == {"error": "rate_limited", "detail": "too many requests per user"}
        assert int(r.headers["retry-after"]) >= 1
        # a second token of the same user shares the bucket; another user has its own
        r = await gw.get("/api/v1/nothing-here", headers=_bearer(mint_token("requester", "alice")))
        assert r.status_code == 429
        bob = _bearer(mint_token("requester", "bob"))
        assert (await gw.get("/api/v1/nothing-here", headers=bob)).status_code != 429
        # a forged token naming alice is not alice: it does not touch her bucket (401 instead)
        r = await gw.get("/api/v1/jobs/x", headers=_bearer("forged.token.value"))
        assert r.status_code == 401
        assert (await gw.get("/health")).status_code == 200  # probes are never limited


async def test_per_address_limit_counts_unauthenticated_requests(
    nats_url: str, local_jwks: Callable[[], Any]
) -> None:
    limits = {"rate_limit_ip_per_second": 0.01, "rate_limit_ip_burst": 2}
    async with gateway(nats_url, local_jwks, **limits) as gw:
        body = {"username": "nobody-here", "password": "whatever it is"}
        for _ in range(2):
            r = await gw.post("/api/v1/auth/login", json=body)
            assert r.status_code != 429
        r = await gw.post("/api/v1/auth/login", json=body)
        assert r.status_code == 429 and r.json()["detail"] == "too many requests per address"
        assert int(r.headers["retry-after"]) >= 1


async def test_silent_upstream_is_a_504_and_a_dead_one_a_503(
    nats_url: str, local_jwks: Callable[[], Any], mint_token: Callable[..., str]
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    dead_port = free_port()  # nothing listens here
    services = {
        "scheduler": [f"http://127.0.0.1:{silent_port}"],
        "registry": [f"http://127.0.0.1:{dead_port}"],
    }
    token = _bearer(mint_token("requester"))
    try:
        async with gateway(
            nats_url, local_jwks, static_services=services, upstream_timeout_seconds=0.5
        ) as gw:
            r = await gw.get("/api/v1/jobs/some-job", headers=token)
            assert r.status_code == 504
            assert r.json()["error"] == "upstream_timeout" and accepted
            # refused connections: 503 with Retry-After, also for a request with a body
            r = await gw.get("/api/v1/providers", headers=token)
            assert r.status_code == 503 and r.json()["error"] == "service_unavailable"
            assert int(r.headers["retry-after"]) >= 1
            r = await gw.post("/api/v1/providers/register", headers=token, json={})
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            # a service discovery knows no instance of at all
            r = await gw.get("/api/v1/storage/objects/x", headers=token)
            assert r.status_code == 503 and r.json()["error"] == "service_unavailable"
            assert int(r.headers["retry-after"]) >= 1
    finally:
        silent.close()
        for w in accepted:
            w.close()
        await silent.wait_closed()
