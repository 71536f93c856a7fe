"""What the daemon keeps on disk between starts: its provider identity and the task fence."""

from __future__ import annotations

import json
from pathlib import Path

import structlog

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


def save_identity(state_dir: Path, provider_id: str) -> None:
    """Remember which provider this host registered as (a change is worth a warning)."""
    path = state_dir / "provider.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if known.get("provider_id") not in (None, provider_id):
        log.warning("provider.identity_changed", old=known.get("provider_id"), new=provider_id)
    path.write_text(json.dumps({"provider_id": provider_id}))
