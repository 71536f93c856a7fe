"""Small pure parts of the daemon: heartbeat jitter and back-off, fence compaction, key safety."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from provider_daemon.fence import Fence
from provider_daemon.heartbeat import heartbeat_backoff
from provider_daemon.jobio import TransferFailed, local_path
from provider_daemon.settings import DaemonSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_heartbeats_jitter_and_a_failed_beat_is_retried_inside_the_ttl() -> None:
    settings = DaemonSettings(
        heartbeat_interval_seconds=10, heartbeat_ttl_seconds=30, heartbeat_max_backoff_seconds=60
    )
    beats = heartbeat_backoff(settings)
    calm = [beats.delay(0) for _ in range(200)]
    assert all(8 <= d <= 12 for d in calm) and len(set(calm)) > 100  # spread, not in step

    for _ in range(200):  # a beat stored at 0, every try after it failing (the registry away)
        clock = Clock()
        beats.clock = clock
        clock.now = beats.delay(0)  # the next beat, 8-12 s later: it fails
        tries = []
        for failures in range(1, 40):
            clock.now += beats.delay(failures)
            tries.append(clock.now)
        before = [t for t in tries if t < 20]  # ttl - interval
        assert before, tries  # tried again before ttl - interval: one lost beat sweeps nobody
        assert len([t for t in tries if 20 <= t < 30]) >= 1, tries  # and again before the TTL
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert min(gaps) >= 0.5  # never a busy loop
        late = [b - a for a, b in itertools.pairwise(tries) if a >= 30]
        assert late and max(late) <= 20 * 1.2  # past the TTL: held to ttl - interval (± jitter)
        assert max(late) >= 10  # but it does back off


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
