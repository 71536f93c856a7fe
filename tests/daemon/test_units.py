"""Small pure parts of the daemon: heartbeat jitter and back-off, fence compaction, key safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provider_daemon.fence import Fence
from provider_daemon.heartbeat import heartbeat_backoff
from provider_daemon.jobio import TransferFailed, local_path
from provider_daemon.settings import DaemonSettings


def test_heartbeats_jitter_and_back_off_to_a_cap() -> None:
    settings = DaemonSettings(heartbeat_interval_seconds=10, heartbeat_max_backoff_seconds=60)
    beats = heartbeat_backoff(settings)
    calm = [beats.delay(0) for _ in range(200)]
    assert all(8 <= d <= 12 for d in calm) and len(set(calm)) > 100  # spread, not in step
    assert all(32 <= beats.delay(2) <= 48 for _ in range(50))  # after two failures in a row
    assert all(48 <= beats.delay(30) <= 72 for _ in range(50))  # capped at 60 s ± jitter


def test_fence_keeps_the_newest_entries_only(tmp_path: Path) -> None:
    lines = [json.dumps([f"job-{i}", 1]) for i in range(30)]
    (tmp_path / "seen-tasks.jsonl").write_text("\n".join(lines) + "\n")
    fence = Fence(tmp_path / "seen-tasks.jsonl", keep=10)
    fence.load()
    assert fence.seen == {(f"job-{i}", 1) for i in range(20, 30)}
    assert len((tmp_path / "seen-tasks.jsonl").read_text().splitlines()) == 10


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a/..", ""])
def test_object_keys_cannot_leave_the_work_dir(tmp_path: Path, key: str) -> None:
    with pytest.raises(TransferFailed):
        local_path(tmp_path, key)
    assert local_path(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"


def test_line_splitter_handles_breaks_split_across_reads_and_overlong_lines() -> None:
    from provider_daemon.executor import LineSplitter

    s = LineSplitter(limit=8)
    out = s.feed(b"one\r") + s.feed(b"\ntwo\rthree\n")  # \r\n across two reads: one break
    assert out == ["one", "two", "three"]
    out = s.feed(b"0123456789") + s.feed(b"abcdef") + s.feed(b"\rtail")
    assert out == ["01234567…[truncated 8 bytes]"]
    assert s.close() == ["tail"]
    assert s.feed(b"\xff\xfeok\n") == ["\ufffd\ufffdok"]
    assert s.feed(b"x\r") == [] and s.close() == ["x"]
