"""Obtain a provider API key through the gateway once, for a daemon run by docker compose.

A daemon needs an API key before it can start, and keys are only issued by a running auth
service, so compose runs this one-shot step between the gateway becoming healthy and the daemon
starting. It does what an operator does by hand on a GPU host (deploy/README.md): register a
provider account (an existing one is fine), log in, ``POST /api/v1/auth/api-keys``, and keep the
key in a file on the daemon's state volume. A key already on the volume is kept, so restarts do
not mint a new provider each time.

Environment: ``DANTE_BOOTSTRAP_GATEWAY_URL``, ``DANTE_BOOTSTRAP_USERNAME``,
``DANTE_BOOTSTRAP_PASSWORD``, ``DANTE_BOOTSTRAP_EMAIL`` and ``DANTE_BOOTSTRAP_KEY_FILE``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

AUTH = "/api/v1/auth"


class BootstrapError(RuntimeError):
    pass


def _wait_for_gateway(client: httpx.Client, attempts: int, delay: float) -> None:
    """The gateway may be healthy before auth is resolvable through Consul; retry a little."""
    for attempt in range(attempts):
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if attempt + 1 < attempts:
            time.sleep(delay)
    raise BootstrapError("the gateway did not answer /health")


def obtain_key(client: httpx.Client, username: str, password: str, email: str) -> dict:
    resp = client.post(
        f"{AUTH}/register",
        json={"username": username, "email": email, "password": password, "role": "provider"},
    )
    if resp.status_code not in (201, 409):  # 409: registered by an earlier run
        raise BootstrapError(f"register answered {resp.status_code}: {resp.text[:200]}")
    resp = client.post(f"{AUTH}/login", json={"username": username, "password": password})
    if resp.status_code != 200:
        raise BootstrapError(f"login answered {resp.status_code}: {resp.text[:200]}")
    token = resp.json()["access_token"]
    resp = client.post(
        f"{AUTH}/api-keys",
        json={"name": f"compose-{username}"},
        headers={"Authorization": f"Bearer {token}"},
    )
    if resp.status_code not in (200, 201):
        raise BootstrapError(f"api-keys answered {resp.status_code}: {resp.text[:200]}")
    body = resp.json()
    if not body.get("api_key") or not body.get("provider_id"):
        raise BootstrapError("api-keys answered without api_key/provider_id")
    return body


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` readable by its owner only, atomically (a crash leaves no half key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    tmp.replace(path)


def main(
    env: Mapping[str, str] = os.environ,
    client: httpx.Client | None = None,
    *,
    attempts: int = 30,
    delay: float = 2.0,
) -> int:
    try:
        key_file = Path(env["DANTE_BOOTSTRAP_KEY_FILE"])
        username = env["DANTE_BOOTSTRAP_USERNAME"]
        password = env["DANTE_BOOTSTRAP_PASSWORD"]
        gateway = env.get("DANTE_BOOTSTRAP_GATEWAY_URL", "http://gateway:8080")
    except KeyError as exc:
        print(f"bootstrap: {exc.args[0]} is not set", file=sys.stderr)
        return 2
    email = env.get("DANTE_BOOTSTRAP_EMAIL") or f"{username}@providers.dante.local"
    if key_file.exists() and key_file.read_text().strip():
        print(f"bootstrap: keeping the API key in {key_file}")
        return 0
    own = client is None
    client = client or httpx.Client(base_url=gateway, timeout=10.0)
    try:
        _wait_for_gateway(client, attempts, delay)
        body = obtain_key(client, username, password, email)
    except (BootstrapError, httpx.HTTPError) as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        return 1
    finally:
        if own:
            client.close()
    write_secret(key_file, body["api_key"])
    write_secret(key_file.with_name("provider_id"), body["provider_id"])
    print(f"bootstrap: provider {body['provider_id']} has a key in {key_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
