"""Job inputs, outputs and the whole log through presigned URLs of the real storage service.

The URLs are made the way the scheduler makes them (``POST /api/v1/storage/presign/batch``),
here by the job's owner through the gateway; the daemon moves the bytes with no token at all.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.contracts import TaskObject, log_key
from tests.support.accounts import new_user
from tests.support.daemons import Bus, DaemonFactory
from tests.support.wait import eventually_async

pytestmark = pytest.mark.e2e


async def presign(
    gw: str, user: dict[str, Any], inputs: list[str], outputs: list[str]
) -> dict[str, Any]:
    async with httpx.AsyncClient(headers=user["headers"]) as client:
        r = await client.post(
            f"{gw}/api/v1/storage/presign/batch", json={"inputs": inputs, "outputs": outputs}
        )
    assert r.status_code == 200, r.text
    return r.json()


async def test_inputs_in_outputs_and_log_out(
    daemons: DaemonFactory, bus: Bus, tmp_path: Path
) -> None:
    gw = daemons.cluster.gateway_url
    d = daemons.start()
    user = new_user(gw, "requester")
    objects = f"{gw}/api/v1/storage/objects"
    async with httpx.AsyncClient(headers=user["headers"]) as client:
        put = await client.put(f"{objects}/data/words.txt", content=b"alpha\nbeta\n")
        assert put.status_code in (200, 201), put.text
        job_id = "io-" + tmp_path.name[-12:]
        out_keys = ["results/upper.txt", "results/never-written.txt"]
        urls = await presign(gw, user, ["data/words.txt"], [*out_keys, log_key(job_id, 1)])
        script = (
            'echo "inputs in $DANTE_INPUTS_DIR"\n'
            'mkdir -p "$DANTE_OUTPUTS_DIR/results"\n'
            'tr a-z A-Z < "$DANTE_INPUTS_DIR/data/words.txt" \\\n'
            '  > "$DANTE_OUTPUTS_DIR/results/upper.txt"\n'
            "echo written\n"
        )
        task = await bus.dispatch(
            d.provider_id,
            script,
            job_id=job_id,
            inputs=[TaskObject(key="data/words.txt", url=urls["inputs"]["data/words.txt"])],
            outputs=[TaskObject(key=k, url=urls["outputs"][k]) for k in out_keys],
            log_upload=TaskObject(key=log_key(job_id, 1), url=urls["outputs"][log_key(job_id, 1)]),
        )
        final = await bus.final(task.job_id)
        assert (final.state, final.exit_code) == ("completed", 0), final.error
        # the output the job wrote, then its log; the one it did not write is not an artifact
        assert final.artifacts == ["results/upper.txt", log_key(job_id, 1)]
        upper = await client.get(f"{objects}/results/upper.txt")
        assert upper.status_code == 200 and upper.content == b"ALPHA\nBETA\n"
        logged = await client.get(f"{objects}/{log_key(job_id, 1)}")
        assert logged.status_code == 200
        lines = logged.text.splitlines()
        assert lines[1] == "written" and lines[0].startswith("inputs in /")
        assert (await client.get(f"{objects}/results/never-written.txt")).status_code == 404
    # the work directory goes once the results are stored (just after the report is sent)
    work = d.state_dir / "work"
    await eventually_async(lambda: not list(work.iterdir()), limit=30, what="work dir emptied")


async def test_a_missing_input_fails_the_attempt_with_a_clear_error(
    daemons: DaemonFactory, bus: Bus
) -> None:
    gw = daemons.cluster.gateway_url
    d = daemons.start()
    user = new_user(gw, "requester")
    objects = f"{gw}/api/v1/storage/objects"
    async with httpx.AsyncClient(headers=user["headers"]) as client:
        await client.put(f"{objects}/gone.bin", content=b"x")
        urls = await presign(gw, user, ["gone.bin"], [])
        assert (await client.delete(f"{objects}/gone.bin")).status_code in (200, 204)
    task = await bus.dispatch(
        d.provider_id,
        "echo must not run",
        inputs=[TaskObject(key="gone.bin", url=urls["inputs"]["gone.bin"])],
    )
    final = await bus.final(task.job_id)
    assert final.state == "failed" and final.exit_code is None
    assert "input not available" in (final.error or "") and "gone.bin" in (final.error or "")
    assert "must not run" not in bus.lines(task.job_id)
    assert any("input not available" in line for line in bus.lines(task.job_id))


async def test_a_log_that_cannot_be_stored_leaves_the_outcome_and_says_so(
    daemons: DaemonFactory, bus: Bus
) -> None:
    """The whole log's upload is refused (a URL without a valid signature): the job still
    completes, its error says the log archive failed, and the log file is kept to try again."""
    gw = daemons.cluster.gateway_url
    d = daemons.start()
    job_id = str(uuid.uuid4())
    refused = TaskObject(
        key=log_key(job_id, 1), url=f"{gw}/api/v1/storage/objects/{log_key(job_id, 1)}?sig=no"
    )
    task = await bus.dispatch(d.provider_id, "echo done", job_id=job_id, log_upload=refused)
    final = await bus.final(task.job_id)
    assert (final.state, final.exit_code) == ("completed", 0), final.error
    assert (final.error or "").startswith("log archive failed: ")
    assert log_key(job_id, 1) not in final.artifacts
    assert (d.state_dir / "work" / f"{job_id}-1.log").exists()  # kept for the later tries
