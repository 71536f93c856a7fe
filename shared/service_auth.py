"""Service-to-service calls: a client-credentials token from the auth service, cached.

    source = ServiceTokenSource(token_url_from_discovery(discovery), "scheduler", secret, http=http)
    resp = await http.post(url, json=..., headers=await source.headers())

The token is fetched once and reused until ``refresh_margin`` seconds (60) before it expires;
concurrent callers share one fetch (single flight). Call :meth:`invalidate` after a 401 (the
auth service rotated its key and dropped the old one, or the token was revoked).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
import structlog

from shared.discovery import Discovery
from shared.errors import ServiceUnavailable, Unauthorized

log = structlog.get_logger(__name__)

TokenUrlResolver = Callable[[], Awaitable[str]]
DEV_SERVICE_SECRET = "dante-dev-service-secret"
"""The scheduler's client secret in dev mode on both sides (auth accepts it only in dev)."""
TOKEN_PATH = "/api/v1/auth/token"


def token_url_from_discovery(discovery: Discovery) -> TokenUrlResolver:
    """The auth service's token endpoint, wherever discovery says auth runs now."""

    async def resolve() -> str:
        return (await discovery.resolve("auth"))[0] + TOKEN_PATH

    return resolve


def static_token_url(url: str) -> TokenUrlResolver:
    async def resolve() -> str:
        return url

    return resolve


class ServiceTokenSource:
    def __init__(
        self,
        token_url_resolver: TokenUrlResolver,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.AsyncClient | None = None,
        refresh_margin: float = 60.0,
    ) -> None:
        self._resolve = token_url_resolver
        self._client_id = client_id
        self._secret = client_secret
        self._http = http
        self._margin = refresh_margin
        self._token: str | None = None
        self._refresh_at = float("-inf")  # monotonic time after which we fetch again
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many tokens were fetched (metrics, tests)

    def __repr__(self) -> str:  # never print the secret or the token
        return f"ServiceTokenSource(client_id={self._client_id!r})"

    async def bearer(self) -> str:
        """A valid access token (the bare JWT, without ``Bearer``)."""
        token = self._token
        if token is not None and time.monotonic() < self._refresh_at:
            return token
        async with self._lock:
            # Whoever held the lock before us may have fetched already: single flight.
            if self._token is not None and time.monotonic() < self._refresh_at:
                return self._token
            return await self._fetch()

    async def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {await self.bearer()}"}

    def invalidate(self) -> None:
        self._token = None
        self._refresh_at = float("-inf")

    async def _fetch(self) -> str:
        url = await self._resolve()
        body = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret,
        }
        try:
            if self._http is not None:
                resp = await self._http.post(url, json=body, timeout=10)
            else:
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.post(url, json=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"auth service unreachable: {type(exc).__name__}") from exc
        if resp.status_code in (400, 401, 422):
            log.error("service_token.refused", client_id=self._client_id, status=resp.status_code)
            raise Unauthorized("the auth service refused this service's client credentials")
        if resp.status_code != 200:
            raise ServiceUnavailable(f"auth service answered {resp.status_code}")
        data = resp.json()
        expires_at = datetime.fromisoformat(data["expires_at"])
        lifetime = expires_at.timestamp() - time.time()
        # Refresh a minute early; a token shorter-lived than that is refreshed at half-life.
        margin = self._margin if lifetime > 2 * self._margin else lifetime / 2
        self._token = data["access_token"]
        self._refresh_at = time.monotonic() + max(0.0, lifetime - margin)
        self.fetches += 1
        log.info("service_token.fetched", client_id=self._client_id, ttl=int(lifetime))
        return self._token
