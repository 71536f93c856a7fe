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


async def test_progress_bars_a_megabyte_line_and_binary_garbage_complete_with_their_log(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    gw = daemons.cluster.gateway_url
    d = daemons.start()  # the three jobs run side by side on one daemon (4 slots)
    # tqdm's way: each update rewrites the line with \r; 100,000 updates of 100 bytes = 10 MB
    progress = (
        "import sys\n"
        "for i in range(100_000):\n"
        "    sys.stdout.write(f'\\rstep {i:06d} ' + '#' * 88)\n"
        "sys.stdout.write('\\r\\n')\n"
        "print('done')\n"
    )
    bars = await bus.dispatch(
        d.provider_id,
        "",
        spec={"params": {"script_content": progress, "script_interpreter": "python3"}},
    )
    garbage = await bus.dispatch(
        d.provider_id,
        "printf 'before\\n'\n"
        "printf '\\377\\376\\000bin\\200ary\\n'\n"
        "head -c 300000 /dev/urandom\n"
        "printf '\\nafter\\n'\n",
    )
    user = new_user(gw, "requester")
    job_id = "long-" + tmp_path.name[-12:]
    async with httpx.AsyncClient(headers=user["headers"]) as client:
        r = await client.post(
            f"{gw}/api/v1/storage/presign/batch",
            json={"inputs": [], "outputs": [log_key(job_id, 1)]},
        )
        assert r.status_code == 200, r.text
        url = r.json()["outputs"][log_key(job_id, 1)]
        long = await bus.dispatch(
            d.provider_id,
            "head -c 1048576 /dev/zero | tr '\\0' a\necho\necho after\n",
            job_id=job_id,
            log_upload=TaskObject(key=log_key(job_id, 1), url=url),
        )
        for task in (bars, garbage, long):
            final = await bus.final(task.job_id, limit=240)
            assert (final.state, final.exit_code) == ("completed", 0), final.error
            await bus.wait_for(lambda t=task: any(c.eof for c in bus.chunks.get(t.job_id, [])))

        # 10 MB of \r progress: every update a line, in order
        lines = bus.lines(bars.job_id)
        steps = [line for line in lines if line.startswith("step ")]
        assert len(steps) == 100_000
        assert steps[0] == "step 000000 " + "#" * 88 and steps[-1].startswith("step 099999 ")
        # the first \r ends an empty line; the last "\r\n" is one line break, not two
        assert lines[0] == "" and lines[-1] == "done" and len(lines) == 100_002

        # binary garbage: kept, as replacement characters, in lines of bounded length
        lines = bus.lines(garbage.job_id)
        assert lines[:2] == ["before", "\ufffd\ufffd\x00bin\ufffdary"]
        assert lines[-1] == "after"
        assert all(len(line.encode()) <= 3 * MAX_LINE + 64 for line in lines)

        # a 1 MB line: cut with a marker, then the next line, live and in the archived log
        expected = ["a" * MAX_LINE + f"…[truncated {1048576 - MAX_LINE} bytes]", "after"]
        assert bus.lines(long.job_id) == expected
        final = await bus.final(long.job_id)
        assert final.artifacts == [log_key(job_id, 1)]
        archived = await client.get(f"{gw}/api/v1/storage/objects/{log_key(job_id, 1)}")
        assert archived.status_code == 200
        assert archived.content.decode().splitlines() == expected


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
