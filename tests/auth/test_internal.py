"""``/internal/*`` on the auth service answers only to a service token (issue 18): the
revocation feed lists revoked user, provider and token ids. A real auth service process."""

from __future__ import annotations

import httpx
from jose import jwt

from tests.support.auth import SCHEDULER_SECRET, AuthProcess


def test_the_revocation_feed_answers_only_to_a_service_token(auth_server: AuthProcess) -> None:
    url = f"{auth_server.url}/internal/revocations"
    r = httpx.get(url)
    assert r.status_code == 401 and r.json()["error"] in ("unauthorized", "missing_token")
    user = auth_server.user()
    assert httpx.get(url, headers=user["headers"]).status_code == 403
    assert httpx.get(url, headers=auth_server.admin()).status_code == 403
    # a user revoked now shows in the feed a service reads
    victim = auth_server.user()
    r = auth_server.post("/api/v1/auth/logout", victim["headers"], json={})
    assert r.status_code == 204, r.text
    grant = {
        "grant_type": "client_credentials",
        "client_id": "scheduler",
        "client_secret": SCHEDULER_SECRET,
    }
    token = httpx.post(f"{auth_server.url}/api/v1/auth/token", json=grant).json()["access_token"]
    r = httpx.get(url, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and set(r.json()) == {"users", "providers", "tokens"}
    assert jwt.get_unverified_claims(victim["access_token"])["jti"] in r.json()["tokens"]
