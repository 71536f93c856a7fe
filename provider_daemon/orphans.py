"""Job processes left behind by a daemon that died (issue 19).

A job runs in a process group of its own (``ProcessExecutor``), so it outlives a daemon killed
with SIGKILL or by the OOM killer. The restarted daemon reports that it no longer holds the
attempt and the scheduler requeues it; the old process would still run beside attempt 2. So
the groups of running jobs are kept on disk, and a starting daemon kills the ones a previous run
left, before it takes any task.

A group is killed only if it is still this job's: same boot, and a member whose environment
says ``DANTE_JOB_ID=<job>`` (a recycled process group id is someone else's and left alone).

Container jobs outlive the daemon the same way (the engine runs them): their container ids are
kept on disk too, and a starting daemon whose engine answers removes the ones a previous run
left (``Containers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

PROC = Path("/proc")


def boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _members(pgid: int, job_id: str) -> list[int]:
    """Processes of group ``pgid`` that are this job's (by their environment)."""
    marker = f"DANTE_JOB_ID={job_id}".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pgid and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def job_processes(
    job_id: str, attempt: int, *, rank: int | None = None, outside: int | None = None
) -> list[int]:
    """Live processes of this job's attempt in any process group, by their environment: a
    child that left the job's group (``setsid``, a daemonising double fork) still carries the
    ``DANTE_JOB_ID`` and ``DANTE_ATTEMPT`` it inherited. (One that clears its environment
    escapes this too; only a cgroup per job would hold it.) ``rank``: a gang's rank, whose
    ``DANTE_RANK`` must match too: another rank of the same attempt may run on this machine
    (two daemons on one host, as in a local cluster), and it is not this task's to kill.
    ``outside``: leave out the members of this process group (just sent SIGKILL, they may not
    have died yet)."""
    markers = {f"DANTE_JOB_ID={job_id}".encode(), f"DANTE_ATTEMPT={attempt}".encode()}
    if rank is not None:
        markers.add(f"DANTE_RANK={rank}".encode())
    me = os.getpid()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        with contextlib.suppress(OSError, IndexError):
            if not markers <= set((entry / "environ").read_bytes().split(b"\0")):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) != outside:
                found.append(int(entry.name))
    return found


def kill_strays(
    job_id: str, attempt: int, group: int | None = None, rank: int | None = None
) -> int:
    """SIGKILL whatever of this attempt (of this gang rank) still runs outside its process
    group ``group`` (see :func:`job_processes`); returns how many were killed."""
    killed = 0
    for pid in job_processes(job_id, attempt, rank=rank, outside=group):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    if killed:
        log.warning("task.strays_killed", job_id=job_id, attempt=attempt, processes=killed)
    return killed


@dataclass
class _Ledger:
    """What runs now, keyed by what would be left behind, in one small JSON file rewritten
    (aside, then renamed) on every start and end of a job."""

    path: Path
    entries: dict[str, dict[str, object]] = field(default_factory=dict)

    def _put(self, key: str, entry: dict[str, object]) -> None:
        self.entries[key] = entry
        self._save()

    def _drop(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries))
        tmp.replace(self.path)

    def _left(self) -> dict[str, dict[str, object]]:
        """What a previous run of the daemon wrote (nothing if the file is gone or torn)."""
        try:
            left = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return left if isinstance(left, dict) else {}


@dataclass
class ProcessGroups(_Ledger):
    """``{pgid: {"job_id", "attempt", "rank", "boot"}}`` of the script jobs running now
    (``rank``: a gang's, else None)."""

    def add(self, pgid: int, job_id: str, attempt: int, rank: int | None = None) -> None:
        entry = {"job_id": job_id, "attempt": attempt, "rank": rank, "boot": boot_id()}
        self._put(str(pgid), entry)

    def remove(self, pgid: int) -> None:
        self._drop(str(pgid))

    def reap(self) -> int:
        """Kill what a previous run of the daemon left running; returns the groups killed."""
        left = self._left()
        killed = 0
        boot = boot_id()
        for pgid_text, entry in left.items():
            pgid, job_id = int(pgid_text), str(entry.get("job_id"))
            if entry.get("boot") != boot:
                continue  # the machine restarted: nothing of that run survives
            members = _members(pgid, job_id)
            if members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                    killed += 1
                    log.warning(
                        "orphan.killed",
                        job_id=job_id,
                        attempt=entry.get("attempt"),
                        pgid=pgid,
                        processes=len(members),
                    )
            attempt, rank = entry.get("attempt"), entry.get("rank")
            if isinstance(attempt, int):  # and what of it had left the group
                kill_strays(job_id, attempt, pgid, rank if isinstance(rank, int) else None)
        self.entries.clear()
        self._save()
        return killed


@dataclass
class Containers(_Ledger):
    """``{container id: {"job_id", "attempt"}}`` of the container jobs running now: written
    once the engine has created the container, before it starts."""

    def add(self, container_id: str, job_id: str, attempt: int) -> None:
        self._put(container_id, {"job_id": job_id, "attempt": attempt})

    def remove(self, container_id: str) -> None:
        self._drop(container_id)

    async def reap(self, url: str | None) -> int:
        """Remove (force: killed first) each container a previous run left, through the engine
        at ``url``; returns how many were removed. Call it only when the engine answers: what
        could not be asked about stays in the file for the next start."""
        import aiodocker
        from aiodocker.exceptions import DockerError

        left = self._left()
        if not left:
            return 0
        removed = 0
        kept: dict[str, dict[str, object]] = {}
        async with aiodocker.Docker(url=url) as docker:
            for cid, entry in left.items():
                try:
                    await docker.containers.container(cid).delete(force=True)
                except DockerError as exc:
                    if exc.status != 404:  # 404: it ended and was removed meanwhile
                        kept[cid] = entry
                        log.error("orphan.container_not_removed", container=cid, error=str(exc))
                    continue
                removed += 1
                log.warning(
                    "orphan.container_removed",
                    job_id=entry.get("job_id"),
                    attempt=entry.get("attempt"),
                    container=cid,
                )
        self.entries = kept
        self._save()
        return removed
