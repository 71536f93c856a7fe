"""Accounts against a real auth service process: registration rules, sessions, profile,
password change, admin actions, login throttling and history."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.auth import PASSWORD, AuthProcess, auth_process


def _reg(auth: AuthProcess, **fields: str) -> httpx.Response:
    name = f"u{uuid.uuid4().hex[:8]}"
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD, **fields}
    return auth.post("/api/v1/auth/register", json=body)


@pytest.mark.parametrize(
    "fields",
    [
        {"role": "admin"},
        {"role": "service"},
        {"username": "Admin"},
        {"username": "x"},
        {"username": "has space"},
        {"password": "short-pw"},
        {"password": "password123"},
        {"password": "aaaaaaaaaaaa"},
        {"username": "carolina", "password": "carolina-rules-ok"},
        {"email": "not-an-email"},
    ],
)
def test_registration_rules(auth_server: AuthProcess, fields: dict[str, str]) -> None:
    r = _reg(auth_server, **fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"


def test_duplicate_username_or_email_conflicts(auth_server: AuthProcess) -> None:
    u = auth_server.register()
    same_name = {"username": u["username"].upper(), "email": "other@example.com"}
    assert _reg(auth_server, **same_name).status_code == 409
    assert _reg(auth_server, email=u["email"].upper()).status_code == 409


def test_unknown_user_and_wrong_password_look_the_same(auth_server: AuthProcess) -> None:
    u = auth_server.register()
    wrong = auth_server.login(u["username"], "wrong password here")
    unknown = auth_server.login(f"nobody{uuid.uuid4().hex[:6]}", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "invalid_credentials",
            "detail": "invalid username or password",
        }
    )


def test_unknown_user_login_still_verifies_a_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal timing comes from doing the same argon2 work; count it (the verify still runs)."""
    from auth_service import security

    calls: list[str] = []
    real = security._passwords.verify

    def counting(secret: str, hashed: str) -> bool:
        calls.append(hashed)
        return real(secret, hashed)

    monkeypatch.setattr(security._passwords, "verify", counting)
    assert security.verify_password("whatever", None) is False
    assert len(calls) == 1 and calls[0].startswith("$argon2")


def test_refresh_rotates_and_reuse_revokes_the_family(auth_server: AuthProcess) -> None:
    u = auth_server.user()
    first = u["refresh_token"]
    r = auth_server.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    assert second != first
    reused = auth_server.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
    # the whole family is gone, including the newest token
    r = auth_server.post("/api/v1/auth/refresh", json={"refresh_token": second})
    assert r.status_code == 401


def test_logout_revokes_the_access_token_and_its_refresh_family(auth_server: AuthProcess) -> None:
    u = auth_server.user()
    assert auth_server.get("/api/v1/auth/me", u["headers"]).status_code == 200
    r = auth_server.post(
        "/api/v1/auth/logout", u["headers"], json={"refresh_token": u["refresh_token"]}
    )
    assert r.status_code == 204
    r = auth_server.wait_status("/api/v1/auth/me", u["headers"], 401)
    assert r.status_code == 401 and r.json()["error"] == "token_revoked"
    r = auth_server.post("/api/v1/auth/refresh", json={"refresh_token": u["refresh_token"]})
    assert r.status_code == 401
    # other sessions of the same user are untouched
    other = auth_server.login(u["username"]).json()
    headers = {"authorization": f"Bearer {other['access_token']}"}
    assert auth_server.get("/api/v1/auth/me", headers).status_code == 200


def test_change_password_revokes_every_token(auth_server: AuthProcess) -> None:
    u = auth_server.user()
    second = auth_server.login(u["username"]).json()
    new = "a brand new passphrase"
    bad = auth_server.post(
        "/api/v1/auth/password",
        u["headers"],
        json={"current_password": "not it at all", "new_password": new},
    )
    assert bad.status_code == 400 and bad.json()["error"] == "wrong_password"
    weak = auth_server.post(
        "/api/v1/auth/password",
        u["headers"],
        json={"current_password": PASSWORD, "new_password": "short"},
    )
    assert weak.status_code == 400 and weak.json()["error"] == "weak_password"
    r = auth_server.post(
        "/api/v1/auth/password",
        u["headers"],
        json={"current_password": PASSWORD, "new_password": new},
    )
    assert r.status_code == 200, r.text
    fresh = {"authorization": f"Bearer {r.json()['access_token']}"}
    assert auth_server.wait_status("/api/v1/auth/me", u["headers"], 401).status_code == 401
    for refresh in (u["refresh_token"], second["refresh_token"]):
        assert (
            auth_server.post("/api/v1/auth/refresh", json={"refresh_token": refresh}).status_code
            == 401
        )
    assert auth_server.get("/api/v1/auth/me", fresh).status_code == 200
    assert auth_server.login(u["username"]).status_code == 401
    assert auth_server.login(u["username"], new).status_code == 200


