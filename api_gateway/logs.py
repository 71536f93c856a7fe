"""Job logs: the log so far from the LOGS stream (live, bounded), or the archived per-attempt
log objects once the live one has expired or was cut; or a live follow as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from shared.contracts import LOG_TRUNCATED, TERMINAL_STATES, LogChunk, log_key, log_subject

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


@dataclass
class LiveLog:
    text: str
    chunks: int  # chunks read (0: the stream holds nothing for this job, or attempt)
    complete: bool  # False: chunks were evicted or the daemon cut the live log at its cap


def shown(chunk: LogChunk) -> list[str]:
    """The chunk's lines as a reader sees them: a gang's rank > 0 marks each with its rank
    (rank 0, and every job that is not a gang, as written)."""
    if not chunk.rank:
        return chunk.lines
    return [f"[rank {chunk.rank}] {line}" for line in chunk.lines]


async def live_chunks(js: JetStreamContext, job_id: str) -> int:
    """How many chunks the LOGS stream holds for the job (0: none, or they all expired)."""
    info = await js.stream_info("LOGS", subjects_filter=log_subject(job_id))
    return int((info.state.subjects or {}).get(log_subject(job_id), 0))


async def read_all(js: JetStreamContext, job_id: str, attempt: int | None = None) -> LiveLog:
    """Every line the LOGS stream still holds for the job, all attempts in order (or one)."""
    count = await live_chunks(js, job_id)
    if count == 0:
        return LiveLog("", 0, True)
    sub = await _subscribe(js, job_id)
    lines: list[str] = []
    chunks, complete = 0, True
    expected: dict[tuple[int, int], int] = {}  # (attempt, rank) → the next chunk seq (from 1)
    try:
        for _ in range(count):
            msg = await sub.next_msg(timeout=5)
            chunk = _decode(msg.data)
            if chunk is None or (attempt is not None and chunk.attempt != attempt):
                continue
            chunks += 1
            writer = (chunk.attempt, chunk.rank)
            if chunk.seq != expected.get(writer, 1):
                complete = False  # the oldest chunks went (per-job bound) or were dropped
            expected[writer] = chunk.seq + 1
            if any(line.startswith(LOG_TRUNCATED) for line in chunk.lines):
                complete = False
            lines.extend(shown(chunk))
    except TimeoutError:
        log.warning("logs.short_read", job_id=job_id)
        complete = False
    finally:
        await sub.unsubscribe()
    return LiveLog("".join(line + "\n" for line in lines), chunks, complete)


async def archived(
    http: httpx.AsyncClient,
    storage: str,
    job_id: str,
    attempts: list[int],
    owner: str | None,
    headers: dict[str, str],
) -> list[str]:
    """The object URLs of the attempts' logs the daemon uploaded (``jobs/<id>/attempt-N.log``
    in the owner's storage), asked for with the caller's own token (an admin names the owner)."""
    params = {"owner": owner} if owner else {}
    found = []
    for n in attempts:
        url = f"{storage}/api/v1/storage/objects/{quote(log_key(job_id, n))}"
        resp = await http.head(url, params=params, headers=headers)
        if resp.status_code == 200:
            found.append(str(httpx.URL(url, params=params)))
        elif resp.status_code != 404:
            resp.raise_for_status()
    return found


async def archive_events(
    http: httpx.AsyncClient, urls: list[str], headers: dict[str, str]
) -> AsyncIterator[str]:
    """An ended job's archived log as the same server-sent events a live follow sends (ids
    ``archive-<n>``: a resume from one starts over), then ``end``."""
    n = 0
    for url in urls:
        async with http.stream("GET", url, headers=headers) as resp:
            if resp.status_code != 200:
                log.warning("logs.archive_gone", url=url, status=resp.status_code)
                continue
            async for line in resp.aiter_lines():
                yield f"id: archive-{n}\ndata: {json.dumps(line)}\n\n"
                n += 1
    yield "event: end\ndata: {}\n\n"


async def stream_objects(
    http: httpx.AsyncClient, urls: list[str], headers: dict[str, str]
) -> AsyncIterator[bytes]:
    for url in urls:
        async with http.stream("GET", url, headers=headers) as resp:
            if resp.status_code != 200:  # went between the HEAD and now
                log.warning("logs.archive_gone", url=url, status=resp.status_code)
                continue
            async for data in resp.aiter_bytes():
                yield data


async def follow(
    js: JetStreamContext,
    job_id: str,
    job_status: JobStatusFn,
    poll: float = 2.0,
    after: tuple[int, int] | None = None,
    attempt: int | None = None,
) -> AsyncIterator[str]:
    """SSE events, one per line, until the job has ended and its output is drained.

    Each line's event id is ``<stream seq>-<index>``, so a client that lost the connection
    sends the last id it saw (``Last-Event-ID``) and the stream resumes right after that line:
    nothing lost, nothing repeated (as long as the LOGS stream still holds the chunk).
    """
    sub = await _subscribe(js, job_id, after[0] if after else 0)
    closing = False  # an attempt's end was read and the job has ended
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
            if attempt is not None and chunk.attempt != attempt:
                continue
            seq = msg.metadata.sequence.stream
            skip = after[1] + 1 if after and seq == after[0] else 0
            for index, line in enumerate(shown(chunk)):
                if index >= skip:
                    yield f"id: {seq}-{index}\ndata: {json.dumps(line)}\n\n"
            if chunk.eof and not closing:
                closing = (await job_status()) in TERMINAL_STATES
            # a gang's other ranks may have written after this rank's end: drain them too
            if closing and not msg.metadata.num_pending:
                yield "event: end\ndata: {}\n\n"
                return
    except asyncio.CancelledError:  # the client went away
        raise
    finally:
        await sub.unsubscribe()
