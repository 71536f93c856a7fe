"""One real local cluster for all the client tests (tokens live ``ACCESS_TTL`` seconds, so it
is not the shared default cluster), and a fresh logged-in ``dante`` CLI per test. The helpers
live in ``tests/support/client.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.cluster import LocalCluster
from tests.support.client import ACCESS_TTL, Cli, make_cli
from tests.support.cluster import cluster_config, running_cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("client-cluster")
    config = cluster_config(data, extra_env={"DANTE_AUTH_ACCESS_TTL_SECONDS": str(ACCESS_TTL)})
    with running_cluster(config) as c:
        yield c


@pytest.fixture
def cli(cluster: LocalCluster, tmp_path: Path) -> Cli:
    """A fresh requester, logged in through the CLI."""
    return make_cli(cluster, tmp_path)