def test_profile_read_and_update_but_not_role_or_active(auth_server: AuthProcess) -> None:
    u = auth_server.user()
    me = auth_server.get("/api/v1/auth/me", u["headers"]).json()
    assert me["username"] == u["username"] and me["email"] == u["email"]
    assert me["role"] == "requester" and me["active"] is True
    new_email = f"new-{uuid.uuid4().hex[:6]}@Example.com"
    r = httpx.put(
        f"{auth_server.url}/api/v1/auth/me",
        headers=u["headers"],
        json={"display_name": "Ada", "email": new_email},
    )
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == "Ada" and r.json()["email"] == new_email.lower()
    for body in ({"role": "admin"}, {"active": False}):
        r = httpx.put(f"{auth_server.url}/api/v1/auth/me", headers=u["headers"], json=body)
        assert r.status_code == 403 and r.json()["error"] == "not_self_editable"
    assert auth_server.get("/api/v1/auth/me", u["headers"]).json()["role"] == "requester"
    other = auth_server.register()
    r = httpx.put(
        f"{auth_server.url}/api/v1/auth/me", headers=u["headers"], json={"email": other["email"]}
    )
    assert r.status_code == 409


def test_admin_lists_users_with_pagination(auth_server: AuthProcess) -> None:
    admin = auth_server.admin()
    for _ in range(3):
        auth_server.register("provider")
    page = auth_server.get("/api/v1/auth/users?limit=2&offset=0", admin).json()
    assert len(page["users"]) == 2 and page["total"] >= 4 and page["limit"] == 2
    nxt = auth_server.get("/api/v1/auth/users?limit=2&offset=2", admin).json()
    assert {x["user_id"] for x in page["users"]}.isdisjoint({x["user_id"] for x in nxt["users"]})
    providers = auth_server.get("/api/v1/auth/users?role=provider&limit=500", admin).json()
    assert providers["total"] >= 3 and all(x["role"] == "provider" for x in providers["users"])
    requester = auth_server.user()
    r = auth_server.get("/api/v1/auth/users", requester["headers"])
    assert r.status_code == 403


def test_admin_disables_enables_and_changes_role(auth_server: AuthProcess) -> None:
    admin = auth_server.admin()
    u = auth_server.user()
    uid = u["user_id"]
    r = auth_server.post(f"/api/v1/auth/users/{uid}/disable", admin)
    assert r.status_code == 200 and r.json()["active"] is False
    assert auth_server.wait_status("/api/v1/auth/me", u["headers"], 401).status_code == 401
    assert auth_server.login(u["username"]).status_code == 401
    r = auth_server.post("/api/v1/auth/refresh", json={"refresh_token": u["refresh_token"]})
    assert r.status_code == 401
    assert auth_server.post(f"/api/v1/auth/users/{uid}/enable", admin).json()["active"] is True
    relog = auth_server.login(u["username"])
    assert relog.status_code == 200 and relog.json()["role"] == "requester"
    headers = {"authorization": f"Bearer {relog.json()['access_token']}"}
    r = httpx.put(
        f"{auth_server.url}/api/v1/auth/users/{uid}/role", headers=admin, json={"role": "admin"}
    )
    assert r.status_code == 200 and r.json()["role"] == "admin"
    assert auth_server.wait_status("/api/v1/auth/me", headers, 401).status_code == 401
    assert auth_server.login(u["username"]).json()["role"] == "admin"
    # an admin cannot lock itself out
    me = auth_server.get("/api/v1/auth/me", admin).json()["user_id"]
    assert auth_server.post(f"/api/v1/auth/users/{me}/disable", admin).status_code == 409
    # a non-admin cannot do any of it
    other = auth_server.user()
    assert (
        auth_server.post(f"/api/v1/auth/users/{uid}/disable", other["headers"]).status_code == 403
    )


def test_failed_logins_throttle_the_account_then_history_shows_them(
    auth_server: AuthProcess,
) -> None:
    u = auth_server.register()
    ip = {"x-forwarded-for": "203.0.113.9"}
    for _ in range(5):
        assert auth_server.login(u["username"], "wrong password!", headers=ip).status_code == 401
    r = auth_server.login(u["username"], "wrong password!", headers=ip)  # a 6th guess waits
    assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
    assert 1 <= int(r.headers["retry-after"]) <= 15 * 60
    # the right password is never locked out (issue 18; tests/auth/test_throttle.py)
    assert auth_server.login(u["username"], headers=ip).status_code == 200
    # a different account from the same address is not affected
    other = auth_server.register()
    ok = auth_server.login(other["username"], headers=ip)
    assert ok.status_code == 200
    headers = {"authorization": f"Bearer {ok.json()['access_token']}"}
    history = auth_server.get("/api/v1/auth/me/logins", headers).json()
    assert history[0]["success"] is True and history[0]["ip"] == "203.0.113.9"
    admin = auth_server.admin()
    theirs = auth_server.get(f"/api/v1/auth/users/{u['user_id']}/logins", admin).json()
    assert [h["reason"] for h in theirs] == ["ok"] + ["wrong_password"] * 6


def test_failed_logins_throttle_the_client_address(tmp_path: Path) -> None:
    with auth_process(tmp_path, LOGIN_MAX_FAILURES_PER_IP="4") as auth:
        attacker = {"x-forwarded-for": "198.51.100.7"}
        for i in range(4):
            assert auth.login(f"guess{i}", "wrong password!", headers=attacker).status_code == 401
        u = auth.register()
        assert auth.login(u["username"], headers=attacker).status_code == 429
        assert (
            auth.login(u["username"], headers={"x-forwarded-for": "198.51.100.8"}).status_code
            == 200
        )
