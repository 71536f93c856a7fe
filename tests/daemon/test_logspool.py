"""Log chunks that cannot be published are spooled to disk, counted, and sent again once
NATS is back, each once (issue 19). A real nats-server, killed and started again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from prometheus_client import REGISTRY

from provider_daemon.logstream import LogStream, resend_spooled, spool_path
from shared.contracts import LogChunk
from shared.nats import close_nats, connect, ensure_streams
from tests.support.servers import RestartableNats, restartable_nats
from tests.support.wait import eventually_async


@pytest.fixture
def killable_nats(tmp_path: Path) -> Iterator[RestartableNats]:
    with restartable_nats(tmp_path / "nats") as server:
        yield server


def spooled_so_far() -> float:
    return REGISTRY.get_sample_value("dante_daemon_log_chunks_spooled_total") or 0.0


async def chunks_in_stream(url: str, job_id: str) -> list[LogChunk]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info("LOGS")).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else []:
            msg = await js.get_msg("LOGS", seq)
            chunk = LogChunk.model_validate(json.loads(msg.data))
            if chunk.job_id == job_id:
                out.append(chunk)
        return out
    finally:
        await nc.close()


async def test_chunks_published_during_an_outage_are_spooled_and_sent_once(
    killable_nats: RestartableNats, tmp_path: Path
) -> None:
    nc = await connect(killable_nats.url, "daemon-test", buffer_while_disconnected=False)
    js = nc.jetstream()
    await ensure_streams(js, ["LOGS"])
    work = tmp_path / "work"
    work.mkdir()
    job_id = "spool-job"
    try:
        async with LogStream(js, job_id, 1, work / f"{job_id}-1.log", attempts=2) as stream:
            await stream.line("before")
            await eventually_async(
                lambda: chunks_in_stream(killable_nats.url, job_id), what="the first chunk live"
            )
            before = spooled_so_far()
            killable_nats.kill()
            for i in range(3):
                await stream.line(f"during {i}")
        spool = spool_path(work, job_id, 1)
        assert spool.exists()
        assert spooled_so_far() > before  # counted, not silently lost
        killable_nats.start()

        async def sent() -> bool:
            try:  # what the daemon's log_spool loop runs; it fails until NATS is back
                await resend_spooled(js, work, set())
            except Exception:
                return False
            return not spool.exists()

        await eventually_async(sent, what="the spool sent and removed")
        chunks = await chunks_in_stream(killable_nats.url, job_id)
        assert [c.seq for c in chunks] == sorted({c.seq for c in chunks})  # each once, in order
        assert [line for c in chunks for line in c.lines] == [
            "before",
            "during 0",
            "during 1",
            "during 2",
        ]
        assert chunks[-1].eof
    finally:
        await close_nats(nc)
