"""The YAML job file (``client/dante_client/jobfile.py``), in process: ``timeout`` and
``grace`` become the spec's seconds and a bad one names its line; ``resources.nodes`` asks for a
gang, and ``dante ps`` says on how many nodes it runs."""

from __future__ import annotations

import pytest
from dante_client.errors import JobFileError
from dante_client.jobfile import parse

from shared.contracts import JobSpec

BASE = "name: t\nscript: echo hi\n"


def test_timeout_and_grace_become_seconds_the_platform_accepts() -> None:
    spec = parse(BASE + "timeout: 2h\ngrace: 90s\n").spec
    assert (spec["timeout_seconds"], spec["grace_seconds"]) == (7200, 90)
    assert JobSpec.model_validate(spec).grace_seconds == 90  # the gateway's own contract
    assert parse(BASE + "grace: 0\n").spec["grace_seconds"] == 0  # SIGKILL at once


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("grace: 2h", "<job>:3: grace: must be between 0 and 3600, got 7200"),
        ("grace: soon", "<job>:3: grace: expected seconds or e.g. 90s"),
        ("timeout: 0", "<job>:3: timeout: must be between 1 and 2592000, got 0"),
    ],
)
def test_a_bad_duration_names_its_line_and_field(line: str, message: str) -> None:
    with pytest.raises(JobFileError) as caught:
        parse(BASE + line + "\n")
    assert message in str(caught.value)


def test_a_gang_job_file_asks_for_nodes() -> None:
    spec = parse(BASE + "resources: {gpu_count: 1, nodes: 2}\n").spec
    assert spec["resources"] == {"gpu_count": 1, "nodes": 2}
    assert JobSpec.model_validate(spec).resources.nodes == 2
    with pytest.raises(JobFileError) as caught:
        parse(BASE + "resources: {nodes: two}\n")
    assert "<job>:3: resources.nodes: expected an integer, got 'two'" in str(caught.value)


def test_ps_says_a_gang_runs_on_several_nodes() -> None:
    from dante_client.cli.jobs import _jobs_table
    from dante_client.models import Job
    from rich.console import Console

    jobs = [
        Job(job_id="g", status="running", resources={"gpu_count": 1, "nodes": 2}, gpu_model="H100"),
        Job(job_id="c", status="queued", resources={"nodes": 3}),
        Job(job_id="s", status="queued", resources={"gpu_count": 2}),
    ]
    console = Console(width=200, record=True)
    console.print(_jobs_table(jobs))
    lines = {line.split()[0]: line for line in console.export_text().splitlines()[2:]}
    assert "1x H100 on 2 nodes" in lines["g"]
    assert "cpu on 3 nodes" in lines["c"]
    assert "2x GPU" in lines["s"] and "nodes" not in lines["s"]


def test_status_names_each_rank_of_a_gang_and_its_host() -> None:
    from dante_client.cli.jobs import _status_rows
    from dante_client.models import Job

    gang = Job.model_validate(
        {
            "job_id": "g",
            "status": "running",
            "resources": {"gpu_count": 1, "nodes": 2},
            "provider_id": "host-a",
            "ranks": [
                {"rank": 0, "provider_id": "host-a", "gpu_indices": [3], "state": "running"},
                {"rank": 1, "provider_id": "host-b", "gpu_indices": [0], "state": "dispatched"},
            ],
        }
    )
    rows = dict(_status_rows(gang))
    assert rows["nodes"] == 2
    assert rows["rank 0"] == "host-a GPUs [3] running"
    assert rows["rank 1"] == "host-b GPUs [0] dispatched"
    single = dict(_status_rows(Job(job_id="s", status="queued")))
    assert not any(k.startswith("rank") for k in single) and "nodes" not in single
