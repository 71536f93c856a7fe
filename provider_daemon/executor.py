"""Running one task as a real process: own process group, own work dir, killed as a group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from shared.contracts import JobState, TaskDispatch

log = structlog.get_logger(__name__)

LineSink = Callable[[str], Awaitable[None]]

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

        pumping = asyncio.create_task(pump())
        waiting = asyncio.create_task(proc.wait())
        cancelled = asyncio.create_task(cancel.wait())
        timeout = task.timeout_seconds
        try:
            done, _ = await asyncio.wait(
                {waiting, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:  # the daemon itself being cancelled must not leave the job running
            if not waiting.done():
                self._kill_group(proc.pid)
        outcome: Outcome | None = None
        if waiting not in done:
            await waiting
            outcome = (
                Outcome(JobState.CANCELLED, None, "cancelled")
                if cancelled in done
                else Outcome(JobState.TIMED_OUT, None, f"exceeded {timeout}s")
            )
        cancelled.cancel()
        # Background children of a job that ended are killed too: nothing is left behind, and
        # once they are gone the pipe they may hold open reaches EOF.
        self._kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pumping, 10)
        if outcome is not None:
            return outcome
        code = proc.returncode or 0
        state = JobState.COMPLETED if code == 0 else JobState.FAILED
        return Outcome(state, code, None if code == 0 else f"exit code {code}")

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
