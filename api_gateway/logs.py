"""Job logs from the LOGS stream: the log so far, or a live follow as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from shared.contracts import TERMINAL_STATES, LogChunk, log_subject

log = structlog.get_logger(__name__)

JobStatusFn = Callable[[], Awaitable[str | None]]


async def _subscribe(js: JetStreamContext, job_id: str, start_seq: int = 0) -> Any:
    if start_seq > 0:
        return await js.subscribe(
            log_subject(job_id),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=start_seq),
        )
    return await js.subscribe(
        log_subject(job_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )


def parse_event_id(value: str | None) -> tuple[int, int] | None:
    """``Last-Event-ID`` as this stream writes it: ``<stream seq>-<line index in that chunk>``.
    Anything else is ignored (the stream starts from the beginning)."""
    if not value:
        return None
    seq, _, index = value.strip().partition("-")
    if not (seq.isdigit() and index.isdigit()):
        return None
    return int(seq), int(index)


def _decode(data: bytes) -> LogChunk | None:
    try:
        return LogChunk.model_validate_json(data)
    except ValidationError:
        log.warning("logs.bad_chunk")
        return None


async def read_all(js: JetStreamContext, job_id: str) -> str:
    """Every line stored for the job so far, all attempts in order."""
    info = await js.stream_info("LOGS", subjects_filter=log_subject(job_id))
    count = (info.state.subjects or {}).get(log_subject(job_id), 0)
    if count == 0:
        return ""
    sub = await _subscribe(js, job_id)
    lines: list[str] = []
    try:
        for _ in range(count):
            msg = await sub.next_msg(timeout=5)
            chunk = _decode(msg.data)
            if chunk:
                lines.extend(chunk.lines)
    except TimeoutError:
        log.warning("logs.short_read", job_id=job_id)
    finally:
        await sub.unsubscribe()
    return "".join(line + "\n" for line in lines)


async def follow(
    js: JetStreamContext,
    job_id: str,
    job_status: JobStatusFn,
    poll: float = 2.0,
    after: tuple[int, int] | None = None,
) -> AsyncIterator[str]:
    """SSE events, one per line, until the job has ended and its output is drained.

    Each line's event id is ``<stream seq>-<index>``, so a client that lost the connection
    sends the last id it saw (``Last-Event-ID``) and the stream resumes right after that line:
    nothing lost, nothing repeated (as long as the LOGS stream still holds the chunk).
    """
    sub = await _subscribe(js, job_id, after[0] if after else 0)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=poll)
            except TimeoutError:
                if (await job_status()) in TERMINAL_STATES:
                    yield "event: end\ndata: {}\n\n"
                    return
                yield ": keep-alive\n\n"
                continue
            chunk = _decode(msg.data)
            if chunk is None:
                continue
            seq = msg.metadata.sequence.stream
            skip = after[1] + 1 if after and seq == after[0] else 0
            for index, line in enumerate(chunk.lines):
                if index >= skip:
                    yield f"id: {seq}-{index}\ndata: {json.dumps(line)}\n\n"
            if chunk.eof and (await job_status()) in TERMINAL_STATES:
                yield "event: end\ndata: {}\n\n"
                return
    except asyncio.CancelledError:  # the client went away
        raise
    finally:
        await sub.unsubscribe()
