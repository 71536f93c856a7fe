"""The daemon asks the scheduler before it starts an attempt (issue 19,
``provider_daemon/startgate.py``): a real daemon process, with its own NATS user, against the
real cluster's scheduler. A task whose attempt the scheduler does not hold as placed there
(requeued meanwhile, cancelled, or never its own) is never started; the scheduler's side of the
answer is tested in tests/scheduler/test_confirm.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemons import Bus, DaemonFactory

pytestmark = pytest.mark.e2e


async def test_a_task_the_scheduler_refuses_never_starts(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    d = daemons.start(ask_before_start="true")
    ran = tmp_path / "ran"
    task = await bus.dispatch(d.provider_id, f"touch {ran}\n")  # a job no scheduler placed
    refused = await d.await_event("task.refused", job_id=task.job_id)
    assert "does not know this job" in refused["reason"]
    assert not ran.exists()
    assert task.job_id not in bus.statuses  # not even "running" was reported
