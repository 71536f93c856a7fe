"""provider_daemon/logstream.py against a real nats-server: a rerun's log starts with a visible
separator, and an attempt's live log stops at its byte cap with a marker while the log file
(uploaded at the end) keeps every line."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from api_gateway.logs import read_all
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
