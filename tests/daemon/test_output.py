"""Job output that used to break the daemon: progress bars (``\\r`` without ``\\n``), a line far
longer than any buffer, binary garbage, and a log that cannot be written. The daemon is a real
process against the real cluster; the jobs are real processes writing to a real pipe."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from shared.contracts import TaskObject, log_key
from tests.support.accounts import new_user
from tests.support.daemons import Bus, DaemonFactory

pytestmark = pytest.mark.e2e

MAX_LINE = 32 * 1024  # provider_daemon.executor.MAX_LINE_BYTES


async def test_ten_megabytes_of_progress_bars_arrive_as_lines(
    daemons: DaemonFactory, bus: Bus
) -> None:
    d = daemons.start()
    # tqdm's way: each update rewrites the line with \r; 100,000 updates of 100 bytes
    script = (
        "import sys\n"
        "for i in range(100_000):\n"
        "    sys.stdout.write(f'\\rstep {i:06d} ' + '#' * 88)\n"
        "sys.stdout.write('\\r\\n')\n"
        "print('done')\n"
    )
    spec = {"params": {"script_content": script, "script_interpreter": "python3"}}
    task = await bus.dispatch(d.provider_id, "", spec=spec, timeout_seconds=300)
    final = await bus.final(task.job_id, limit=240)
    assert (final.state, final.exit_code) == ("completed", 0), final.error
    await bus.wait_for(lambda: any(c.eof for c in bus.chunks.get(task.job_id, [])))
    lines = bus.lines(task.job_id)
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 100_000
    assert steps[0] == "step 000000 " + "#" * 88 and steps[-1].startswith("step 099999 ")
    assert lines[-1] == "done"
    assert "" in lines  # the bare "\r\n": one line break, not two


async def test_a_megabyte_line_is_cut_with_a_marker_and_the_log_is_kept(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    gw = daemons.cluster.gateway_url
    d = daemons.start()
    user = new_user(gw, "requester")
    job_id = "long-" + tmp_path.name[-12:]
    async with httpx.AsyncClient(headers=user["headers"]) as client:
        r = await client.post(
            f"{gw}/api/v1/storage/presign/batch",
            json={"inputs": [], "outputs": [log_key(job_id, 1)]},
        )
        assert r.status_code == 200, r.text
        url = r.json()["outputs"][log_key(job_id, 1)]
        script = "head -c 1048576 /dev/zero | tr '\\0' a\necho\necho after\n"
        task = await bus.dispatch(
            d.provider_id,
            script,
            job_id=job_id,
            log_upload=TaskObject(key=log_key(job_id, 1), url=url),
        )
        final = await bus.final(task.job_id)
        assert (final.state, final.exit_code) == ("completed", 0), final.error
        expected = ["a" * MAX_LINE + f"…[truncated {1048576 - MAX_LINE} bytes]", "after"]
        await bus.wait_for(lambda: any(c.eof for c in bus.chunks.get(task.job_id, [])))
        assert bus.lines(task.job_id) == expected
        assert final.artifacts == [log_key(job_id, 1)]
        archived = await client.get(f"{gw}/api/v1/storage/objects/{log_key(job_id, 1)}")
        assert archived.status_code == 200
        assert archived.content.decode().splitlines() == expected


async def test_binary_garbage_is_kept_as_replacement_characters(
    daemons: DaemonFactory, bus: Bus
) -> None:
    d = daemons.start()
    script = (
        "printf 'before\\n'\n"
        "printf '\\377\\376\\000bin\\200ary\\n'\n"
        "head -c 300000 /dev/urandom\n"
        "printf '\\nafter\\n'\n"
    )
    task = await bus.dispatch(d.provider_id, script)
    final = await bus.final(task.job_id)
    assert (final.state, final.exit_code) == ("completed", 0), final.error
    await bus.wait_for(lambda: any(c.eof for c in bus.chunks.get(task.job_id, [])))
    lines = bus.lines(task.job_id)
    assert lines[:2] == ["before", "\ufffd\ufffd\x00bin\ufffdary"]
    assert lines[-1] == "after"
    assert all(len(line.encode()) <= 3 * MAX_LINE + 64 for line in lines)


async def test_a_log_that_cannot_be_written_fails_the_job_with_the_reason(
    daemons: DaemonFactory, bus: Bus
) -> None:
    # The daemon may write no file past 1 MB (RLIMIT_FSIZE, as on a full disk): the job's
    # log file fails mid-run. The job is stopped and reported failed, not left running.
    d = daemons.start(file_size_limit=1 << 20)
    script = "for i in $(seq 1 40000); do echo line-$i-padding-padding; done\nsleep 300\n"
    task = await bus.dispatch(d.provider_id, script)
    final = await bus.final(task.job_id)
    assert final.state == "failed" and final.exit_code is None
    assert "output could not be kept" in (final.error or "")
    assert "File too large" in (final.error or "")
    assert [s.state for s in bus.statuses[task.job_id]] == ["running", "failed"]
    await d.await_event("task.output_failed")
