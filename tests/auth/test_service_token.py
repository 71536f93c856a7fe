"""Client-credentials grant and ``ServiceTokenSource`` against a real auth service process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from auth_service.settings import AuthSettings
from shared.auth import TokenVerifier
from shared.errors import Unauthorized
from shared.service_auth import DEV_SERVICE_SECRET, ServiceTokenSource, static_token_url
from tests.support.auth import SCHEDULER_SECRET, AuthProcess, auth_process
from tests.support.wait import eventually_async


def _verifier(auth: AuthProcess) -> TokenVerifier:
    async def fetch() -> dict:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{auth.url}/.well-known/jwks.json")).json()

    return TokenVerifier(fetch, issuer="dante-auth", audience="dante")


def test_client_credentials_grant_issues_a_service_token(auth_server: AuthProcess) -> None:
    body = {
        "grant_type": "client_credentials",
        "client_id": "scheduler",
        "client_secret": SCHEDULER_SECRET,
    }
    r = httpx.post(f"{auth_server.url}/api/v1/auth/token", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["token_type"] == "bearer" and data["expires_at"]
    principal = asyncio.run(_verifier(auth_server).verify(data["access_token"]))
    assert principal.role == "service" and principal.is_service
    assert principal.user_id == "service:scheduler"
    assert principal.provider_id is None


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("scheduler", "wrong-secret"), ("nobody", SCHEDULER_SECRET), ("scheduler", "")],
    ids=["wrong-secret", "unknown-client", "empty-secret"],  # stable across xdist workers
)
def test_wrong_client_credentials_are_refused(
    auth_server: AuthProcess, client_id: str, secret: str
) -> None:
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    r = httpx.post(f"{auth_server.url}/api/v1/auth/token", json=body)
    assert r.status_code in (401, 422), r.text
    assert r.json()["error"] in ("invalid_client", "validation_error")
    assert "access_token" not in r.json()


def test_api_key_grant_still_needs_a_key(auth_server: AuthProcess) -> None:
    r = httpx.post(f"{auth_server.url}/api/v1/auth/token", json={})
    assert r.status_code == 422
    r = httpx.post(f"{auth_server.url}/api/v1/auth/token", json={"api_key": "dk_nope"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_api_key"


async def test_token_source_caches_and_fetches_once_for_concurrent_callers(
    auth_server: AuthProcess,
) -> None:
    url = static_token_url(f"{auth_server.url}/api/v1/auth/token")
    async with httpx.AsyncClient() as http:
        source = ServiceTokenSource(url, "scheduler", SCHEDULER_SECRET, http=http)
        tokens = await asyncio.gather(*(source.bearer() for _ in range(20)))
        assert len(set(tokens)) == 1 and source.fetches == 1
        assert await source.bearer() == tokens[0] and source.fetches == 1
        principal = await _verifier(auth_server).verify(tokens[0])
        assert principal.user_id == "service:scheduler"
        assert (await source.headers())["authorization"] == f"Bearer {tokens[0]}"
        source.invalidate()
        await source.bearer()
        assert source.fetches == 2
        assert SCHEDULER_SECRET not in repr(source)


async def test_token_source_refetches_a_token_near_expiry(tmp_path: Path) -> None:
    """A token living less than twice the margin is refreshed at half-life, so a 3 s token is
    replaced by a new one well before it expires."""
    with auth_process(tmp_path, SERVICE_TOKEN_TTL_SECONDS="3") as auth:
        url = static_token_url(f"{auth.url}/api/v1/auth/token")
        source = ServiceTokenSource(url, "scheduler", SCHEDULER_SECRET)
        first = await source.bearer()
        assert await source.bearer() == first and source.fetches == 1

        async def refreshed() -> str | None:
            latest = await source.bearer()
            return latest if source.fetches >= 2 else None

        latest = await eventually_async(refreshed, interval=0.2, what="the token refreshed")
        assert latest != first
        principal = await _verifier(auth).verify(latest)
        assert principal.role == "service"


async def test_token_source_reports_refused_credentials(auth_server: AuthProcess) -> None:
    url = static_token_url(f"{auth_server.url}/api/v1/auth/token")
    source = ServiceTokenSource(url, "scheduler", "not-the-secret")
    with pytest.raises(Unauthorized):
        await source.bearer()


def test_weak_or_default_client_secret_is_refused_outside_dev() -> None:
    strong = "x" * 40
    with pytest.raises(ValueError, match="SERVICE_CLIENTS"):
        AuthSettings(
            environment="prod",
            admin_password="a-real-admin-pw-123",
            service_clients={"scheduler": DEV_SERVICE_SECRET},
        )
    with pytest.raises(ValueError, match="SERVICE_CLIENTS"):
        AuthSettings(
            environment="prod",
            admin_password="a-real-admin-pw-123",
            service_clients={"scheduler": "short"},
        )
    ok = AuthSettings(
        environment="prod", admin_password="a-real-admin-pw-123", service_clients={"s": strong}
    )
    assert ok.service_clients == {"s": strong}
    dev = AuthSettings(environment="dev").service_clients
    assert dev["scheduler"] == DEV_SERVICE_SECRET and set(dev) >= {"gateway", "registry"}
    # outside dev, no configured client means no client (not the dev default)
    prod = AuthSettings(environment="prod", admin_password="a-real-admin-pw-123")
    assert prod.service_clients == {}
