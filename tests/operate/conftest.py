"""A local cluster (real processes on free ports) with one daemon on two autospec-NVML GPUs,
a job run through it, and a real Prometheus (Debian's package) scraping every process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from localdev.cluster import SERVICES, ClusterConfig, LocalCluster
from tests.operate.tools import prometheus
from tests.support.accounts import new_user
from tests.support.servers import free_port, stop

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@dataclass
class Monitored:
    cluster: LocalCluster
    prometheus_url: str
    provider_id: str
    job: dict[str, Any]
    targets: dict[str, str]  # service label -> host:port

    def query(self, expr: str) -> dict[str, Any]:
        r = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        return r.json()

    def wait_series(self, expr: str, limit: float = 120) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns a series; the bound only stops a hung run."""
        deadline = time.monotonic() + limit
        answer: dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = self.query(expr)
            assert answer["status"] == "success", (expr, answer)
            if answer["data"]["result"]:
                return answer["data"]["result"]
            time.sleep(0.5)
        raise AssertionError(f"no series for {expr}: {answer}")


def start_gpu_daemon(c: LocalCluster) -> tuple[subprocess.Popen[bytes], str]:
    name = "gpu-daemon"
    creds = c._provision_provider(name)
    c.ports[name] = free_port()
    env = c._env(
        "DANTE_DAEMON_",
        name,
        GATEWAY_URL=c.gateway_url,
        API_KEY=creds["api_key"],
        STATE_DIR=str(c.data / name),
        NAME="gpu-host",
        HEARTBEAT_INTERVAL_SECONDS="1",
    )
    env.pop("DANTE_NATS_CREDS", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # children run in the data dir
    proc = c._spawn(name, [sys.executable, "-m", "tests.operate.gpu_daemon"], env, c.ports[name])
    c._wait_ready(proc, time.monotonic() + 90)
    return proc.popen, creds["provider_id"]


def run_gpu_job(gw: str) -> dict[str, Any]:
    user = new_user(gw)
    r = httpx.post(
        f"{gw}/api/v1/jobs",
        json={
            "type": "script",
            "name": "gpu-metrics",
            "params": {"script_content": "echo hello from a GPU job"},
            "gpu_count": 1,
        },
        headers=user["headers"],
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
        if got.status_code == 200:
            job = got.json()
            if job["status"] in TERMINAL:
                return job
        time.sleep(0.2)
    raise AssertionError(f"job did not end: {job}")


def prometheus_config(targets: dict[str, str], path: Path) -> None:
    """Static targets (no Consul here) with the same `service` label the shipped configs set,
    and the shipped alert rules loaded."""
    rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "*.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "dante",
                        "static_configs": [
                            {"targets": [addr], "labels": {"service": name}}
                            for name, addr in targets.items()
                        ],
                    }
                ],
            }
        )
    )


@pytest.fixture(scope="session")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    data = tmp_path_factory.mktemp("operate")
    c = LocalCluster(
        ClusterConfig(
            data_dir=data,
            prefer_default_ports=False,
            log_dir=data / "logs",
            heartbeat_interval=1,
            daemons=0,  # the only daemon is the GPU one below
        )
    )
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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert prom.poll() is None, "prometheus exited; see its log"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield Monitored(c, url, provider_id, job, targets)
    finally:
        if prom is not None:
            stop(prom)
        c.stop()
