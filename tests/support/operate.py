"""What the operate tests share: the binaries they run (Debian's ``prometheus`` package: promtool
and the server; kubectl with its built-in kustomize; ``make tools`` installs the package, and with
``CI=true`` a missing binary fails the run instead of skipping it), and the monitored cluster
(a local cluster, a daemon on two autospec-NVML GPUs launched as ``python -m
tests.support.gpu_daemon``, a job run through it, a real Prometheus scraping every process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from localdev.cluster import LocalCluster
from tests.support.accounts import new_user
from tests.support.servers import free_port
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found: {hint}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def promtool() -> str:
    return binary("promtool", "run `make tools` (apt-get install prometheus)")


def prometheus() -> str:
    return binary("prometheus", "run `make tools` (apt-get install prometheus)")


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
        """Wait until ``expr`` returns a series; the bound only stops a hung run."""

        def series() -> list[dict[str, Any]]:
            answer = self.query(expr)
            assert answer["status"] == "success", (expr, answer)
            return answer["data"]["result"]

        return eventually(series, limit=limit, interval=0.5, what=f"a series for {expr}")


def start_gpu_daemon(
    c: LocalCluster, unhealthy: tuple[int, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """The fake-NVML daemon (two H100s); ``unhealthy``: GPUs it reports unhealthy."""
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
    env["PYTHONPATH"] = str(ROOT)  # children run in the data dir
    env["DANTE_TEST_UNHEALTHY_GPUS"] = ",".join(map(str, unhealthy))
    proc = c._spawn(name, [sys.executable, "-m", "tests.support.gpu_daemon"], env, c.ports[name])
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

    def ended() -> dict[str, Any] | None:
        got = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
        if got.status_code == 200 and got.json()["status"] in TERMINAL:
            return got.json()
        return None

    return eventually(ended, limit=120, interval=0.2, what=f"job {job_id} ending")


def prometheus_config(targets: dict[str, str], path: Path) -> None:
    """Static targets (no Consul here) with the same `service` label the shipped configs set,
    and the shipped alert rules loaded."""
    rules = DEPLOY / "prometheus" / "rules" / "*.yml"
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
