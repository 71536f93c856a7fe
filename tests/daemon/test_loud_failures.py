"""What the daemon does when NATS will not take what it publishes: a log chunk is spooled to
disk loudly (logged and counted) and sent once NATS takes it, and a status report stops
retrying once the SIGTERM drain has given up on it, so the daemon still ends.

The daemon runs as a real process against the real cluster (registration, heartbeats) but talks
to a private real nats-server, whose streams each test shapes: without ``LOGS`` every log chunk
is refused; with ``STATUS`` deleted mid-task every status report is."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from shared.contracts import LogChunk
from shared.nats import ensure_streams
from tests.support import servers
from tests.support.daemons import Bus, Daemon, DaemonFactory

pytestmark = pytest.mark.e2e


@pytest.fixture
async def private_nats() -> AsyncIterator[tuple[str, Bus, JetStreamContext]]:
    with servers.nats_server() as url:
        nc = await nats.connect(url)
        bus = Bus(nc)
        await bus.start()
        try:
            yield url, bus, nc.jetstream()
        finally:
            await nc.close()


def metric(d: Daemon, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{d.port}/metrics", timeout=5).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_log_chunk_nats_refuses_is_spooled_counted_and_sent_later(
    daemons: DaemonFactory, private_nats: tuple[str, Bus, JetStreamContext]
) -> None:
    url, bus, js = private_nats
    await ensure_streams(js, ["TASKS", "STATUS"])  # no LOGS: jobs.logs.* has no stream
    d = await asyncio.to_thread(
        daemons.start, nats_url=url, log_publish_attempts=2, log_spool_interval_seconds=0.5
    )
    task = await bus.dispatch(d.provider_id, "echo one\necho two")
    final = await bus.final(task.job_id)
    assert (final.state, final.exit_code) == ("completed", 0)  # the job itself is unharmed
    spooled = await d.await_event("log_chunk.spooled", job_id=task.job_id)
    assert spooled["level"] == "error" and spooled["error"]
    events = [e for e in d.log_events() if e.get("event") == "log_chunk.spooled"]
    assert sum(e["lines"] for e in events) == 2
    assert metric(d, "dante_daemon_log_lines_spooled_total") == 2
    chunks = metric(d, "dante_daemon_log_chunks_spooled_total")
    assert chunks == 2  # the lines, then the empty end-of-log chunk behind them
    # the stream exists again: the daemon's log_spool loop sends the chunks from disk
    await ensure_streams(js, ["LOGS"])
    await d.await_event("log_spool.resent")
    stored = (await js.stream_info("LOGS")).state
    assert stored.messages == chunks  # every spooled chunk, each once
    last = await js.get_last_msg("LOGS", f"jobs.logs.{task.job_id}")
    assert LogChunk.model_validate_json(last.data).eof
    assert metric(d, "dante_daemon_log_chunks_resent_total") == chunks


async def test_a_status_report_stops_retrying_when_the_drain_gives_up(
    daemons: DaemonFactory, private_nats: tuple[str, Bus, JetStreamContext], tmp_path: Path
) -> None:
    url, bus, js = private_nats
    await ensure_streams(js, ["TASKS", "STATUS", "LOGS"])
    d = await asyncio.to_thread(daemons.start, nats_url=url, drain_grace_seconds=1)
    never = tmp_path / "never"
    task = await bus.dispatch(
        d.provider_id, f"echo working\nwhile [ ! -e {never} ]; do sleep 0.05; done"
    )
    await bus.state(task.job_id, "running")
    # the process starts only once the "running" report is acked: then the stream can go
    await d.await_event("task.started", job_id=task.job_id)
    await js.delete_stream("STATUS")  # from now on no status report can be published
    d.popen.send_signal(signal.SIGTERM)
    # Before the fix the drained task's report retried forever and the daemon never ended;
    # the bound only stops such a hung run.
    code = await asyncio.to_thread(d.popen.wait, 120)
    assert code == 0
    # the drained attempt's "queued" is the report this is about
    abandoned = await d.await_event("status.abandoned", job_id=task.job_id, state="queued")
    assert abandoned["level"] == "error"
    assert any(e.get("event") == "status.failed" for e in d.log_events())  # it did retry
    assert [e["event"] for e in d.log_events()][-1] == "daemon.stopped"
