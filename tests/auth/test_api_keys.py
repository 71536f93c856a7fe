"""Provider API keys against a real auth service: list, exchange, revoke, expire."""

from __future__ import annotations

import sqlite3

import httpx

from tests.support.auth import AuthProcess


def _key(auth: AuthProcess, provider: dict, **body: object) -> dict:
    r = auth.post("/api/v1/auth/api-keys", provider["headers"], json={"name": "host-1", **body})
    assert r.status_code == 201, r.text
    return r.json()


def _exchange(auth: AuthProcess, api_key: str) -> httpx.Response:
    return auth.post("/api/v1/auth/token", json={"api_key": api_key})


def test_revoked_key_stops_exchanging_and_its_tokens_are_refused(auth_server: AuthProcess) -> None:
    provider = auth_server.user("provider")
    key = _key(auth_server, provider, expires_in_days=30)
    assert key["api_key"].startswith("dk_") and key["expires_at"]
    r = _exchange(auth_server, key["api_key"])
    assert r.status_code == 200 and r.json()["provider_id"] == key["provider_id"]
    daemon = {"authorization": f"Bearer {r.json()['access_token']}"}
    assert auth_server.get("/api/v1/auth/me", daemon).status_code == 200
    listed = auth_server.get("/api/v1/auth/api-keys", provider["headers"]).json()
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert "api_key" not in listed[0] and listed[0]["last_used_at"]
    # another provider cannot revoke it
    other = auth_server.user("provider")
    r = httpx.delete(
        f"{auth_server.url}/api/v1/auth/api-keys/{key['key_id']}", headers=other["headers"]
    )
    assert r.status_code == 404
    r = httpx.delete(
        f"{auth_server.url}/api/v1/auth/api-keys/{key['key_id']}", headers=provider["headers"]
    )
    assert r.status_code == 204
    assert _exchange(auth_server, key["api_key"]).status_code == 401
    r = auth_server.wait_status("/api/v1/auth/me", daemon, 401)
    assert r.status_code == 401 and r.json()["error"] == "token_revoked"
    # the provider's own login session is not affected
    assert auth_server.get("/api/v1/auth/me", provider["headers"]).status_code == 200


def test_expired_key_is_refused(auth_server: AuthProcess) -> None:
    provider = auth_server.user("provider")
    key = _key(auth_server, provider, expires_in_days=1)
    assert _exchange(auth_server, key["api_key"]).status_code == 200
    # Move its expiry into the past in the real database (no clock games in the service).
    db = auth_server.key_dir.parent / "auth.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE api_keys SET expires_at = '2000-01-01 00:00:00.000000+00:00' WHERE id = ?",
            (key["key_id"],),
        )
    r = _exchange(auth_server, key["api_key"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_api_key"


def test_only_providers_create_keys(auth_server: AuthProcess) -> None:
    requester = auth_server.user()
    r = auth_server.post("/api/v1/auth/api-keys", requester["headers"], json={"name": "x"})
    assert r.status_code == 403
