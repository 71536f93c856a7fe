"""A job left running by a daemon killed with SIGKILL is killed by the daemon's next start
(issue 19, ``provider_daemon/orphans.py``), before it takes any task, with the children that
left its process group; a process group that is not that job's is left alone; a container
job's container is removed through the engine. Real daemon processes, real job processes; the
Docker engine is the fake of tests/support (none can run on these machines)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from provider_daemon.orphans import Containers, ProcessGroups, job_processes, kill_strays
from tests.support.accounts import provider_key
from tests.support.daemons import Bus, DaemonFactory, alive, group_members
from tests.support.fake_engine import FakeEngine, Script, serve_engine
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.e2e


async def test_a_restarted_daemon_kills_the_job_its_killed_run_left(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    creds = provider_key(daemons.cluster.gateway_url)
    d = daemons.start(creds)
    pids = tmp_path / "pids"
    # a child in the job's group, one that left it (setsid), then the job's leader
    script = (
        f"sleep 300 & echo $! >> {pids}\n"
        f"setsid sleep 300 > /dev/null 2>&1 < /dev/null & echo $! >> {pids}\n"
        f"echo $$ >> {pids}\nsleep 300\n"
    )
    task = await bus.dispatch(d.provider_id, script)
    await bus.state(task.job_id, "running")

    def both_written() -> list[int] | None:
        got = pids.read_text().split() if pids.exists() else []
        return [int(p) for p in got] if len(got) == 3 else None

    recorded = await eventually_async(both_written, what="the job's pids")
    d.popen.send_signal(signal.SIGKILL)
    d.popen.wait()
    assert all(alive(p) for p in recorded)  # the job outlived its daemon

    again = daemons.start(creds, state_dir=d.state_dir)
    killed = await again.await_event("orphan.killed", job_id=task.job_id)
    assert killed["pgid"] == recorded[-1]
    strays = await again.await_event("task.strays_killed", job_id=task.job_id)
    assert strays["processes"] == 1  # the one that had left the group
    eventually(lambda: not [p for p in recorded if alive(p)], what="the orphans gone")
    assert group_members(recorded[-1]) == []


def test_a_group_that_is_not_the_jobs_is_left_alone(tmp_path: Path) -> None:
    """A recorded group id now used by something else (no member says it is that job)."""
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        path = tmp_path / "process-groups.json"
        ProcessGroups(path).add(os.getpgid(other.pid), "some-job", 1)
        assert str(os.getpgid(other.pid)) in json.loads(path.read_text())
        assert ProcessGroups(path).reap() == 0
        assert other.poll() is None
        assert json.loads(path.read_text()) == {}  # forgotten: asked about once only
    finally:
        other.kill()
        other.wait()


@pytest.fixture
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FakeEngine]:
    sock = tmp_path_factory.mktemp("eng") / "d.sock"  # unix socket paths: 108 bytes at most
    async with serve_engine(sock) as e:
        yield e


async def test_a_restarted_daemon_removes_the_container_its_killed_run_left(
    daemons: DaemonFactory, bus: Bus, engine: FakeEngine
) -> None:
    engine.script = Script(output=[(1, "training\n")], runs_until_killed=True)
    creds = provider_key(daemons.cluster.gateway_url)
    # started off the event loop: the engine answers on this loop
    d = await asyncio.to_thread(daemons.start, creds, docker_url=engine.url)
    spec = {"type": "container", "params": {"docker_image": "busybox:1"}}
    task = await bus.dispatch(d.provider_id, "", type="container", spec=spec)
    await bus.state(task.job_id, "running")
    await asyncio.wait_for(engine.started.wait(), 30)
    (cid,) = list(engine.containers)
    recorded = json.loads((d.state_dir / "containers.json").read_text())
    assert recorded[cid]["job_id"] == task.job_id

    d.popen.send_signal(signal.SIGKILL)
    await asyncio.to_thread(d.popen.wait)
    assert not engine.containers[cid].removed  # the engine still runs it

    again = await asyncio.to_thread(
        daemons.start, creds, state_dir=d.state_dir, docker_url=engine.url
    )
    removed = await again.await_event("orphan.container_removed", job_id=task.job_id)
    assert removed["container"] == cid
    assert engine.containers[cid].removed and engine.containers[cid].exited.is_set()
    assert json.loads((d.state_dir / "containers.json").read_text()) == {}


async def test_a_container_the_engine_no_longer_has_is_forgotten(
    engine: FakeEngine, tmp_path: Path
) -> None:
    path = tmp_path / "containers.json"
    Containers(path).add("gone-already", "some-job", 1)
    assert await Containers(path).reap(engine.url) == 0
    assert engine.calls("DELETE", "/containers/gone-already")  # asked, 404: forgotten
    assert json.loads(path.read_text()) == {}


def test_a_gang_ranks_strays_are_its_own_not_another_ranks_on_the_same_machine() -> None:
    """Two daemons on one machine (a local cluster) each run a rank of the same gang attempt:
    one rank's end kills what of *its* rank left the group, never the other rank's process
    (session 8's CI: rank 0 ended first and SIGKILLed rank 1, and the gang failed)."""

    def rank(n: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DANTE_JOB_ID": "gang-job", "DANTE_ATTEMPT": "1", "DANTE_RANK": str(n)}
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"],
            env=env,
            start_new_session=True,  # as a child that left its job's group
        )

    zero, one = rank(0), rank(1)
    try:
        assert eventually(lambda: len(job_processes("gang-job", 1)) == 2)
        assert kill_strays("gang-job", 1, rank=0) == 1
        assert zero.wait(10) == -signal.SIGKILL
        assert one.poll() is None  # the other rank runs on
        assert job_processes("gang-job", 1, rank=1) == [one.pid]
    finally:
        for p in (zero, one):
            p.kill()
            p.wait()
