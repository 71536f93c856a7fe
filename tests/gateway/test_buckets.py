"""Provider daemons have their own rate-limit bucket at the gateway (issue 18): a busy client
on the same address does not get their heartbeats refused, and they do not drain its bucket.
The gateway in-process over real NATS; tokens signed by the test keyring."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from api_gateway.main import create_app
from api_gateway.settings import GatewaySettings

LIMITS = {
    "rate_limit_ip_per_second": 0.01,
    "rate_limit_ip_burst": 5,
    "rate_limit_user_per_second": 1000,
    "rate_limit_user_burst": 1000,
    "rate_limit_provider_per_second": 0.01,
    "rate_limit_provider_burst": 20,
}


@contextlib.asynccontextmanager
async def gateway(
    nats_url: str, jwks: Callable[[], Any], **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings(nats_url=nats_url, port=1, **overrides), jwks=jwks)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def test_daemons_have_their_own_bucket(
    nats_url: str, local_jwks: Callable[[], Any], mint_token: Callable[..., str]
) -> None:
    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    async with gateway(nats_url, local_jwks, **LIMITS) as gw:
        user = bearer(mint_token("requester"))
        codes = [(await gw.get("/api/v1/nothing", headers=user)).status_code for _ in range(6)]
        assert codes.count(429) == 1 and codes[-1] == 429  # the address is spent
        daemon = bearer(mint_token("provider", provider_id=str(uuid.uuid4())))
        codes = [(await gw.get("/api/v1/nothing", headers=daemon)).status_code for _ in range(20)]
        assert 429 not in codes  # a daemon on the same address is not refused...
        r = await gw.get("/api/v1/nothing", headers=daemon)
        assert r.status_code == 429 and r.json()["detail"] == "too many requests per provider"
        # ...has a bucket per provider, and never drew on the address's
        other = bearer(mint_token("provider", provider_id=str(uuid.uuid4())))
        assert (await gw.get("/api/v1/nothing", headers=other)).status_code != 429
        # a token that merely claims a provider id gets no bucket of its own
        forged = bearer(mint_token("provider", provider_id=str(uuid.uuid4()), iss="someone"))
        r = await gw.get("/api/v1/nothing", headers=forged)
        assert r.status_code == 429 and r.json()["detail"] == "too many requests per address"
