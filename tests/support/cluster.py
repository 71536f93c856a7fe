"""One factory for whole local clusters (``localdev.cluster``: every service a real process on
free ports), and the clusters shared by every test module that needs the same configuration.

A boot costs seconds of CPU for six processes, so modules with the same configuration share
one session-wide cluster instead of starting their own:

* ``default_cluster``: SQLite, permissioned NATS, one daemon with 1 s heartbeats (the walking
  skeleton on SQLite, job I/O end to end, the NATS users issued through the gateway);
* ``pg_cluster``: the same on PostgreSQL (the walking skeleton's second dialect);
* ``daemon_cluster``: NATS without auth, so daemon tests read and publish as a plain client.

Modules whose configuration is the point (the authorization matrix's low rate limits, the
daemon-loss scenario's short TTL and two daemons, a restart on the same data) boot their own
with ``running_cluster``. Tests on a shared cluster use accounts of their own
(``tests/support/accounts.py``) so they never see each other's jobs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdev.cluster import ClusterConfig, LocalCluster
from tests.support import servers

# A stopping scheduler waits this long for its loops (default 10 s, ~5 s in practice while a
# pull request is open); a test cluster has nothing in flight when it stops.
# a test's fleet is small: its gauges are re-read with every sweep (production: every 30 s)
TEST_ENV = {
    "DANTE_SCHEDULER_SHUTDOWN_GRACE_SECONDS": "1",
    "DANTE_REGISTRY_METRICS_REFRESH_SECONDS": "5",
}


def cluster_config(data: Path, **fields: Any) -> ClusterConfig:
    """A cluster on free ports under ``data``, logging to files, 1 s heartbeats."""
    values: dict[str, Any] = {
        "data_dir": data,
        "prefer_default_ports": False,
        "log_dir": data / "logs",
        "heartbeat_interval": 1.0,
    }
    values.update(fields)
    values["extra_env"] = {**TEST_ENV, **values.get("extra_env", {})}
    return ClusterConfig(**values)


@contextlib.contextmanager
def running_cluster(config: ClusterConfig) -> Iterator[LocalCluster]:
    """Start the cluster, wait until every process is ready, and stop it afterwards."""
    cluster = LocalCluster(config)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def default_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(cluster_config(tmp_path_factory.mktemp("cluster-sqlite"))) as c:
        yield c


@pytest.fixture(scope="session")
def pg_cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str
) -> Iterator[LocalCluster]:
    urls = {
        name: servers.asyncpg_url(servers.create_database(pg_admin_url, f"e2e_{name}"))
        for name in ("auth", "registry", "scheduler")
    }
    data = tmp_path_factory.mktemp("cluster-postgresql")
    with running_cluster(cluster_config(data, database_urls=urls)) as c:
        yield c


@pytest.fixture(scope="session")
def daemon_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("cluster-daemon")
    # the daemon tests read and publish on NATS as a plain client
    with running_cluster(cluster_config(data, nats_auth=False)) as c:
        yield c


def kill_daemon(cluster: LocalCluster, n: int = 1) -> None:
    """SIGKILL daemon ``n`` (no drain, no last report) and reap it."""
    popen = cluster.process(cluster.daemon_name(n))
    popen.kill()
    popen.wait(30)


def restart_daemon(cluster: LocalCluster, n: int = 1) -> None:
    """Start daemon ``n`` again on its state directory and API key (as systemd would after a
    crash); its exited process is forgotten first."""
    name = cluster.daemon_name(n)
    for proc in [p for p in cluster.procs if p.name == name and p.popen.poll() is not None]:
        if proc.log:
            proc.log.close()
        cluster.procs.remove(proc)
    cluster.start_daemon(n)
