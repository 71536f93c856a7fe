"""Who may do what, through the gateway of a real local cluster (every service a process).

Roles by endpoints by own/other resource, every cell asserted; bad tokens; services called
directly; rate limits; refresh-token reuse; and no secret in any log line of an auth flow.
SQLite only: the PostgreSQL path of the same code is covered by tests/test_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from auth_service.keys import KeyRing
from auth_service.settings import DEV_ADMIN_PASSWORD
from localdev.cluster import LocalCluster
from tests.support.cluster import cluster_config, running_cluster
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
USER_BURST = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of its own: its low rate limits and debug logs are the point here."""
    env = {
        # Low enough to be hit by one client in a loop, high enough for every other cell.
        "DANTE_GATEWAY_RATE_LIMIT_USER_PER_SECOND": "5",
        "DANTE_GATEWAY_RATE_LIMIT_USER_BURST": str(USER_BURST),
        "DANTE_GATEWAY_LOG_LEVEL": "DEBUG",
        "DANTE_AUTH_LOG_LEVEL": "DEBUG",
    }
    config = cluster_config(tmp_path_factory.mktemp("authz-cluster"), extra_env=env)
    with running_cluster(config) as c:
        yield c


class Actor:
    def __init__(self, gw: str, bearer: str | None, info: dict[str, Any] | None = None) -> None:
        self.gw = gw
        self.token = bearer
        self.info = info or {}

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return httpx.request(method, f"{self.gw}{path}", headers=headers, timeout=30, **kw)


