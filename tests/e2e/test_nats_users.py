"""localdev in its default, permissioned NATS mode: the auth service issues daemon users through
the gateway, a plain client is refused, and the issued user is held to its own tasks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import nats
import pytest

from localdev.cluster import LocalCluster
from shared.contracts import StartAnswer, StartRequest, start_subject
from shared.nats import UserCredentials
from shared.nats_auth import KeyPair
from tests.support.daemons import check, rows

REFUSED = (nats.errors.Error, TimeoutError, asyncio.TimeoutError)


@pytest.fixture(scope="module")
def cluster(default_cluster: LocalCluster) -> LocalCluster:
    """The shared SQLite cluster, in its default permissioned NATS mode: its daemon being
    ready means it got its NATS user."""
    return default_cluster


def provider_token(cluster: LocalCluster) -> str:
    resp = httpx.post(
        f"{cluster.gateway_url}/api/v1/auth/token", json={"api_key": cluster.provider["api_key"]}
    )
    resp.raise_for_status()
    return resp.json()["access_token"]


def issue(cluster: LocalCluster, public_key: str) -> httpx.Response:
    return httpx.post(
        f"{cluster.gateway_url}/api/v1/auth/nats-credentials",
        json={"public_key": public_key},
        headers={"authorization": f"Bearer {provider_token(cluster)}"},
    )


async def test_a_plain_client_is_refused(cluster: LocalCluster) -> None:
    with pytest.raises(REFUSED):
        await nats.connect(cluster.nats_url, allow_reconnect=False, connect_timeout=5)


async def test_the_gateway_hands_a_provider_a_user_held_to_its_own_tasks(
    cluster: LocalCluster,
) -> None:
    key = KeyPair.generate("user")
    resp = await asyncio.to_thread(issue, cluster, key.public_key)
    assert resp.status_code == 200, resp.text
    creds = UserCredentials(key, resp.json()["jwt"], resp.json()["inbox_prefix"])
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(
        cluster.nats_url,
        allow_reconnect=False,
        error_cb=on_error,
        user_jwt_cb=lambda: creds.jwt.encode(),
        signature_cb=creds.key.sign_nonce,
        inbox_prefix=creds.inbox_prefix,
    )
    try:
        js = nc.jetstream(timeout=2)
        pid = cluster.provider["provider_id"]
        assert (await js.consumer_info("TASKS", f"daemon-{pid}")).name == f"daemon-{pid}"
        other = str(uuid.uuid4())
        with pytest.raises(REFUSED):
            await js.pull_subscribe(
                f"tasks.dispatch.{other}", durable=f"daemon-{other}", stream="TASKS"
            )
        assert any("permissions violation" in str(e).lower() for e in errors)
        # it may ask to start attempts as itself only (issue 19): its own subject is answered
        ask = StartRequest(job_id=str(uuid.uuid4()), attempt=1).model_dump_json().encode()
        reply = await nc.request(start_subject(pid), ask, timeout=30)
        assert StartAnswer.model_validate_json(reply.data).start is False  # no such job
        with pytest.raises(REFUSED):
            await nc.request(start_subject(other), ask, timeout=2)
    finally:
        await nc.close()


def test_only_provider_tokens_get_nats_users(cluster: LocalCluster, tmp_path: Path) -> None:
    gw = cluster.gateway_url
    name = f"u{uuid.uuid4().hex[:8]}"
    httpx.post(
        f"{gw}/api/v1/auth/register",
        json={"username": name, "email": f"{name}@x.org", "password": "correct horse battery"},
    ).raise_for_status()
    login = httpx.post(
        f"{gw}/api/v1/auth/login", json={"username": name, "password": "correct horse battery"}
    )
    body = {"public_key": KeyPair.generate("user").public_key}
    user = {"authorization": f"Bearer {login.json()['access_token']}"}
    resp = httpx.post(f"{gw}/api/v1/auth/nats-credentials", json=body, headers=user)
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden"
    resp = httpx.post(f"{gw}/api/v1/auth/nats-credentials", json=body)
    assert resp.status_code == 401
    bad = {"public_key": KeyPair.generate("account").public_key}
    token = {"authorization": f"Bearer {provider_token(cluster)}"}
    resp = httpx.post(f"{gw}/api/v1/auth/nats-credentials", json=bad, headers=token)
    assert resp.status_code in (400, 422)


def test_dante_provider_check_connects_as_the_providers_own_user(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """`check` gets a NATS user the way `run` does; a plain connection would be refused here."""
    r = check(
        tmp_path,
        gateway_url=cluster.gateway_url,
        nats_url=cluster.nats_url,
        api_key=cluster.provider["api_key"],
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(r.stdout)
    assert got["nats"][0] == "ok" and "this provider's user" in got["nats"][1], got
    # without a key there is no user, and the permissioned server refuses the connection
    r = check(tmp_path, gateway_url=cluster.gateway_url, nats_url=cluster.nats_url)
    assert r.returncode == 1
    assert rows(r.stdout)["nats"][0] == "FAIL"
