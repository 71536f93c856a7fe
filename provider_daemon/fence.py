"""What the daemon keeps on disk between starts: its provider identity, the task fence and the
final statuses not yet published."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import structlog

from shared.contracts import TaskStatus

log = structlog.get_logger(__name__)

TaskKey = tuple[str, int]  # (job_id, attempt)


class Fence:
    """The (job, attempt) pairs this host has taken, so a redelivered task never runs twice.

    An append-only JSON-lines file; on load it is cut to the newest ``keep`` entries (months of
    tasks must not grow it without end), written aside and renamed so a crash leaves it whole.
    """

    def __init__(self, path: Path, keep: int) -> None:
        self.path = path
        self.keep = keep
        self.seen: set[TaskKey] = set()

    def load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        if len(lines) > self.keep:
            lines = lines[-self.keep :]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in lines))
            tmp.replace(self.path)
        for line in lines:
            job_id, attempt = json.loads(line)
            self.seen.add((job_id, attempt))

    def __contains__(self, key: TaskKey) -> bool:
        return key in self.seen

    def remember(self, key: TaskKey) -> None:
        self.seen.add(key)
        with self.path.open("a") as fh:
            fh.write(json.dumps(list(key)) + "\n")


class Unreported:
    """Final statuses of attempts this host finished, kept on disk until the STATUS stream has
    them, so a daemon killed (or cut off from NATS) between a task's end and its report still
    reports it after a restart, and meanwhile lists the attempt as held in its heartbeats.

    A JSON-lines journal: ``{"status": …}`` when an attempt ends, ``{"done": [job, attempt]}``
    once the report is published; on load it is cut to the statuses still owed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owed: dict[TaskKey, TaskStatus] = {}

    def load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
                if "done" in entry:
                    self.owed.pop((entry["done"][0], entry["done"][1]), None)
                else:
                    st = TaskStatus.model_validate(entry["status"])
                    self.owed[(st.job_id, st.attempt)] = st
            except (ValueError, KeyError, IndexError):
                log.warning("unreported.bad_line", path=str(self.path))  # a torn last line
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(self._line({"status": st.model_dump(mode="json")}) for st in self))
        tmp.replace(self.path)

    def __iter__(self) -> Iterator[TaskStatus]:
        return iter(list(self.owed.values()))

    def attempts(self) -> list[TaskKey]:
        return list(self.owed)

    def add(self, status: TaskStatus) -> None:
        self.owed[(status.job_id, status.attempt)] = status
        self._append({"status": status.model_dump(mode="json")})

    def done(self, key: TaskKey) -> None:
        if self.owed.pop(key, None) is None:
            return
        if self.owed:
            self._append({"done": list(key)})
        else:  # nothing owed: start the journal afresh, so months of tasks never grow it
            self.path.write_text("")

    @staticmethod
    def _line(entry: dict[str, object]) -> str:
        return json.dumps(entry, separators=(",", ":")) + "\n"

    def _append(self, entry: dict[str, object]) -> None:
        with self.path.open("a") as fh:
            fh.write(self._line(entry))
            fh.flush()
            os.fsync(fh.fileno())  # one per attempt's end: a SIGKILL right after must not lose it


def save_identity(state_dir: Path, provider_id: str) -> None:
    """Remember which provider this host registered as (a change is worth a warning)."""
    path = state_dir / "provider.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if known.get("provider_id") not in (None, provider_id):
        log.warning("provider.identity_changed", old=known.get("provider_id"), new=provider_id)
    path.write_text(json.dumps({"provider_id": provider_id}))
