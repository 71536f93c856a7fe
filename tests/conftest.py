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

# Under pytest-xdist (`make test` runs three workers) every worker boots its own copy of each
# session fixture it uses. So the unit of work handed to a worker is a whole test folder
# (tests/e2e, tests/daemon, ...): a folder's shared clusters and servers are booted once. The
# longest folders are handed out first, so the short ones fill in at the end.
# (xdist's own `--dist loadgroup` does not group under pytest 9.2, which made node ids
# read-only; checked with xdist 3.8.0.)
LONGEST_FIRST = ("operate", "client", "scheduler", "e2e", "billing", "daemon", "console")


def _folder(nodeid: str) -> str:
    parts = nodeid.split("::")[0].split("/")
    return parts[1] if len(parts) > 2 else parts[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class LoadFolderScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _folder(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return LoadFolderScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(_folder(item.nodeid), len(rank)))


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
