"""A job left running by a daemon killed with SIGKILL is killed by the daemon's next start
(issue 19, ``provider_daemon/orphans.py``), before it takes any task; a process group that is
not that job's is left alone. Real daemon processes, real job processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from provider_daemon.orphans import ProcessGroups
from tests.support.accounts import provider_key
from tests.support.daemons import Bus, DaemonFactory, alive, group_members
from tests.support.wait import eventually, eventually_async

pytestmark = pytest.mark.e2e


async def test_a_restarted_daemon_kills_the_job_its_killed_run_left(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    creds = provider_key(daemons.cluster.gateway_url)
    d = daemons.start(creds)
    pids = tmp_path / "pids"
    task = await bus.dispatch(
        d.provider_id, f"sleep 300 & echo $! >> {pids}\necho $$ >> {pids}\nsleep 300\n"
    )
    await bus.state(task.job_id, "running")

    def both_written() -> list[int] | None:
        got = pids.read_text().split() if pids.exists() else []
        return [int(p) for p in got] if len(got) == 2 else None

    recorded = await eventually_async(both_written, what="the job's pids")
    d.popen.send_signal(signal.SIGKILL)
    d.popen.wait()
    assert all(alive(p) for p in recorded)  # the job outlived its daemon

    again = daemons.start(creds, state_dir=d.state_dir)
    killed = await again.await_event("orphan.killed", job_id=task.job_id)
    assert killed["pgid"] == recorded[-1]
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
