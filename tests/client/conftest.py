"""One real local cluster for all the client tests (tokens live ``ACCESS_TTL`` seconds, so it
is not the shared default cluster), and a fresh logged-in ``dante`` CLI per test. The helpers
live in ``tests/support/client.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.cluster import ClusterConfig, LocalCluster
from tests.support.client import ACCESS_TTL, Cli, make_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("client-cluster")
    config = ClusterConfig(
        data_dir=data,
        prefer_default_ports=False,
        log_dir=data / "logs",
        heartbeat_interval=1.0,
        extra_env={"DANTE_AUTH_ACCESS_TTL_SECONDS": str(ACCESS_TTL)},
    )
    c = LocalCluster(config)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def cli(cluster: LocalCluster, tmp_path: Path) -> Cli:
    """A fresh requester, logged in through the CLI."""
    return make_cli(cluster, tmp_path)
