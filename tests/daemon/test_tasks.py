"""The daemon as a real process, running real subprocesses, against a real cluster and NATS.

Jobs coordinate with the test through files (a job waits for a "release" file), so no test
depends on how fast this machine is: every wait is for a state, bounded only to stop a hung run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.accounts import provider_key
from tests.support.daemons import Bus, DaemonFactory, alive, group_members
from tests.support.wait import eventually_async

pytestmark = pytest.mark.e2e


async def wait_file(path: Path, limit: float = 60) -> str:
    def written() -> str | None:
        text = path.read_text() if path.exists() else ""
        return text if text.endswith("\n") else None

    return await eventually_async(written, limit=limit, what=f"{path} written")


async def test_log_lines_arrive_in_order_while_the_job_runs(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    d = daemons.start()
    release = tmp_path / "release"
    script = (
        "for i in 1 2 3; do echo line-$i; done\n"
        f"while [ ! -e {release} ]; do sleep 0.05; done\n"
        "for i in 4 5 6; do echo line-$i; done\n"
        "echo to-stderr >&2\n"
    )
    task = await bus.dispatch(d.provider_id, script)
    # the first lines reach NATS while the job is still blocked on the release file
    await bus.wait_for(lambda: len(bus.lines(task.job_id)) >= 3)
    assert bus.lines(task.job_id) == ["line-1", "line-2", "line-3"]
    assert not [s for s in bus.statuses.get(task.job_id, []) if s.state != "running"]
    release.touch()
    final = await bus.final(task.job_id)
    assert (final.state, final.exit_code) == ("completed", 0)
    await bus.wait_for(lambda: any(c.eof for c in bus.chunks.get(task.job_id, [])))
    chunks = bus.chunks[task.job_id]
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert chunks[-1].eof and chunks[-1].lines == []
    expected = [f"line-{i}" for i in range(1, 7)] + ["to-stderr"]
    assert bus.lines(task.job_id) == expected
    assert [s.state for s in bus.statuses[task.job_id]] == ["running", "completed"]


async def test_timeout_kills_the_whole_group(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    d = daemons.start()
    pids = tmp_path / "pids"
    script = (
        f"sleep 300 & echo $! >> {pids}\n"
        f"( sleep 300 & echo $! >> {pids}; wait ) &\n"
        f"echo $$ >> {pids}\n"
        "sleep 300\n"
    )
    task = await bus.dispatch(d.provider_id, script, timeout_seconds=2)
    final = await bus.final(task.job_id)
    assert final.state == "timed_out" and final.exit_code is None
    assert "exceeded 2s" in (final.error or "")
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 3
    leader = recorded[-1]
    assert not [p for p in recorded if alive(p)]
    assert group_members(leader) == []


async def test_cancel_leaves_no_process_of_the_group(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    d = daemons.start()
    pids = tmp_path / "pids"
    script = (
        f"echo $$ > {pids}.leader\n"
        f"for i in 1 2 3; do (sleep 300; echo never) & echo $! >> {pids}; done\n"
        f"bash -c 'sleep 300 & echo $! >> {pids}; sleep 300' &\n"
        "echo started\n"
        "wait\n"
    )
    task = await bus.dispatch(d.provider_id, script)
    await bus.wait_for(lambda: "started" in bus.lines(task.job_id))
    leader = int((await wait_file(Path(f"{pids}.leader"))).strip())
    assert len(group_members(leader)) >= 5  # the shell, three subshells, bash -c, sleeps
    await bus.cancel(task)
    final = await bus.final(task.job_id)
    assert final.state == "cancelled"
    assert group_members(leader) == []
    assert not [p for p in map(int, pids.read_text().split()) if alive(p)]
    assert "never" not in bus.lines(task.job_id)


async def test_concurrency_limit_holds_the_next_task(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    d = daemons.start(max_concurrent_tasks=2)
    journal = tmp_path / "journal"
    tasks = []
    for n in range(3):
        release = tmp_path / f"release-{n}"
        script = (
            f"echo start >> {journal}\n"
            f"while [ ! -e {release} ]; do sleep 0.05; done\n"
            f"echo end >> {journal}\n"
        )
        tasks.append(await bus.dispatch(d.provider_id, script, job_id=f"conc-{n}-{os.getpid()}"))
    await bus.wait_for(lambda: sum(bool(bus.statuses.get(t.job_id)) for t in tasks) >= 2)
    running = [t for t in tasks if bus.statuses.get(t.job_id)]
    waiting = [t for t in tasks if t not in running]
    assert len(running) == 2 and len(waiting) == 1
    # the third was offered and handed back: it waits for a free slot, it did not start
    await d.await_event("consumer.retry", error="at the concurrency limit")
    assert not bus.statuses.get(waiting[0].job_id)
    # `running` is reported as the process starts, a moment before its first line is written
    await eventually_async(lambda: journal.exists() and journal.read_text().count("start") >= 2)
    assert journal.read_text().split() == ["start", "start"]
    (tmp_path / f"release-{tasks.index(running[0])}").touch()
    await bus.state(waiting[0].job_id, "running", limit=120)
    for n in range(3):
        (tmp_path / f"release-{n}").touch()
    for t in tasks:
        assert (await bus.final(t.job_id)).state == "completed"
    # never more than two at once: replaying the journal, the count never passes 2
    level, peak = 0, 0
    for entry in journal.read_text().split():
        level += 1 if entry == "start" else -1
        peak = max(peak, level)
    assert peak == 2


async def test_duplicate_delivery_runs_once_even_after_a_restart(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    creds = provider_key(daemons.cluster.gateway_url)
    d = daemons.start(creds)
    runs = tmp_path / "runs"
    task = await bus.dispatch(d.provider_id, f"echo run >> {runs}", job_id="dup-1")
    assert (await bus.final(task.job_id)).state == "completed"
    # the same (job_id, attempt) again, as a redelivery past JetStream's duplicate window
    await bus.dispatch(d.provider_id, f"echo run >> {runs}", job_id="dup-1")
    await d.await_event("task.duplicate", job_id="dup-1")
    assert d.stop() == 0
    d2 = daemons.start(creds, state_dir=d.state_dir)  # the fence file survives a restart
    await bus.dispatch(d.provider_id, f"echo run >> {runs}", job_id="dup-1")
    await d2.await_event("task.duplicate", job_id="dup-1")
    # a new attempt of the same job is new work
    await bus.dispatch(d.provider_id, f"echo run >> {runs}", job_id="dup-1", attempt=2)
    done = await bus.wait_for(
        lambda: [s for s in bus.statuses["dup-1"] if s.attempt == 2 and s.state == "completed"]
    )
    assert done and runs.read_text().split() == ["run", "run"]
    assert [(s.attempt, s.state) for s in bus.statuses["dup-1"]] == [
        (1, "running"),
        (1, "completed"),
        (2, "running"),
        (2, "completed"),
    ]
