"""provider_daemon/logstream.py against a real nats-server: a rerun's log starts with a visible
separator, an attempt's live log stops at its byte cap with a marker while the log file
(uploaded at the end) keeps every line, and a gang's ranks each keep their lines."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from api_gateway.logs import follow, read_all
from provider_daemon.logstream import LogStream
from shared.contracts import LOG_TRUNCATED
from shared.nats import ensure_streams


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, ["LOGS"])
    try:
        yield js
    finally:
        await nc.close()


async def test_a_later_attempt_starts_with_a_separator(
    js: JetStreamContext, tmp_path: Path
) -> None:
    job = str(uuid.uuid4())
    for attempt in (1, 2):
        async with LogStream(js, job, attempt, tmp_path / f"{attempt}.log", flush=0.01) as s:
            await s.line("begin")
    live = await read_all(js, job)
    assert live.text == "begin\n=== attempt 2 ===\nbegin\n"
    assert live.complete
    # one attempt alone (GET …/logs?attempt=2), and each attempt's file as uploaded
    assert (await read_all(js, job, attempt=2)).text == "=== attempt 2 ===\nbegin\n"
    assert (await read_all(js, job, attempt=1)).text == "begin\n"
    assert (tmp_path / "1.log").read_text() == "begin\n"
    assert (tmp_path / "2.log").read_text() == "=== attempt 2 ===\nbegin\n"


async def test_the_live_log_stops_at_its_cap_with_a_marker(
    js: JetStreamContext, tmp_path: Path
) -> None:
    job = str(uuid.uuid4())
    logfile = tmp_path / "job.log"
    lines = [f"line {i:04d} " + "x" * 90 for i in range(100)]  # 100 bytes each with "\n"
    async with LogStream(js, job, 1, logfile, flush=0.01, live_max_bytes=2_000) as stream:
        for text in lines:
            await stream.line(text)
    live = await read_all(js, job)
    published = live.text.splitlines()
    assert published[:19] == lines[:19]
    assert published[19].startswith(LOG_TRUNCATED)
    assert f"jobs/{job}/attempt-1.log" in published[19]
    assert len(published) == 20  # nothing after the marker on the shared stream
    assert not live.complete  # the gateway serves the archived log of an ended job instead
    assert logfile.read_text().splitlines() == lines


async def test_a_gangs_ranks_each_keep_their_lines(js: JetStreamContext, tmp_path: Path) -> None:
    # Both ranks count their chunks from 1: without the rank in the message id, JetStream
    # would drop rank 1's chunks as repeats of rank 0's.
    job = str(uuid.uuid4())
    async with (
        LogStream(js, job, 1, tmp_path / "r0.log", flush=0.01) as r0,
        LogStream(js, job, 1, tmp_path / "r1.log", flush=0.01, rank=1) as r1,
    ):
        await r0.line("rank 0 of 2")
        await r1.line("rank 1 of 2")
    live = await read_all(js, job)
    assert sorted(live.text.splitlines()) == ["[rank 1] rank 1 of 2", "rank 0 of 2"]
    assert live.complete  # each rank's chunks are counted apart: no gap seen
    assert (tmp_path / "r1.log").read_text() == "rank 1 of 2\n"  # the file as written


async def test_a_follow_drains_every_rank_after_the_first_end(
    js: JetStreamContext, tmp_path: Path
) -> None:
    job = str(uuid.uuid4())
    # rank 0 ends first; rank 1 writes on, then ends, before anyone follows
    async with LogStream(js, job, 1, tmp_path / "r0.log", flush=0.01) as r0:
        await r0.line("rank 0 done")
    async with LogStream(js, job, 1, tmp_path / "r1.log", flush=0.01, rank=1) as r1:
        for i in range(3):
            await r1.line(f"late {i}")

    async def ended() -> str:
        return "completed"

    events = [e async for e in follow(js, job, ended, poll=0.2)]
    data = [json.loads(e.split("data: ", 1)[1]) for e in events if e.startswith("id: ")]
    assert data == ["rank 0 done", "[rank 1] late 0", "[rank 1] late 1", "[rank 1] late 2"]
    assert events[-1].startswith("event: end")
