"""Outages, drain and identity: the daemon as a real process against a real cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import new_user, provider_key
from tests.support.daemons import Bus, DaemonFactory, group_members
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def restartable_stop(cluster: LocalCluster, name: str) -> tuple[list[str], dict[str, str]]:
    """Stop one service of the cluster; return what it takes to start it again as it was."""
    popen = cluster.process(name)
    raw = Path(f"/proc/{popen.pid}/environ").read_bytes()
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    argv = [str(a) for a in popen.args]  # type: ignore[union-attr]
    popen.send_signal(signal.SIGTERM)
    popen.wait(30)
    return argv, env


def restart(cluster: LocalCluster, name: str, argv: list[str], env: dict[str, str]) -> None:
    proc = next(p for p in cluster.procs if p.name == name)
    proc.popen = subprocess.Popen(
        argv,
        env=env,
        cwd=cluster.data,
        stdout=proc.log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{proc.port}/ready", timeout=2).status_code == 200
        return False

    eventually(ready, interval=0.1, what=f"{name} back")


async def test_gateway_outage_is_survived_while_a_task_runs(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    cluster = daemons.cluster
    gw = cluster.gateway_url
    d = daemons.start(heartbeat_interval_seconds=1)
    release = tmp_path / "release"
    task = await bus.dispatch(
        d.provider_id, f"echo working\nwhile [ ! -e {release} ]; do sleep 0.05; done\necho done"
    )
    await bus.state(task.job_id, "running")
    argv, env = await asyncio.to_thread(restartable_stop, cluster, "gateway")
    try:
        # heartbeats fail, and back off: each wait longer than the one before
        first = await d.await_event("heartbeat.failed", failures=1)
        third = await d.await_event("heartbeat.failed", failures=3)
        assert third["next_in_s"] > first["next_in_s"]
        # the task never noticed: it completes and reports over NATS meanwhile
        release.touch()
        final = await bus.final(task.job_id)
        assert (final.state, final.exit_code) == ("completed", 0)
        assert bus.lines(task.job_id) == ["working", "done"]
        assert d.popen.poll() is None
    finally:
        await asyncio.to_thread(restart, cluster, "gateway", argv, env)
    outage_over = time.time()
    await d.await_event("heartbeat.resumed")
    user = new_user(gw, "requester")
    async with httpx.AsyncClient(headers=user["headers"]) as client:
        provider = (await client.get(f"{gw}/api/v1/providers/{d.provider_id}")).json()
    assert provider["status"] == "online"
    beat = datetime.fromisoformat(provider["last_heartbeat_at"]).timestamp()
    assert beat >= outage_over - 1  # a heartbeat landed after the gateway came back


async def test_sigterm_drains_then_hands_the_rest_back(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    creds = provider_key(daemons.cluster.gateway_url)
    d = daemons.start(creds, drain_grace_seconds=4)
    release = tmp_path / "release"
    short = await bus.dispatch(
        d.provider_id, f"while [ ! -e {release} ]; do sleep 0.05; done\necho finished"
    )
    long = await bus.dispatch(d.provider_id, f"echo $$ > {tmp_path}/long.pid\nsleep 300")
    await bus.state(short.job_id, "running")
    await bus.state(long.job_id, "running")
    d.popen.send_signal(signal.SIGTERM)
    await d.await_event("daemon.draining", running=2)
    late = await bus.dispatch(d.provider_id, "echo late")  # arrives while draining
    release.touch()  # the short task ends within the grace period
    assert (await bus.final(short.job_id)).state == "completed"
    handed_back = await bus.final(long.job_id)
    assert handed_back.state == "queued"  # the scheduler requeues it
    assert "drained" in (handed_back.error or "")
    assert await asyncio.to_thread(d.popen.wait, 60) == 0
    assert group_members(int((tmp_path / "long.pid").read_text())) == []
    assert late.job_id not in bus.statuses  # not taken while draining...
    d2 = daemons.start(creds, state_dir=d.state_dir)
    assert (await bus.final(late.job_id, limit=90)).state == "completed"  # ...but kept
    assert bus.lines(late.job_id) == ["late"]
    assert d2.provider_id == d.provider_id


def test_identity_is_kept_and_reregistration_updates_the_provider(
    daemons: DaemonFactory,
) -> None:
    gw = daemons.cluster.gateway_url
    creds = provider_key(gw)
    d = daemons.start(creds, max_concurrent_tasks=2, labels='{"zone": "a"}')
    saved = json.loads((d.state_dir / "provider.json").read_text())
    assert saved["provider_id"] == creds["provider_id"]
    assert d.stop() == 0
    d2 = daemons.start(creds, state_dir=d.state_dir, max_concurrent_tasks=5, labels='{"zone": "b"}')
    assert json.loads((d2.state_dir / "provider.json").read_text()) == saved
    user = new_user(gw, "requester")
    p = httpx.get(f"{gw}/api/v1/providers/{creds['provider_id']}", headers=user["headers"]).json()
    assert p["max_concurrent_tasks"] == 5 and p["labels"] == {"zone": "b"}
    assert p["cpu_count"] > 0 and p["gpus"] == []  # this machine: no NVIDIA GPU
