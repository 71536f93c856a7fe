"""``dante-provider check`` as a real process against the real cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import provider_key
from tests.support.daemons import check, rows
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e


def test_check_passes_with_a_good_key_and_shows_each_dependency(
    daemon_cluster: LocalCluster, tmp_path: Path
) -> None:
    creds = provider_key(daemon_cluster.gateway_url)
    r = check(
        tmp_path,
        gateway_url=daemon_cluster.gateway_url,
        nats_url=daemon_cluster.nats_url,
        api_key=creds["api_key"],
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(r.stdout)
    assert got["nvml"][0] == "warn" and "CPU only" in got["nvml"][1]  # no GPU on this machine
    assert got["nats"][0] == "ok" and got["gateway"][0] == "ok" and got["state dir"][0] == "ok"
    assert got["credentials"] == ("ok", f"provider {creds['provider_id']}")
    assert got["docker"][0] == "warn"  # no engine here: container jobs unavailable, not fatal


def test_check_fails_on_a_bad_key_or_unreachable_nats(
    daemon_cluster: LocalCluster, tmp_path: Path
) -> None:
    r = check(
        tmp_path,
        gateway_url=daemon_cluster.gateway_url,
        nats_url=f"nats://127.0.0.1:{free_port()}",
        api_key="dk_not-a-real-key",
    )
    assert r.returncode == 1
    got = rows(r.stdout)
    assert got["credentials"][0] == "FAIL" and got["nats"][0] == "FAIL"
    assert got["gateway"][0] == "ok"
    r = check(
        tmp_path, gateway_url=f"http://127.0.0.1:{free_port()}", nats_url=daemon_cluster.nats_url
    )
    assert r.returncode == 1
    got = rows(r.stdout)
    assert got["gateway"][0] == "FAIL" and got["nats"][0] == "ok"


def test_check_requiring_a_gpu_fails_on_this_gpu_less_host(
    daemon_cluster: LocalCluster, tmp_path: Path
) -> None:
    creds = provider_key(daemon_cluster.gateway_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_")}
    env |= {
        "DANTE_DAEMON_GATEWAY_URL": daemon_cluster.gateway_url,
        "DANTE_DAEMON_NATS_URL": daemon_cluster.nats_url,
        "DANTE_DAEMON_API_KEY": creds["api_key"],
        "DANTE_DAEMON_STATE_DIR": str(tmp_path / "state"),
    }
    r = subprocess.run(
        [sys.executable, "-m", "provider_daemon", "check", "--require-gpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and rows(r.stdout)["nvml"][0] == "FAIL"