def _login(gw: str, username: str, password: str) -> dict[str, Any]:
    r = httpx.post(f"{gw}/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def _account(gw: str, role: str) -> Actor:
    name = f"{role[:3]}{uuid.uuid4().hex[:10]}"
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": role}
    r = httpx.post(f"{gw}/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    tokens = _login(gw, name, PASSWORD)
    return Actor(gw, tokens["access_token"], tokens)


@pytest.fixture(scope="module")
def actors(cluster: LocalCluster) -> dict[str, Actor]:
    gw = cluster.gateway_url
    admin = _login(gw, "admin", DEV_ADMIN_PASSWORD)
    daemon = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": cluster.provider["api_key"]})
    assert daemon.status_code == 200
    return {
        "anonymous": Actor(gw, None),
        "owner": _account(gw, "requester"),
        "other": _account(gw, "requester"),
        "provider": _account(gw, "provider"),
        "daemon": Actor(gw, daemon.json()["access_token"], daemon.json()),
        "admin": Actor(gw, admin["access_token"], admin),
    }


@pytest.fixture(scope="module")
def resources(actors: dict[str, Actor]) -> dict[str, str]:
    """The owner's job (long-running, so it can still be cancelled) and object."""
    owner = actors["owner"]
    job = {"type": "script", "name": "matrix", "params": {"script_content": "sleep 60"}}
    r = owner.call("POST", "/api/v1/jobs", json=job)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    eventually(
        lambda: owner.call("GET", f"/api/v1/jobs/{job_id}").status_code == 200,
        interval=0.1,
        what="the scheduler stored the job",
    )
    key = f"data/{uuid.uuid4().hex}.bin"
    r = owner.call("PUT", f"/api/v1/storage/objects/{key}", content=b"private bytes")
    assert r.status_code == 201, r.text
    return {"job": job_id, "key": key}


SUBMIT = {"type": "script", "name": "m", "params": {"script_content": "true"}}

# (method, path template, body) → expected status per actor. {job}/{key}/{owner_id}/{pid} are
# the owner's resources, the owner's user id and the cluster daemon's provider id.
MATRIX: list[tuple[str, str, Any, dict[str, int]]] = [
    ("POST", "/api/v1/jobs", SUBMIT, {
        "anonymous": 401, "owner": 202, "other": 202, "provider": 403, "daemon": 403,
        "admin": 202}),
    ("GET", "/api/v1/jobs/{job}", None, {
        "anonymous": 401, "owner": 200, "other": 404, "provider": 404, "daemon": 404,
        "admin": 200}),
    ("GET", "/api/v1/jobs/{job}/logs", None, {
        "anonymous": 401, "owner": 200, "other": 404, "provider": 404, "daemon": 404,
        "admin": 200}),
    ("GET", "/api/v1/jobs/{job}/events", None, {
        "anonymous": 401, "owner": 200, "other": 404, "provider": 404, "daemon": 404,
        "admin": 200}),
    ("POST", "/api/v1/jobs/{job}/cancel", None, {
        "anonymous": 401, "other": 404, "provider": 404, "daemon": 404}),
    ("DELETE", "/api/v1/jobs/{job}", None, {
        "anonymous": 401, "other": 404, "provider": 404, "daemon": 404}),
    ("GET", "/api/v1/storage/objects/{key}", None, {
        "anonymous": 401, "owner": 200, "other": 404, "provider": 404, "daemon": 404}),
    ("GET", "/api/v1/storage/objects/{key}?owner={owner_id}", None, {
        "anonymous": 401, "owner": 200, "other": 403, "provider": 403, "daemon": 403,
        "admin": 200}),
    ("DELETE", "/api/v1/storage/objects/{key}", None, {
        "anonymous": 401, "other": 404, "provider": 404, "daemon": 404}),
    ("DELETE", "/api/v1/storage/objects/{key}?owner={owner_id}", None, {
        "other": 403, "provider": 403}),
    ("GET", "/api/v1/providers", None, {
        "anonymous": 401, "owner": 200, "other": 200, "provider": 200, "daemon": 200,
        "admin": 200}),
    ("PUT", "/api/v1/providers/{pid}/status", {"status": "online"}, {
        "anonymous": 401, "owner": 403, "provider": 403, "daemon": 200, "admin": 200}),
    ("POST", "/api/v1/providers/{pid}/heartbeat", {"gpus": []}, {
        "anonymous": 401, "owner": 403, "provider": 403, "daemon": 200, "admin": 403}),
    ("DELETE", "/api/v1/providers/{pid}", None, {
        "anonymous": 401, "owner": 403, "other": 403, "provider": 403}),
    ("GET", "/api/v1/auth/users", None, {
        "anonymous": 401, "owner": 403, "provider": 403, "daemon": 403, "admin": 200}),
    ("POST", "/api/v1/auth/users/{owner_id}/disable", None, {
        "anonymous": 401, "other": 403, "provider": 403, "daemon": 403}),
    ("PUT", "/api/v1/auth/users/{owner_id}/role", {"role": "admin"}, {
        "anonymous": 401, "owner": 403, "other": 403, "provider": 403}),
    ("POST", "/api/v1/auth/api-keys", {"name": "m"}, {
        "anonymous": 401, "owner": 403, "provider": 201, "admin": 403}),
    ("GET", "/api/v1/auth/me", None, {
        "anonymous": 401, "owner": 200, "provider": 200, "daemon": 200, "admin": 200}),
]  # fmt: skip


def test_role_endpoint_resource_matrix(
    cluster: LocalCluster, actors: dict[str, Actor], resources: dict[str, str]
) -> None:
    values = {
        **resources,
        "owner_id": actors["owner"].info["user_id"],
        "pid": cluster.provider["provider_id"],
    }
    failures = []
    cells = 0
    for method, template, body, expected in MATRIX:
        path = template.format(**values)
        for who, status in expected.items():
            r = (
                actors[who].call(method, path, json=body)
                if body
                else actors[who].call(method, path)
            )
            cells += 1
            if r.status_code != status:
                failures.append(f"{who} {method} {path}: {r.status_code} != {status}: {r.text}")
            elif status >= 400:
                assert set(r.json()) == {"error", "detail"}, r.text  # errors are JSON
    assert not failures, "\n".join(failures)
    assert cells > 80
    owner = actors["owner"]
    # the owner's resources survived every foreign attempt, and the owner may end them
    assert owner.call("GET", f"/api/v1/storage/objects/{resources['key']}").content == (
        b"private bytes"
    )
    listed = actors["other"].call("GET", "/api/v1/jobs").json()["jobs"]
    assert resources["job"] not in [j["job_id"] for j in listed]
    assert owner.call("POST", f"/api/v1/jobs/{resources['job']}/cancel").status_code == 202
    assert owner.call("DELETE", f"/api/v1/storage/objects/{resources['key']}").status_code == 204


def test_self_registration_as_admin_is_refused(cluster: LocalCluster) -> None:
    body = {"username": "wannabe1", "email": "w@example.com", "password": PASSWORD}
    r = httpx.post(f"{cluster.gateway_url}/api/v1/auth/register", json={**body, "role": "admin"})
    assert r.status_code == 422


def test_one_provider_cannot_act_for_another(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    provider = _account(gw, "provider")
    key = provider.call("POST", "/api/v1/auth/api-keys", json={"name": "own host"}).json()
    token = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": key["api_key"]}).json()
    own = Actor(gw, token["access_token"])
    hardware = {"name": "mine", "gpus": []}
    r = own.call("POST", "/api/v1/providers", json=hardware)
    assert r.status_code == 201 and r.json()["id"] == key["provider_id"]
    target = cluster.provider["provider_id"]
    for method, path, body in (
        ("POST", f"/api/v1/providers/{target}/heartbeat", {"gpus": []}),
        ("PUT", f"/api/v1/providers/{target}/status", {"status": "offline"}),
        ("DELETE", f"/api/v1/providers/{target}", None),
    ):
        r = own.call(method, path, json=body) if body else own.call(method, path)
        assert r.status_code == 403, (path, r.text)
    beat = f"/api/v1/providers/{key['provider_id']}/heartbeat"
    assert own.call("POST", beat, json={"gpus": []}).status_code == 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_bad_tokens_are_401_everywhere(cluster: LocalCluster) -> None:
    ring = KeyRing(cluster.data / "keys", create=False)
    kid = ring.active.kid
    now = int(time.time())
    claims = {
        "iss": "dante-auth", "aud": "dante", "sub": str(uuid.uuid4()), "name": "x",
        "role": "admin", "typ": "access", "jti": uuid.uuid4().hex,
        "iat": now, "nbf": now, "exp": now + 600,
    }  # fmt: skip
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        serialization.load_pem_private_key(ring.active.private_pem, password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def unsigned(alg: str, key: bytes = b"") -> str:
        head = _b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        if alg == "none":
            return f"{head}.{body}."
        sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(sig)}"

    bad = {
        "forged": jwt.encode(claims, other_pem, "RS256", headers={"kid": kid}),
        "expired": ring.sign({**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 60}),
        "not_yet_valid": ring.sign({**claims, "nbf": now + 600}),
        "wrong_audience": ring.sign({**claims, "aud": "elsewhere"}),
        "none_alg": unsigned("none"),
        "hs256_with_public_key": unsigned("HS256", public_pem),
        "garbage": "abc.def.ghi",
    }
    assert ring.sign(claims)  # the same claims, properly signed, would be an admin
    gw = cluster.gateway_url
    for name, token in bad.items():
        headers = {"authorization": f"Bearer {token}"}
        for path in ("/api/v1/jobs", "/api/v1/auth/users", "/api/v1/providers"):
            r = httpx.get(f"{gw}{path}", headers=headers)
            assert r.status_code == 401, (name, path, r.text)
            # a well-signed token past its expiry says so (the client refreshes); the rest
            # are indistinguishable garbage to the caller
            want = "token_expired" if name == "expired" else "unauthorized"
            assert r.json()["error"] == want, r.text


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("scheduler", "/api/v1/jobs"),
        ("registry", "/api/v1/providers"),
        ("registry", "/providers"),
        ("storage", "/api/v1/storage/objects"),
        ("auth", "/api/v1/auth/me"),
        ("auth", "/api/v1/auth/users"),
    ],
)
def test_a_service_called_directly_without_a_token_is_401(
    cluster: LocalCluster, service: str, path: str
) -> None:
    r = httpx.get(f"http://127.0.0.1:{cluster.ports[service]}{path}")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = httpx.get(
        f"http://127.0.0.1:{cluster.ports[service]}{path}",
        headers={"x-user-id": "someone", "x-user-role": "admin"},
    )
    assert r.status_code == 401


def test_rate_limit_answers_429_with_retry_after(cluster: LocalCluster) -> None:
    user = _account(cluster.gateway_url, "requester")
    statuses: list[int] = []
    # Forty at once: the limiter admits (or refuses) a request before it is proxied, so with
    # many in flight requests are counted far faster than the bucket refills (5/s) however
    # slowly the machine answers them; one or a few at a time could be slower than the refill
    # on a loaded machine, and then no 429 would ever come.
    wave = 40
    with ThreadPoolExecutor(wave) as pool:
        for _ in range(USER_BURST * 3 // wave):
            answers = list(pool.map(lambda _: user.call("GET", "/api/v1/auth/me"), range(wave)))
            statuses += [r.status_code for r in answers]
            refused = [r for r in answers if r.status_code == 429]
            if refused:
                assert int(refused[0].headers["retry-after"]) >= 1
                assert refused[0].json()["error"] == "rate_limited"
                break
    assert 429 in statuses and statuses.count(200) >= USER_BURST - 5


def test_reused_refresh_token_is_401_and_revokes_the_family(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = _account(gw, "requester")
    first = user.info["refresh_token"]
    r = httpx.post(f"{gw}/api/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    r = httpx.post(f"{gw}/api/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 401 and r.json()["error"] == "refresh_token_reused"
    r = httpx.post(f"{gw}/api/v1/auth/refresh", json={"refresh_token": second})
    assert r.status_code == 401


def test_disabled_user_is_refused_by_every_service(
    cluster: LocalCluster, actors: dict[str, Actor]
) -> None:
    """The revocation feed reaches the gateway and the services behind it within a poll."""
    gw = cluster.gateway_url
    victim = _account(gw, "requester")
    assert victim.call("GET", "/api/v1/jobs").status_code == 200
    uid = victim.info["user_id"]
    r = actors["admin"].call("POST", f"/api/v1/auth/users/{uid}/disable")
    assert r.status_code == 200
    direct = f"http://127.0.0.1:{cluster.ports['scheduler']}/api/v1/jobs"

    def refused() -> bool:
        via_gateway = victim.call("GET", "/api/v1/jobs").status_code
        at_scheduler = httpx.get(direct, headers=victim.headers).status_code
        assert (via_gateway, at_scheduler) == (401, 401)
        return True

    eventually(refused, interval=0.2)


def test_no_secret_reaches_any_log_line(cluster: LocalCluster) -> None:
    """Register, log in (also wrongly), refresh, create a key, exchange it, change the
    password — then search every process's log for every secret involved."""
    gw = cluster.gateway_url
    secrets: list[str] = [PASSWORD, DEV_ADMIN_PASSWORD, cluster.provider["api_key"]]
    name = f"logs{uuid.uuid4().hex[:8]}"
    pw = "a very private passphrase"
    body = {"username": name, "email": f"{name}@example.com", "password": pw, "role": "provider"}
    assert httpx.post(f"{gw}/api/v1/auth/register", json=body).status_code == 201
    for wrong in ("wrong-guess-one-1", "wrong-guess-two-2"):
        r = httpx.post(f"{gw}/api/v1/auth/login", json={"username": name, "password": wrong})
        assert r.status_code == 401
        secrets.append(wrong)
    tokens = _login(gw, name, pw)
    r = httpx.post(f"{gw}/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    refreshed = r.json()
    headers = {"authorization": f"Bearer {refreshed['access_token']}"}
    key = httpx.post(f"{gw}/api/v1/auth/api-keys", json={"name": "k"}, headers=headers).json()
    exchanged = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": key["api_key"]}).json()
    new_pw = "another very private passphrase"
    changed = httpx.post(
        f"{gw}/api/v1/auth/password",
        json={"current_password": pw, "new_password": new_pw},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    secrets += [
        pw,
        new_pw,
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        key["api_key"],
        exchanged["access_token"],
        changed.json()["access_token"],
        changed.json()["refresh_token"],
    ]
    log_dir: Path = cluster.config.log_dir  # type: ignore[assignment]
    eventually(
        lambda: "login.failed" in (log_dir / "auth.log").read_text(),
        interval=0.1,
        what="the auth service logged a failed login",
    )
    lines = [
        (path.name, line)
        for path in sorted(log_dir.glob("*.log"))
        for line in path.read_text(errors="replace").splitlines()
    ]
    assert len(lines) > 50 and any(name in line or "user.registered" in line for _, line in lines)
    leaks = [(f, s[:12]) for f, line in lines for s in secrets if s in line]
    assert not leaks, leaks


def test_the_revocation_feed_is_not_reachable_through_the_gateway(cluster: LocalCluster) -> None:
    r = httpx.get(f"{cluster.gateway_url}/internal/revocations")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    direct = f"http://127.0.0.1:{cluster.ports['auth']}/internal/revocations"
    assert httpx.get(direct).status_code == 401  # not without a token (issue 18)
