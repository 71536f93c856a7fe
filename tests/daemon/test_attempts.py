"""What a daemon holds across restarts (issue 19), as a real process against real NATS: the
final status a previous run owed is published by the next start, and a task whose cancel came
first never starts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from provider_daemon.fence import Unreported
from shared.contracts import JobState, TaskCancel, TaskStatus
from shared.db import utcnow
from tests.support.accounts import provider_key
from tests.support.daemons import Bus, DaemonFactory
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def _status(provider_id: str, job_id: str, state: JobState) -> TaskStatus:
    return TaskStatus(
        job_id=job_id, attempt=1, provider_id=provider_id, state=state, exit_code=0, at=utcnow()
    )


def test_the_journal_keeps_only_statuses_still_owed(tmp_path: Path) -> None:
    path = tmp_path / "unreported-statuses.jsonl"
    journal = Unreported(path)
    journal.load()
    journal.add(_status("p", "sent", JobState.COMPLETED))
    journal.add(_status("p", "owed", JobState.FAILED))
    journal.done(("sent", 1))
    with path.open("a") as fh:
        fh.write('{"status": {"job_id": "torn"')  # a write cut short by the kill
    again = Unreported(path)
    again.load()
    assert again.attempts() == [("owed", 1)]
    assert [json.loads(line)["status"]["job_id"] for line in path.read_text().splitlines()] == [
        "owed"
    ]


async def test_a_start_publishes_what_the_last_run_owed_and_skips_a_cancelled_task(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    creds = provider_key(daemons.cluster.gateway_url)
    state = tmp_path / "state"
    owed = str(uuid.uuid4())
    journal = Unreported(state / "unreported-statuses.jsonl")
    journal.load()
    journal.add(_status(creds["provider_id"], owed, JobState.COMPLETED))

    d = daemons.start(creds, state_dir=state)

    final = await bus.final(owed)
    assert (final.state, final.attempt, final.exit_code) == ("completed", 1, 0)

    def settled() -> bool:
        after = Unreported(state / "unreported-statuses.jsonl")
        after.load()
        return after.attempts() == []

    eventually(settled, what="the journal emptied once published")

    # a cancel that reaches the daemon before its task (the task redelivered later) fences it
    marker = tmp_path / "ran"
    job_id = str(uuid.uuid4())
    cancel = TaskCancel(job_id=job_id, attempt=1, provider_id=d.provider_id)
    await bus.js.publish(f"tasks.dispatch.{d.provider_id}", cancel.model_dump_json().encode())
    await bus.dispatch(d.provider_id, f"echo old >> {marker}", job_id=job_id)
    later = await bus.dispatch(d.provider_id, f"echo new >> {marker}")
    assert (await bus.final(later.job_id)).state == "completed"
    assert marker.read_text().split() == ["new"]  # tasks are taken in order: the old one was seen
    assert job_id not in bus.statuses
    await d.await_event("task.cancelled_before_start", job_id=job_id)
