"""The daemon's calls to the platform, all through the gateway with its provider token."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)


class CredentialsRejected(Exception):
    """The API key was refused: retrying will not help."""


class GatewayClient:
    def __init__(self, gateway_url: str, api_key: str, http: httpx.AsyncClient) -> None:
        self.base = gateway_url.rstrip("/")
        self.api_key = api_key
        self.http = http
        self.provider_id: str | None = None
        self._token: str | None = None
        self._expires = 0.0

    async def _bearer(self) -> str:
        # Re-exchange a minute before expiry so no call ever goes out with a stale token.
        if self._token is None or time.time() > self._expires - 60:
            resp = await self.http.post(
                f"{self.base}/api/v1/auth/token", json={"api_key": self.api_key}
            )
            if resp.status_code == 401:
                raise CredentialsRejected("the gateway refused this provider's API key")
            resp.raise_for_status()
            body = resp.json()
            self._token = body["access_token"]
            self.provider_id = body["provider_id"]
            self._expires = datetime.fromisoformat(body["expires_at"]).timestamp()
        return self._token

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {await self._bearer()}"}
        resp = await self.http.request(method, f"{self.base}{path}", headers=headers, **kwargs)
        if resp.status_code == 401:  # revoked or rotated: one fresh exchange, then give up
            self._token = None
            headers = {"authorization": f"Bearer {await self._bearer()}"}
            resp = await self.http.request(method, f"{self.base}{path}", headers=headers, **kwargs)
        resp.raise_for_status()
        return resp

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._bearer()
        resp = await self.request("POST", "/api/v1/providers", json=body)
        return resp.json()

    async def heartbeat(self, body: dict[str, Any]) -> None:
        await self.request("POST", f"/api/v1/providers/{self.provider_id}/heartbeat", json=body)

    async def nats_credentials(self, public_key: str) -> dict[str, Any] | None:
        """A NATS user JWT for this provider's nkey; None where the platform runs NATS without
        per-provider users (the auth service answers ``nats_auth_disabled``)."""
        headers = {"authorization": f"Bearer {await self._bearer()}"}
        resp = await self.http.post(
            f"{self.base}/api/v1/auth/nats-credentials",
            json={"public_key": public_key},
            headers=headers,
        )
        if resp.status_code == 404 and resp.json().get("error") == "nats_auth_disabled":
            return None
        resp.raise_for_status()
        return resp.json()
