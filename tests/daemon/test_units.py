"""Small pure parts of the agent: heartbeat jitter and back-off, fence compaction, key safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provider_daemon.agent import Agent
from provider_daemon.jobio import TransferFailed, local_path
from provider_daemon.settings import DaemonSettings


def agent(tmp_path: Path, **values: object) -> Agent:
    return Agent(DaemonSettings(state_dir=tmp_path, **values))  # type: ignore[arg-type]


def test_heartbeats_jitter_and_back_off_to_a_cap(tmp_path: Path) -> None:
    a = agent(tmp_path, heartbeat_interval_seconds=10, heartbeat_max_backoff_seconds=60)
    calm = [a.next_beat() for _ in range(200)]
    assert all(8 <= d <= 12 for d in calm) and len(set(calm)) > 100  # spread, not in step
    a.heartbeat_failures = 2
    assert all(32 <= a.next_beat() <= 48 for _ in range(50))
    a.heartbeat_failures = 30
    assert all(48 <= a.next_beat() <= 72 for _ in range(50))  # capped at 60 s ± jitter


def test_fence_keeps_the_newest_entries_only(tmp_path: Path) -> None:
    lines = [json.dumps([f"job-{i}", 1]) for i in range(30)]
    (tmp_path / "seen-tasks.jsonl").write_text("\n".join(lines) + "\n")
    a = agent(tmp_path, fence_keep=10)
    a._load_state()
    assert a.seen == {(f"job-{i}", 1) for i in range(20, 30)}
    assert len((tmp_path / "seen-tasks.jsonl").read_text().splitlines()) == 10


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a/..", ""])
def test_object_keys_cannot_leave_the_work_dir(tmp_path: Path, key: str) -> None:
    with pytest.raises(TransferFailed):
        local_path(tmp_path, key)
    assert local_path(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"
