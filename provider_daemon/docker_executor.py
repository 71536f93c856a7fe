"""Running a container task through the Docker Engine API (aiodocker).

aiodocker rather than docker-py: the daemon is one asyncio program, and docker-py's blocking
calls (a log stream that follows for hours, a ``wait`` that blocks until exit) would each need a
thread; aiodocker speaks the same Engine API natively on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from pathlib import Path
from typing import Any

import structlog

from provider_daemon.executor import (
    LineSink,
    Outcome,
    OutputPump,
    exit_outcome,
    job_env,
    supervise,
)
from provider_daemon.orphans import Containers
from shared.contracts import ContainerParams, JobState, TaskDispatch

log = structlog.get_logger(__name__)

WORKSPACE = "/workspace"  # where the job's work directory is mounted inside the container


def _command(value: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def container_config(task: TaskDispatch, workdir: Path) -> dict[str, Any]:
    """The ``POST /containers/create`` body. Never privileged, no added capabilities, the work
    directory as the only mount, and GPUs requested the NVIDIA way (``DeviceRequests`` with the
    assigned device ids, which the NVIDIA Container Toolkit maps into the container)."""
    params = task.spec.container
    resources = task.spec.resources
    env = {**job_env(task, WORKSPACE), **params.docker_env_vars}
    # Inside the container the toolkit exposes only the requested GPUs, renumbered from 0.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(task.gpu_indices)))
    host: dict[str, Any] = {
        "Binds": [f"{workdir.resolve()}:{WORKSPACE}:rw"],
        "Privileged": False,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "NetworkMode": "bridge",
        "AutoRemove": False,  # removed by us after the logs and exit code are read
    }
    if resources.cpu:
        host["NanoCpus"] = int(resources.cpu * 1e9)
    if resources.memory_mb:
        host["Memory"] = resources.memory_mb * 1024 * 1024
        host["MemorySwap"] = host["Memory"]  # no swap beyond the limit
    if task.gpu_indices:
        host["DeviceRequests"] = [
            {
                "Driver": "nvidia",
                "DeviceIDs": [str(i) for i in task.gpu_indices],
                "Capabilities": [["gpu"]],
            }
        ]
    elif params.docker_gpus not in (None, 0, "0", ""):
        # The original's docker_gpus asked for GPUs; the scheduler decides which: none given
        # means none were placed, and a container must not take GPUs other jobs were given.
        raise ValueError("docker_gpus asks for GPUs but none were assigned to this task")
    config: dict[str, Any] = {
        "Image": params.docker_image,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "WorkingDir": WORKSPACE,
        # The daemon's own uid: the workspace is its (mode 0700), and with every capability
        # dropped a root user in the container could not write there anyway.
        "User": f"{os.getuid()}:{os.getgid()}",
        "Tty": False,
        "OpenStdin": False,
        "Labels": {"dante.job_id": task.job_id, "dante.attempt": str(task.attempt)},
        "HostConfig": host,
    }
    cmd = _command(params.docker_command)
    if cmd:
        config["Cmd"] = cmd
    return config


async def engine_problem(url: str | None, within: float = 5.0) -> str | None:
    """None when a Docker engine answers at ``url`` (None: DOCKER_HOST or the default socket);
    otherwise why not, in words a provider and a job's owner can act on."""
    import aiodocker

    try:
        async with aiodocker.Docker(url=url) as docker:
            await asyncio.wait_for(docker.version(), within)
    except (AssertionError, ValueError):  # aiodocker found no socket to talk to
        where = url or "DOCKER_HOST or /var/run/docker.sock"
        return f"no Docker engine socket at {where} (set DANTE_DAEMON_DOCKER_URL)"
    except TimeoutError:
        return f"the Docker engine at {url or 'the default socket'} did not answer in {within:.0f}s"
    except Exception as exc:
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return f"the Docker engine at {url or 'the default socket'} does not answer: {detail}"
    return None


