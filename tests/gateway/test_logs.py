"""api_gateway/logs.py and the LOGS stream policy against a real nats-server: one job's chunks
are bounded per subject, so a chatty job evicts only its own oldest lines, and the gateway
knows the live log it read is no longer whole."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import nats
import pytest

from api_gateway.logs import read_all
from shared.contracts import LogChunk, log_subject
from shared.nats import LOG_CHUNKS_PER_JOB, STREAMS, ensure_streams
from tests.support import servers

BOUND = 200  # the per-job bound for the eviction test (the real one is LOG_CHUNKS_PER_JOB)


def _chunk(job: str, seq: int, line: str) -> bytes:
    return LogChunk(job_id=job, attempt=1, seq=seq, lines=[line]).model_dump_json().encode()


async def test_the_logs_stream_is_bounded_per_job() -> None:
    with servers.nats_server() as url:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, ["LOGS"])
            info = await js.stream_info("LOGS")
            assert info.config.max_msgs_per_subject == LOG_CHUNKS_PER_JOB
            assert info.config.max_bytes == 1 << 30
        finally:
            await nc.close()


async def test_a_chatty_job_evicts_only_its_own_oldest_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the stream as ensure_streams makes it, with a bound small enough to reach quickly
    monkeypatch.setitem(
        STREAMS, "LOGS", dataclasses.replace(STREAMS["LOGS"], max_msgs_per_subject=BOUND)
    )
    with servers.nats_server() as url:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, ["LOGS"])
            quiet, chatty = str(uuid.uuid4()), str(uuid.uuid4())
            await js.publish(log_subject(quiet), _chunk(quiet, 1, "quiet"))
            extra = 5
            await asyncio.gather(
                *(
                    js.publish(log_subject(chatty), _chunk(chatty, seq, f"c{seq}"))
                    for seq in range(1, BOUND + extra + 1)
                )
            )
            info = await js.stream_info("LOGS", subjects_filter="jobs.logs.*")
            counts = info.state.subjects or {}
            assert counts[log_subject(chatty)] == BOUND
            assert counts[log_subject(quiet)] == 1
            kept = await read_all(js, quiet)
            assert kept.text == "quiet\n" and kept.complete
            cut = await read_all(js, chatty)
            assert cut.chunks == BOUND
            assert cut.text.startswith(f"c{extra + 1}\n")  # its own oldest went
            assert not cut.complete  # so an ended job's log comes from the archive
        finally:
            await nc.close()
