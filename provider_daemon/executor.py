"""Running one task as a real process: own process group, own work dir, killed as a group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import structlog

from provider_daemon.orphans import ProcessGroups, kill_strays
from shared.contracts import JobState, TaskDispatch

log = structlog.get_logger(__name__)

LineSink = Callable[[str], Awaitable[None]]
T = TypeVar("T")

# The daemon's own settings (its API key among them) never reach a job's environment.
_PRIVATE_PREFIXES = ("DANTE_",)

READ_SIZE = 64 * 1024  # one read of a job's output
MAX_LINE_BYTES = 32 * 1024  # a longer line keeps its head and says how much was cut
_BREAK = re.compile(rb"\r\n|\r|\n")  # progress bars end their lines with a bare \r


class LineSplitter:
    """A job's raw output → lines. ``\n``, ``\r\n`` and a bare ``\r`` end a line; a line
    longer than ``limit`` bytes keeps its first ``limit`` and ends ``…[truncated N bytes]``;
    bytes that are not UTF-8 are kept as U+FFFD. Never raises on any input."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._head: bytes | None = None  # the kept start of an overlong line
        self._cut = 0  # bytes of that line dropped so far

    def _line(self, piece: bytes | bytearray) -> str:
        if self._head is None and len(piece) <= self.limit:
            return bytes(piece).decode(errors="replace")
        head = self._head if self._head is not None else bytes(piece[: self.limit])
        cut = self._cut + (len(piece) if self._head is not None else len(piece) - self.limit)
        self._head, self._cut = None, 0
        return f"{head.decode(errors='replace')}…[truncated {cut} bytes]"

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        buf, out, start = self._buf, [], 0
        for m in _BREAK.finditer(buf):
            if m.end() == len(buf) and buf[m.start()] == 0x0D and m.end() - m.start() == 1:
                break  # a \r at the end may be half of a \r\n: the next read says
            out.append(self._line(buf[start : m.start()]))
            start = m.end()
        del buf[:start]
        keep = 1 if buf.endswith(b"\r") else 0
        if len(buf) - keep > self.limit:  # no line end in sight: keep the head, count the rest
            body = len(buf) - keep
            if self._head is None:
                self._head = bytes(buf[: self.limit])
                self._cut += body - self.limit
            else:
                self._cut += body
            del buf[:body]
        return out

    def close(self) -> list[str]:
        """What is left once the output has ended (a last line without a line end)."""
        rest = bytes(self._buf)
        self._buf.clear()
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if rest or self._head is not None:
            return [self._line(rest)]
        return []


class OutputPump:
    """Moves a job's output into the sink until the output ends. If the sink fails (the log
    file cannot be written, say), ``on_failure`` is called once (it kills the job) and the rest
    of the output is read and dropped, so a full pipe never blocks the job's end; ``failure``
    then says why, and the executor reports the job ``failed`` with it."""

    def __init__(self, sink: LineSink, on_failure: Callable[[], Awaitable[None]]) -> None:
        self.sink = sink
        self.on_failure = on_failure
        self.splitter = LineSplitter()
        self.failure: str | None = None

    async def _emit(self, lines: list[str]) -> None:
        if self.failure is not None:
            return
        try:
            for line in lines:
                await self.sink(line)
        except Exception as exc:
            self.failure = f"output could not be kept: {exc or type(exc).__name__}"
            log.error("task.output_failed", error=self.failure)
            with contextlib.suppress(Exception):
                await self.on_failure()

    async def feed(self, data: bytes) -> None:
        await self._emit(self.splitter.feed(data))

    async def close(self) -> None:
        await self._emit(self.splitter.close())

    async def drain(self, stream: asyncio.StreamReader) -> None:
        """Everything from ``stream`` until EOF."""
        try:
            while data := await stream.read(READ_SIZE):
                await self.feed(data)
        except Exception as exc:  # reading itself failed: the job cannot be followed
            if self.failure is None:
                self.failure = f"output could not be read: {exc or type(exc).__name__}"
                log.error("task.output_failed", error=self.failure)
                with contextlib.suppress(Exception):
                    await self.on_failure()
            return
        await self.close()


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
    stop: Callable[[], Awaitable[None]] | None = None,
) -> T | Outcome:
    """The one place a job is waited for, cancelled or timed out, whichever executor runs it.

    Returns what ``ended`` returns when the job ends by itself. On ``cancel`` or after
    ``limit`` seconds the job is stopped (``stop``: SIGTERM, the job's grace period, then
    SIGKILL; ``kill`` if none is given), given ``reap`` seconds to be reaped, and the
    CANCELLED or TIMED_OUT outcome returned. If the daemon itself is cancelled meanwhile, the
    job is killed at once: no job outlives the daemon's interest in it.
    """
    waiting = asyncio.ensure_future(ended)
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {waiting, cancelled}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting in done:
            return waiting.result()
        await (stop or kill)()
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


def _rank(task: TaskDispatch) -> int | None:
    """A gang's rank (another rank of the attempt may run on this machine), else None."""
    return task.gang.rank if task.gang else None


class ProcessExecutor:
    """Runs a script task with ``CUDA_VISIBLE_DEVICES`` set to the assigned GPUs. ``groups``
    keeps each job's process group on disk while it runs (killed at the next start if the
    daemon dies first: ``provider_daemon/orphans.py``)."""

    def __init__(self, groups: ProcessGroups | None = None) -> None:
        self.groups = groups

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
        if self.groups is not None:
            self.groups.add(proc.pid, task.job_id, task.attempt, _rank(task))
        try:
            return await self._supervise(proc, task, sink, cancel)
        finally:
            if self.groups is not None:
                self.groups.remove(proc.pid)

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        task: TaskDispatch,
        sink: LineSink,
        cancel: asyncio.Event,
    ) -> Outcome:

        async def kill() -> None:
            self._kill_group(proc.pid)

        async def stop() -> None:
            await terminate_group(proc.pid, task.spec.grace_seconds, proc.wait())

        assert proc.stdout is not None
        pump = OutputPump(sink, kill)
        pumping = asyncio.create_task(pump.drain(proc.stdout))
        result = await supervise(proc.wait(), kill, cancel, task.timeout_seconds, stop=stop)
        # Background children of a job that ended are killed too: nothing is left behind, and
        # once they are gone the pipe they may hold open reaches EOF. Those that left the group
        # (setsid) are found by the job id and attempt in their environment.
        self._kill_group(proc.pid)
        await asyncio.to_thread(kill_strays, task.job_id, task.attempt, proc.pid, _rank(task))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pumping, 10)
        if pump.failure is not None:
            return Outcome(JobState.FAILED, None, pump.failure)
        if isinstance(result, Outcome):
            return result
        return exit_outcome(result)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


async def terminate_group(pgid: int, grace: float, ended: Awaitable[object]) -> None:
    """SIGTERM to the whole group, ``grace`` seconds for the job to end (checkpoint, clean up),
    then SIGKILL to whatever of the group is left."""
    waiting = asyncio.ensure_future(ended)
    try:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
            log.info("task.terminating", pgid=pgid, grace_s=grace)
            await asyncio.wait({waiting}, timeout=grace)
    finally:
        waiting.cancel()
    ProcessExecutor._kill_group(pgid)


def exit_outcome(code: int) -> Outcome:
    """A job that ended by itself: COMPLETED on exit code 0, else FAILED with the code."""
    if code == 0:
        return Outcome(JobState.COMPLETED, 0)
    return Outcome(JobState.FAILED, code, f"exit code {code}")
