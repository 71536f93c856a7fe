"""The Docker executor through aiodocker against the Engine API's documented requests.

No Docker engine can run on these machines, so the engine is a fake (tests/daemon/fake_engine.py)
serving the documented endpoints on a unix socket; the tests assert the request bodies the real
engine would receive, and the container life the executor drives (pull, create, start, logs,
wait, kill, remove).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from provider_daemon.docker_executor import DockerExecutor
from shared.contracts import JobState, TaskDispatch
from tests.support.accounts import new_user
from tests.support.daemons import DaemonFactory
from tests.support.fake_engine import FakeEngine, Script, serve_engine

IMAGE = "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime"


@pytest.fixture
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FakeEngine]:
    # unix socket paths are limited to 108 bytes: keep it short
    sock = tmp_path_factory.mktemp("eng") / "d.sock"
    async with serve_engine(sock) as e:
        yield e


def task(**params: Any) -> TaskDispatch:
    resources = params.pop("resources", {})
    return TaskDispatch(
        job_id=str(uuid.uuid4()),
        attempt=1,
        provider_id="p1",
        type="container",
        name="container-test",
        spec={"params": {"docker_image": IMAGE, **params}, "resources": resources},
        gpu_indices=params.pop("gpu_indices", [1, 3]) if "gpu_indices" in params else [1, 3],
        timeout_seconds=params.pop("timeout", None),
    )


async def run(engine: FakeEngine, t: TaskDispatch, workdir: Path, **kw: Any) -> tuple[Any, list]:
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    cancel = kw.pop("cancel", None) or asyncio.Event()
    executor = DockerExecutor(engine.url, **kw)
    outcome = await executor.run(t, workdir, sink, cancel)
    return outcome, lines


async def test_container_job_is_created_the_nvidia_way_and_removed(
    engine: FakeEngine, tmp_path: Path
) -> None:
    engine.script = Script(output=[(1, "hello from\nthe container\n"), (2, "a warning\n")])
    t = task(
        docker_command="python -c 'import torch; print(torch.cuda.device_count())'",
        docker_env_vars={"MODEL": "llama", "BATCH": "8"},
        docker_gpus=2,
        resources={"cpu": 2.5, "memory_mb": 4096, "gpu_count": 2},
    )
    outcome, lines = await run(engine, t, tmp_path)
    assert (outcome.state, outcome.exit_code) == (JobState.COMPLETED, 0), outcome.error
    assert lines == ["hello from", "the container", "a warning"]
    # absent image → pulled by name and tag
    (_, _, query, _) = engine.calls("POST", "/images/create")[0]
    assert query == {"fromImage": IMAGE}
    (_, _, query, body) = engine.calls("POST", "/containers/create")[0]
    assert query["name"] == f"dante-{t.job_id}-1"
    assert body["Image"] == IMAGE
    assert body["Cmd"] == ["python", "-c", "import torch; print(torch.cuda.device_count())"]
    env = dict(e.split("=", 1) for e in body["Env"])
    assert env["MODEL"] == "llama" and env["BATCH"] == "8"
    assert env["DANTE_JOB_ID"] == t.job_id and env["DANTE_INPUTS_DIR"] == "/workspace/inputs"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # the two mapped GPUs, as the container sees them
    assert not any(k.startswith("DANTE_DAEMON_") for k in env)
    host = body["HostConfig"]
    assert host["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["1", "3"], "Capabilities": [["gpu"]]}
    ]
    assert host["Privileged"] is False and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["NanoCpus"] == 2_500_000_000
    assert host["Memory"] == host["MemorySwap"] == 4096 * 1024 * 1024
    assert host["Binds"] == [f"{tmp_path}:/workspace:rw"]  # tmp_path is absolute already
    assert body["WorkingDir"] == "/workspace"
    container = next(iter(engine.containers.values()))
    assert container.removed
    order = [r[1].rsplit("/", 1)[-1] for r in engine.requests if "/containers/" in r[1]]
    assert order.index("start") < order.index("wait")
    assert engine.calls("DELETE", f"/containers/{container.id}")[0][2]["force"] in ("1", "True")


async def test_a_present_image_is_not_pulled_and_a_failing_command_reports_its_code(
    engine: FakeEngine, tmp_path: Path
) -> None:
    engine.images.add(IMAGE)
    engine.script = Script(output=[(1, "no newline at the end")], exit_code=3)
    outcome, lines = await run(engine, task(gpu_indices=[]), tmp_path)
    assert (outcome.state, outcome.exit_code) == (JobState.FAILED, 3)
    assert lines == ["no newline at the end"]
    assert engine.calls("POST", "/images/create") == []
    body = engine.calls("POST", "/containers/create")[0][3]
    assert "DeviceRequests" not in body["HostConfig"] and "Cmd" not in body  # image's own CMD


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_timeout_and_cancel_stop_kill_and_remove_the_container(
    engine: FakeEngine, tmp_path: Path, how: str
) -> None:
    # timeout: the container ends on SIGTERM; cancel: it ignores SIGTERM, so after the
    # job's one-second grace period it gets SIGKILL
    engine.images.add(IMAGE)
    engine.script = Script(
        output=[(1, "started\n")], runs_until_killed=True, ignores_term=how == "cancel"
    )
    cancel = asyncio.Event()
    t = task(timeout=1 if how == "timeout" else None)
    t.spec.grace_seconds = 1
    running = asyncio.create_task(run(engine, t, tmp_path, cancel=cancel))
    if how == "cancel":
        await asyncio.wait_for(engine.started.wait(), 30)
        cancel.set()
    outcome, lines = await asyncio.wait_for(running, 60)
    expected = JobState.TIMED_OUT if how == "timeout" else JobState.CANCELLED
    assert outcome.state == expected and lines == ["started"]
    container = next(iter(engine.containers.values()))
    signals = [q["signal"] for _, _, q, _ in engine.calls("POST", "/kill")]
    assert signals == (["SIGTERM"] if how == "timeout" else ["SIGTERM", "SIGKILL"])
    assert container.removed


async def test_no_engine_fails_the_task_with_a_clear_message(tmp_path: Path) -> None:
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    executor = DockerExecutor(f"unix://{tmp_path}/no-docker.sock")
    outcome = await executor.run(task(), tmp_path, sink, asyncio.Event())
    assert outcome.state == JobState.FAILED and outcome.error
    assert outcome.error.startswith("container jobs cannot run here: the Docker engine at unix:")
    assert "does not answer" in outcome.error


async def test_image_pull_has_a_timeout(engine: FakeEngine, tmp_path: Path) -> None:
    engine.pull_hangs = True
    outcome, _ = await run(engine, task(), tmp_path, pull_timeout=0.5)
    assert outcome.state == JobState.FAILED and "image pull exceeded" in (outcome.error or "")
    assert engine.calls("POST", "/containers/create") == []


async def test_gpus_asked_for_but_not_assigned_is_refused(
    engine: FakeEngine, tmp_path: Path
) -> None:
    engine.images.add(IMAGE)
    outcome, _ = await run(engine, task(docker_gpus="all", gpu_indices=[]), tmp_path)
    assert outcome.state == JobState.FAILED and "none were assigned" in (outcome.error or "")
    assert engine.calls("POST", "/containers/create") == []


@pytest.mark.e2e
async def test_the_daemon_advertises_docker_when_an_engine_answers(
    engine: FakeEngine, daemons: DaemonFactory
) -> None:
    # (a daemon with no engine advertises docker false: tests/e2e/test_job_control.py)
    gw = daemons.cluster.gateway_url
    user = new_user(gw)
    d = await asyncio.to_thread(daemons.start, docker_url=engine.url)
    async with httpx.AsyncClient(headers=user["headers"]) as client:
        r = await client.get(f"{gw}/api/v1/providers/{d.provider_id}")
    assert r.status_code == 200, r.text
    assert r.json()["docker"] is True and r.json()["cpu_count"] > 0
    assert not [e for e in d.log_events() if e.get("event") == "daemon.no_docker"]
