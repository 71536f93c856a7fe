"""Issue 17 end to end on a real local cluster (every service and daemon a real process):
an unhealthy GPU gets no new work, a 2-node gang runs both ranks with their env and ends with
one exit code and both ranks' lines in its log, a priority-9 job preempts a priority-1 job
that completes later as attempt 2, and killing one rank's daemon requeues the whole gang."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import new_user
from tests.support.cluster import cluster_config, running_cluster
from tests.support.jobs import job, wait_status, wait_terminal
from tests.support.operate import start_gpu_daemon
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def policy_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two CPU daemons of one task slot each, preemption on, a TTL short enough to see a
    killed daemon swept offline."""
    config = cluster_config(
        tmp_path_factory.mktemp("policies"),
        heartbeat_interval=0.5,
        heartbeat_ttl=2.0,
        daemons=2,
        extra_env={
            "DANTE_DAEMON_MAX_CONCURRENT_TASKS": "1",
            "DANTE_SCHEDULER_PREEMPTION": "lower-priority",
            "DANTE_SCHEDULER_PREEMPTION_MIN_RUN_SECONDS": "0",
        },
    )
    with running_cluster(config) as cluster:
        yield cluster


def submit(gw: str, auth: dict[str, str], script: str, **fields: Any) -> str:
    body = {"type": "script", "name": "policy", "params": {"script_content": script}, **fields}
    r = httpx.post(f"{gw}/api/v1/jobs", json=body, headers=auth)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def events(gw: str, auth: dict[str, str], job_id: str) -> list[dict]:
    return httpx.get(f"{gw}/api/v1/jobs/{job_id}/events", headers=auth).json()["events"]


def test_unhealthy_gpu_gets_no_new_work(policy_cluster: LocalCluster) -> None:
    gw = policy_cluster.gateway_url
    auth = new_user(gw)["headers"]
    daemon, provider_id = start_gpu_daemon(policy_cluster, unhealthy=(0,))
    try:
        first = submit(gw, auth, "sleep 3", gpu_count=1)
        running = wait_status(gw, auth, first, "running")
        assert running["provider_id"] == provider_id and running["gpu_indices"] == [1]
        second = submit(gw, auth, "true", gpu_count=1)

        def waits() -> dict | None:
            j = job(gw, auth, second)
            return j if "none free now" in (j.get("waiting_reason") or "") else None

        eventually(waits, what="the second GPU job waits: GPU 0 is unhealthy")
        assert wait_terminal(gw, auth, first)["status"] == "completed"
        done = wait_terminal(gw, auth, second)
        assert done["status"] == "completed" and done["gpu_indices"] == [1]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)


GANG_SCRIPT = """
test "$DANTE_WORLD_SIZE" = 2 && test "$NNODES" = 2 || exit 7
test "$DANTE_RANK" = "$NODE_RANK" || exit 8
case "$DANTE_RANK" in 0|1) ;; *) exit 9 ;; esac
test "$MASTER_ADDR" = 127.0.0.1 && test "$MASTER_PORT" = 29500 || exit 10
echo "rank $DANTE_RANK of $DANTE_WORLD_SIZE"
"""


def test_two_node_gang_runs_both_ranks_with_one_exit_code(policy_cluster: LocalCluster) -> None:
    gw = policy_cluster.gateway_url
    auth = new_user(gw)["headers"]
    job_id = submit(gw, auth, GANG_SCRIPT, max_retries=0, resources={"nodes": 2})
    done = wait_terminal(gw, auth, job_id)
    assert done["status"] == "completed" and done["exit_code"] == 0, done
    assert done["attempt"] == 1
    placed = next(e for e in events(gw, auth, job_id) if e["to"] == "dispatched")
    hosts = {c["provider_id"] for c in policy_cluster.providers.values()}
    assert all(h in placed["cause"] for h in hosts)  # one rank on each daemon
    # the job names each rank's host, as it ended there
    assert [(r["rank"], r["state"], r["exit_code"]) for r in done["ranks"]] == [
        (0, "completed", 0),
        (1, "completed", 0),
    ]
    assert {r["provider_id"] for r in done["ranks"]} == hosts
    assert done["ranks"][0]["provider_id"] == done["provider_id"]

    # each rank's output is in the job's log, rank 1's marked as such
    def both_ranks() -> list[str] | None:
        r = httpx.get(f"{gw}/api/v1/jobs/{job_id}/logs", headers=auth)
        return r.text.splitlines() if r.status_code == 200 and "[rank 1]" in r.text else None

    logs = eventually(both_ranks, what="both ranks' lines in the log")
    assert "rank 0 of 2" in logs and "[rank 1] rank 1 of 2" in logs


def test_priority_9_preempts_priority_1_which_completes_as_attempt_2(
    policy_cluster: LocalCluster,
) -> None:
    gw = policy_cluster.gateway_url
    low_user, high_user = new_user(gw)["headers"], new_user(gw)["headers"]
    lows = [submit(gw, low_user, "sleep 8", priority=1) for _ in range(2)]
    for j in lows:  # both task slots taken
        wait_status(gw, low_user, j, "running")
    high = submit(gw, high_user, "echo urgent", priority=9)
    assert wait_terminal(gw, high_user, high)["status"] == "completed"
    ended = [wait_terminal(gw, low_user, j) for j in lows]
    assert all(e["status"] == "completed" for e in ended), ended
    victims = [e for e in ended if e["attempt"] == 2]
    assert len(victims) == 1 and victims[0]["preemptions"] == 1
    causes = [e["cause"] for e in events(gw, low_user, victims[0]["job_id"])]
    assert any(c.startswith(f"preempted by job {high}") for c in causes)


def test_killing_one_ranks_daemon_requeues_the_whole_gang(policy_cluster: LocalCluster) -> None:
    gw = policy_cluster.gateway_url
    auth = new_user(gw)["headers"]
    job_id = submit(gw, auth, "sleep 60", resources={"nodes": 2})
    wait_status(gw, auth, job_id, "running")
    name, creds = next(iter(policy_cluster.providers.items()))
    policy_cluster.process(name).send_signal(signal.SIGKILL)

    def requeued() -> dict | None:
        j = job(gw, auth, job_id)
        return j if j.get("attempt") == 2 and j.get("status") == "queued" else None

    # bound only stops a hung run; one daemon is left, so the gang of 2 waits whole
    got = eventually(requeued, limit=60, what="the gang requeued as attempt 2")
    assert got["provider_id"] is None
    ev = events(gw, auth, job_id)
    back = [e for e in ev if e["from"] == "running" and e["to"] == "queued"]
    assert len(back) == 1 and creds["provider_id"] in back[0]["cause"]

    def says_gang() -> dict | None:
        j = job(gw, auth, job_id)
        return j if "gang of 2" in (j.get("waiting_reason") or "") else None

    eventually(says_gang, what="the gang waits for two hosts")
