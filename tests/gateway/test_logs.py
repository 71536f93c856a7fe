"""api_gateway/logs.py and the LOGS stream policy against a real nats-server: one job's chunks
are bounded per subject, so a chatty job evicts only its own oldest lines, and the gateway
knows the live log it read is no longer whole."""

from __future__ import annotations

import asyncio
import uuid

import nats

from api_gateway.logs import read_all
from shared.contracts import LogChunk, log_subject
from shared.nats import LOG_CHUNKS_PER_JOB, STREAMS, ensure_streams
from tests.support import servers


async def test_a_chatty_job_evicts_only_its_own_oldest_chunks() -> None:
    assert STREAMS["LOGS"].max_msgs_per_subject == LOG_CHUNKS_PER_JOB
    with servers.nats_server() as url:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, ["LOGS"])
            info = await js.stream_info("LOGS")
            assert info.config.max_msgs_per_subject == LOG_CHUNKS_PER_JOB
            quiet, chatty = str(uuid.uuid4()), str(uuid.uuid4())
            await js.publish(
                log_subject(quiet),
                LogChunk(job_id=quiet, attempt=1, seq=1, lines=["quiet"])
                .model_dump_json()
                .encode(),
            )
            extra = 5
            seqs = list(range(1, LOG_CHUNKS_PER_JOB + extra + 1))
            for start in range(0, len(seqs), 1000):  # acked, 1,000 in flight at a time
                await asyncio.gather(
                    *(
                        js.publish(
                            log_subject(chatty),
                            LogChunk(job_id=chatty, attempt=1, seq=seq, lines=[f"c{seq}"])
                            .model_dump_json()
                            .encode(),
                        )
                        for seq in seqs[start : start + 1000]
                    )
                )
            info = await js.stream_info("LOGS", subjects_filter="jobs.logs.*")
            counts = info.state.subjects or {}
            assert counts[log_subject(chatty)] == LOG_CHUNKS_PER_JOB
            assert counts[log_subject(quiet)] == 1
            kept = await read_all(js, quiet)
            assert kept.text == "quiet\n" and kept.complete
            cut = await read_all(js, chatty)
            assert cut.chunks == LOG_CHUNKS_PER_JOB
            assert cut.text.startswith(f"c{extra + 1}\n")  # its own oldest went
            assert not cut.complete  # so an ended job's log comes from the archive
        finally:
            await nc.close()
