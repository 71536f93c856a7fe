"""The gateway verifies a request's token once, in front of its rate limiter; the routes and
the limiter use that one result, and a bad token still ends in a 401 only where one is needed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from api_gateway.main import create_app
from api_gateway.settings import GatewaySettings
from shared.app import service_state
from shared.auth import Principal, TokenVerifier


class CountingVerifier:
    """The real verifier, counting the tokens it was asked to verify."""

    def __init__(self, inner: TokenVerifier) -> None:
        self.inner = inner
        self.calls = 0

    async def verify(self, token: str) -> Principal:
        self.calls += 1
        return await self.inner.verify(token)


@pytest.fixture
async def gateway(
    nats_url: str, local_jwks: Callable[[], Any]
) -> AsyncIterator[tuple[httpx.AsyncClient, CountingVerifier]]:
    app = create_app(GatewaySettings(nats_url=nats_url, port=1), jwks=local_jwks)
    async with app.router.lifespan_context(app):
        state = service_state(app)
        assert state.verifier is not None
        counting = CountingVerifier(state.verifier)
        state.verifier = counting  # type: ignore[assignment]
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, counting


async def test_a_token_is_verified_once_per_request(
    gateway: tuple[httpx.AsyncClient, CountingVerifier], mint_token: Callable[..., str]
) -> None:
    client, verifier = gateway
    headers = {"authorization": f"Bearer {mint_token('requester', 'alice')}"}
    job = {"type": "script", "name": "once", "params": {"script_content": "true"}}
    r = await client.post("/api/v1/jobs", json=job, headers=headers)  # a gateway route
    assert r.status_code == 202
    assert verifier.calls == 1
    r = await client.get("/api/v1/jobs", headers=headers)  # proxied (no scheduler: 503)
    assert r.status_code == 503
    assert verifier.calls == 2


async def test_a_bad_token_is_a_401_where_a_caller_is_needed_and_nowhere_else(
    gateway: tuple[httpx.AsyncClient, CountingVerifier],
) -> None:
    client, _ = gateway
    bad = {"authorization": "Bearer not.a.token"}
    r = await client.get("/api/v1/jobs/x", headers=bad)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert (await client.get("/api/v1/nowhere", headers=bad)).status_code == 404
    assert (await client.get("/health", headers=bad)).status_code == 200


async def test_expired_and_revoked_tokens_are_told_apart_from_garbage(
    gateway: tuple[httpx.AsyncClient, CountingVerifier],
    mint_token: Callable[..., str],
    local_jwks: Callable[[], Any],
) -> None:
    client, verifier = gateway
    revoked_user = "revoked-user"

    async def feed() -> dict[str, Any]:
        return {"users": {revoked_user: 4102444800.0}}  # every token issued before 2100

    verifier.inner = TokenVerifier(
        local_jwks, issuer="dante-auth", audience="dante", fetch_revocations=feed
    )
    cases = {
        mint_token("requester", ttl=-60): "token_expired",
        mint_token("requester", revoked_user): "token_revoked",
        "not.a.token": "unauthorized",
    }
    for token, code in cases.items():
        headers = {"authorization": f"Bearer {token}"}
        for method, path in (("GET", "/api/v1/jobs/x"), ("GET", "/api/v1/jobs/x/logs")):
            r = await client.request(method, path, headers=headers)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"] == code, (path, r.text)
    job = {"type": "script", "name": "late", "params": {"script_content": "true"}}
    r = await client.post(
        "/api/v1/jobs", json=job, headers={"authorization": f"Bearer {mint_token(ttl=-60)}"}
    )
    assert r.status_code == 401 and r.json()["error"] == "token_expired"
