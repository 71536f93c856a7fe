"""A real nats-server in operator mode (keys from shared.nats_auth.bootstrap) and helpers to
connect to it as the services' user or as one provider daemon's user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from auth_service.nats_creds import NatsIssuer
from shared.nats import UserCredentials, ensure_streams
from shared.nats_auth import KeyPair, bootstrap
from tests.support.servers import nats_server

Connect = Callable[[UserCredentials | None, list[Exception]], Awaitable[NATS]]


@pytest.fixture(scope="module")
def nats_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bootstrap(tmp_path_factory.mktemp("nats-auth") / "keys").parent


@pytest.fixture(scope="module")
def secure_nats(nats_keys: Path) -> Iterator[str]:
    with nats_server(config=nats_keys / "server.conf") as url:
        yield url


@pytest.fixture
def issuer(nats_keys: Path) -> NatsIssuer:
    return NatsIssuer(nats_keys, ttl_seconds=600)


def daemon_user(issuer: NatsIssuer, provider_id: str) -> UserCredentials:
    """What a daemon holds: its own nkey and the JWT the auth service issued for it."""
    key = KeyPair.generate("user")
    out = issuer.issue(provider_id, key.public_key)
    return UserCredentials(key, out.jwt, out.inbox_prefix)


@pytest.fixture
async def connect_as(secure_nats: str) -> AsyncIterator[Connect]:
    """Connect with the given credentials; server errors (permission violations) go to the list."""
    opened: list[NATS] = []

    async def _connect(creds: UserCredentials | None, errors: list[Exception]) -> NATS:
        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        auth = {}
        if creds is not None:
            auth = {
                "user_jwt_cb": lambda: creds.jwt.encode(),
                "signature_cb": creds.key.sign_nonce,
                "inbox_prefix": creds.inbox_prefix,
            }
        nc = await nats.connect(
            secure_nats, error_cb=on_error, allow_reconnect=False, connect_timeout=5, **auth
        )
        opened.append(nc)
        return nc

    yield _connect
    for nc in opened:
        await nc.close()


@pytest.fixture
async def services(connect_as: Connect, nats_keys: Path) -> NATS:
    """The services' full-permission user, with every stream in place."""
    nc = await connect_as(UserCredentials.from_file(str(nats_keys / "service.creds")), [])
    await ensure_streams(nc.jetstream())
    return nc
