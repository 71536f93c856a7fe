"""The monitored cluster of the operate tests (built from ``tests/support/operate.py``)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from localdev.cluster import SERVICES, LocalCluster
from tests.support.cluster import cluster_config
from tests.support.operate import (
    Monitored,
    prometheus,
    prometheus_config,
    run_gpu_job,
    start_gpu_daemon,
)
from tests.support.servers import free_port, stop
from tests.support.wait import eventually


@pytest.fixture(scope="session")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    data = tmp_path_factory.mktemp("operate")
    # its own: the only daemon is the GPU one below (on a shared cluster it would take
    # other tests' jobs), and Prometheus scrapes every process of it
    c = LocalCluster(cluster_config(data, daemons=0))
    c.start()
    prom: subprocess.Popen[bytes] | None = None
    try:
        _daemon, provider_id = start_gpu_daemon(c)
        job = run_gpu_job(c.gateway_url)
        targets = {name: f"127.0.0.1:{c.ports[name]}" for name, *_ in SERVICES}
        targets["daemon"] = f"127.0.0.1:{c.ports['gpu-daemon']}"
        config = data / "prometheus.yml"
        prometheus_config(targets, config)
        port = free_port()
        log = (data / "logs" / "prometheus.log").open("ab")
        prom = subprocess.Popen(
            [
                prometheus(),
                f"--config.file={config}",
                f"--storage.tsdb.path={data / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert prom is not None and prom.poll() is None, "prometheus exited; see its log"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            return False

        eventually(ready, limit=60, interval=0.2, what="prometheus ready")
        yield Monitored(c, url, provider_id, job, targets)
    finally:
        if prom is not None:
            stop(prom)
        c.stop()