class DockerExecutor:
    def __init__(
        self,
        url: str | None = None,
        pull_timeout: float = 600.0,
        pull: str = "missing",
        containers: Containers | None = None,
    ) -> None:
        self.url = url
        self.pull_timeout = pull_timeout
        self.pull = pull  # "missing": pull only absent images; "always": refresh every time
        # the containers running now, on disk: a restarted daemon removes what a killed one
        # left (provider_daemon/orphans.py)
        self.containers = containers

    async def _ensure_image(self, docker: Any, image: str) -> None:
        from aiodocker.exceptions import DockerError

        if self.pull == "missing":
            try:
                await docker.images.inspect(image)
                return
            except DockerError as exc:
                if exc.status != 404:
                    raise
        async with asyncio.timeout(self.pull_timeout):
            await docker.images.pull(image)

    async def run(
        self, task: TaskDispatch, workdir: Path, sink: LineSink, cancel: asyncio.Event
    ) -> Outcome:
        import aiodocker
        from aiodocker.exceptions import DockerError

        if not isinstance(task.spec.params, ContainerParams):
            return Outcome(JobState.FAILED, None, "a container task needs params.docker_image")
        params = task.spec.params
        try:
            config = container_config(task, workdir)
        except ValueError as exc:
            return Outcome(JobState.FAILED, None, str(exc))
        problem = await engine_problem(self.url)
        if problem is not None:
            return Outcome(JobState.FAILED, None, f"container jobs cannot run here: {problem}")
        async with aiodocker.Docker(url=self.url) as docker:
            try:
                await self._ensure_image(docker, params.docker_image)
            except TimeoutError:
                return Outcome(
                    JobState.FAILED, None, f"image pull exceeded {self.pull_timeout:.0f}s"
                )
            except DockerError as exc:
                return Outcome(JobState.FAILED, None, f"image pull failed: {exc.message}")
            name = f"dante-{task.job_id}-{task.attempt}"
            try:
                container = await docker.containers.create(config, name=name)
            except DockerError as exc:
                return Outcome(JobState.FAILED, None, f"could not create: {exc.message}")
            if self.containers is not None:
                self.containers.add(container.id, task.job_id, task.attempt)
            try:
                return await self._supervise(task, container, sink, cancel)
            except DockerError as exc:
                return Outcome(JobState.FAILED, None, f"docker: {exc.message}")
            finally:
                with contextlib.suppress(Exception):
                    await container.delete(force=True)
                    if self.containers is not None:
                        self.containers.remove(container.id)
                log.info("task.container_removed", container=name)

    async def _supervise(
        self, task: TaskDispatch, container: Any, sink: LineSink, cancel: asyncio.Event
    ) -> Outcome:
        await container.start()
        log.info("task.started", job_id=task.job_id, container=container.id, executor="docker")

        async def kill() -> None:
            await container.kill(signal="SIGKILL")

        async def stop() -> None:
            # SIGTERM, the job's grace period to end by itself, then SIGKILL
            await container.kill(signal="SIGTERM")
            waiting = asyncio.ensure_future(container.wait())
            try:
                done, _ = await asyncio.wait({waiting}, timeout=task.spec.grace_seconds)
            finally:
                waiting.cancel()
            if not done:
                await kill()

        output = OutputPump(sink, kill)

        async def pump() -> None:
            async for chunk in container.log(stdout=True, stderr=True, follow=True):
                await output.feed(chunk.encode() if isinstance(chunk, str) else chunk)
            await output.close()

        pumping = asyncio.create_task(pump())
        try:
            result = await supervise(
                container.wait(), kill, cancel, task.timeout_seconds, stop=stop
            )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pumping, 10)
        if output.failure is not None:
            return Outcome(JobState.FAILED, None, output.failure)
        if isinstance(result, Outcome):
            return result
        return exit_outcome(int((result or {}).get("StatusCode", -1)))
