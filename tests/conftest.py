"""Session-wide real servers and token minting, shared by every test module.

Fixtures of one area live in ``tests/support/`` and are registered here as plugins, so no test
module imports another and every folder can use them (``tests/gateway`` uses storage's)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import servers, tokens

pytest_plugins = [
    "tests.support.auth",
    "tests.support.cluster",
    "tests.support.daemons",
    "tests.support.nats_auth",
    "tests.support.scheduler",
    "tests.support.storage",
]

# The suite drives hundreds of requests through one gateway from one address: lift the
# gateway's rate limits for every gateway it starts (in-process or as a child process).
# Tests of the limits themselves set their own values explicitly.
for _name in ("USER_PER_SECOND", "USER_BURST", "IP_PER_SECOND", "IP_BURST"):
    os.environ.setdefault(f"DANTE_GATEWAY_RATE_LIMIT_{_name}", "1000000")

# Under pytest-xdist (`make test` runs two workers, `--dist loadgroup`), a worker boots its own
# copy of every session fixture it uses. So the tests sharing one expensive fixture go to one
# worker together, and the other tests go file by file (a module-scoped fixture, such as the
# authorization matrix's cluster, is then booted once too).
SHARED_GROUPS = {
    "default_cluster": "shared-clusters",
    "pg_cluster": "shared-clusters",
    "daemon_cluster": "daemon-cluster",
    "s3_server": "s3",
    "storage": "s3",
    "gateway": "s3",
    "auth_server": "auth-server",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        shared = [SHARED_GROUPS[n] for n in item.fixturenames if n in SHARED_GROUPS]
        group = shared[0] if shared else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A real nats-server (from the wheel) with JetStream, on a free port."""
    with servers.nats_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server: ``TEST_DATABASE_URL`` if set, else a throwaway cluster.

    With ``CI=true`` a missing PostgreSQL fails the run instead of skipping.
    """
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield servers.libpq_url(given)
        return
    try:
        with servers.throwaway_postgres() as url:
            yield url
    except (RuntimeError, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL available: {exc}")


@pytest.fixture
def pg_url(pg_admin_url: str) -> str:
    """A fresh, empty PostgreSQL database (asyncpg URL) for one test."""
    return servers.asyncpg_url(servers.create_database(pg_admin_url))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on both dialects."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/test.sqlite"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from auth_service.keys import KeyRing

    return KeyRing(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def local_jwks(keyring: Any) -> Callable[[], Any]:
    """A JWKS fetcher backed by the test keyring (services under test verify with it)."""

    async def fetch() -> dict[str, Any]:
        return keyring.jwks()

    return fetch


@pytest.fixture(scope="session")
def mint_token(keyring: Any) -> tokens.Mint:
    """Sign an access token with the auth service's own claim code (``tests/support/tokens``)."""
    return tokens.minter(keyring)
