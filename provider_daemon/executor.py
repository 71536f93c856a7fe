"""Running one task as a real process: own process group, own work dir, killed as a group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import structlog

from shared.contracts import JobState, TaskDispatch

log = structlog.get_logger(__name__)

LineSink = Callable[[str], Awaitable[None]]
T = TypeVar("T")

# The daemon's own settings (its API key among them) never reach a job's environment.
_PRIVATE_PREFIXES = ("DANTE_",)


@dataclass
class Outcome:
    state: JobState
    exit_code: int | None
    error: str | None = None


class Executor(Protocol):
    async def run(
        self,
        task: TaskDispatch,
        workdir: Path,
        sink: LineSink,
        cancel: asyncio.Event,
    ) -> Outcome: ...


async def supervise(
    ended: Awaitable[T],
    kill: Callable[[], Awaitable[None]],
    cancel: asyncio.Event,
    limit: float | None,
    *,
    reap: float = 30.0,
) -> T | Outcome:
    """The one place a job is waited for, cancelled or timed out, whichever executor runs it.

    Returns what ``ended`` returns when the job ends by itself. On ``cancel`` or after
    ``limit`` seconds the job is killed, given ``reap`` seconds to be reaped, and the
    CANCELLED or TIMED_OUT outcome returned. If the daemon itself is cancelled meanwhile, the
    job is killed too: no job outlives the daemon's interest in it.
    """
    waiting = asyncio.ensure_future(ended)
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {waiting, cancelled}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting in done:
            return waiting.result()
        await kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(waiting), reap)
        if cancelled in done:
            return Outcome(JobState.CANCELLED, None, "cancelled")
        return Outcome(JobState.TIMED_OUT, None, f"exceeded {limit}s")
    finally:
        cancelled.cancel()
        if not waiting.done():
            with contextlib.suppress(Exception):
                await kill()
            waiting.cancel()


def job_env(task: TaskDispatch, workspace: Path | str) -> dict[str, str]:
    """What every job sees, whichever executor runs it; ``workspace`` as the job sees it."""
    return {
        **task.spec.env,
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, task.gpu_indices)),
        "DANTE_JOB_ID": task.job_id,
        "DANTE_ATTEMPT": str(task.attempt),
        "DANTE_INPUTS_DIR": f"{workspace}/inputs",
        "DANTE_OUTPUTS_DIR": f"{workspace}/outputs",
        "PYTHONUNBUFFERED": "1",
        **(task.gang.env() if task.gang else {}),  # a gang job's rank (issue 17)
    }


class ProcessExecutor:
    """Runs a script task with ``CUDA_VISIBLE_DEVICES`` set to the assigned GPUs."""

    def _command(self, task: TaskDispatch, workdir: Path) -> list[str]:
        if task.type != "script":
            raise ValueError(f"the process executor runs scripts, not {task.type}")
        params = task.spec.script
        script = workdir / "script"
        script.write_text(params.script_content)
        return [params.script_interpreter, str(script)]

    async def run(
        self, task: TaskDispatch, workdir: Path, sink: LineSink, cancel: asyncio.Event
    ) -> Outcome:
        host = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
        env = {**host, **job_env(task, workdir)}
        try:
            argv = self._command(task, workdir)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a kill takes every child
            )
        except (OSError, ValueError, KeyError) as exc:
            return Outcome(JobState.FAILED, None, f"could not start: {exc}")
        log.info("task.started", job_id=task.job_id, pid=proc.pid, executor="process")

        async def pump() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                await sink(line.decode(errors="replace").rstrip("\r\n"))

        async def kill() -> None:
            self._kill_group(proc.pid)

        pumping = asyncio.create_task(pump())
        result = await supervise(proc.wait(), kill, cancel, task.timeout_seconds)
        # Background children of a job that ended are killed too: nothing is left behind, and
        # once they are gone the pipe they may hold open reaches EOF.
        self._kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pumping, 10)
        if isinstance(result, Outcome):
            return result
        return exit_outcome(result)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def exit_outcome(code: int) -> Outcome:
    """A job that ended by itself: COMPLETED on exit code 0, else FAILED with the code."""
    if code == 0:
        return Outcome(JobState.COMPLETED, 0)
    return Outcome(JobState.FAILED, code, f"exit code {code}")
