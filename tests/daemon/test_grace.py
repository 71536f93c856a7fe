"""Cancel and timeout stop a job gracefully: SIGTERM to its process group, ``grace_seconds``
for it to end, then SIGKILL to what is left. The daemon is a real process; so are the jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemons import Bus, DaemonFactory, alive, group_members
from tests.support.wait import eventually_async

pytestmark = pytest.mark.e2e

# ignores SIGTERM (says so), so only the SIGKILL after the grace period ends it
STUBBORN = (
    "trap 'echo got-term' TERM\necho $$ > {pid}\necho ready\nwhile true; do sleep 0.1; done\n"
)


async def test_a_job_ignoring_sigterm_is_killed_after_its_grace(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    # a timeout and a cancel stop the job the same way (executor.supervise → terminate_group);
    # the cancel path with a job that ends on SIGTERM is tests/e2e/test_job_control.py
    d = daemons.start()
    pid_file = tmp_path / "pid"
    script = STUBBORN.format(pid=pid_file)
    spec = {"params": {"script_content": script}, "grace_seconds": 1}
    task = await bus.dispatch(d.provider_id, script, spec=spec, timeout_seconds=2)
    await bus.wait_for(lambda: "ready" in bus.lines(task.job_id))
    final = await bus.final(task.job_id)
    assert final.state == "timed_out" and "exceeded 2s" in (final.error or "")
    await eventually_async(lambda: "got-term" in bus.lines(task.job_id), what="got-term")
    leader = int(pid_file.read_text())
    assert not alive(leader) and group_members(leader) == []
    event = await d.await_event("task.terminating", grace_s=1)
    assert event["pgid"] == leader


async def test_a_child_that_left_the_jobs_group_is_killed_when_the_job_ends(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    """``setsid`` puts a child in a session and group of its own, where a kill of the job's
    group does not reach; it still carries the job's id and attempt in its environment."""
    d = daemons.start()
    pid_file = tmp_path / "escaped"
    script = f"setsid sleep 300 > /dev/null 2>&1 < /dev/null &\necho $! > {pid_file}\nsleep 0.5\n"
    task = await bus.dispatch(d.provider_id, script)
    final = await bus.final(task.job_id)
    assert final.state == "completed"
    escaped = int(pid_file.read_text())
    await eventually_async(lambda: not alive(escaped), what="the escaped child killed")
    event = await d.await_event("task.strays_killed", job_id=task.job_id)
    assert event["processes"] == 1
