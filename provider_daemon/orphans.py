"""Job processes left behind by a daemon that died (issue 19).

A job runs in a process group of its own (``ProcessExecutor``), so it outlives a daemon killed
with SIGKILL or by the OOM killer. The restarted daemon reports that it no longer holds the
attempt and the scheduler requeues it; the old process would still run beside attempt 2. So
the groups of running jobs are kept on disk, and a starting daemon kills the ones a previous run
left, before it takes any task.

A group is killed only if it is still this job's: same boot, and a member whose environment
says ``DANTE_JOB_ID=<job>`` (a recycled process group id is someone else's and left alone).
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


@dataclass
class ProcessGroups:
    """``{pgid: {"job_id", "attempt", "boot"}}`` of the jobs running now, in one small JSON file
    rewritten (aside, then renamed) on every start and end of a job."""

    path: Path
    groups: dict[int, dict[str, object]] = field(default_factory=dict)

    def add(self, pgid: int, job_id: str, attempt: int) -> None:
        self.groups[pgid] = {"job_id": job_id, "attempt": attempt, "boot": boot_id()}
        self._save()

    def remove(self, pgid: int) -> None:
        if self.groups.pop(pgid, None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in self.groups.items()}))
        tmp.replace(self.path)

    def reap(self) -> int:
        """Kill what a previous run of the daemon left running; returns the groups killed."""
        try:
            left = json.loads(self.path.read_text())
        except (OSError, ValueError):
            left = {}
        killed = 0
        boot = boot_id()
        for pgid_text, entry in left.items():
            pgid, job_id = int(pgid_text), str(entry.get("job_id"))
            if entry.get("boot") != boot:
                continue  # the machine restarted: nothing of that run survives
            members = _members(pgid, job_id)
            if not members:
                continue
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
        self.groups.clear()
        self._save()
        return killed
