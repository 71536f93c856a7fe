"""Output lines → ``jobs.logs.<job_id>``, in order, batched, with back-pressure."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter

from shared.contracts import LOG_TRUNCATED, LogChunk, log_key, log_subject
from shared.loops import Backoff, retry
from shared.nats import publish

log = structlog.get_logger(__name__)

MAX_LINES = 200
MAX_BYTES = 64 * 1024
LIVE_MAX_BYTES = 32 << 20
"""What one attempt may put on the LOGS stream (shared by every job, docs/nats.md); past it the
live log says so and stops, the log file (uploaded at the end) keeps everything."""
# Between tries: 0.5 s doubling to 5 s (six tries take about 10 s; longer holds the job's pipe).
SEND_BACKOFF = Backoff(base=0.25, cap=5.0, jitter=0.5)

chunks_dropped = Counter(
    "dante_daemon_log_chunks_dropped_total",
    "Log chunks given up on after every publish failed (the whole log is still uploaded).",
)
lines_dropped = Counter(
    "dante_daemon_log_lines_dropped_total", "Output lines in the log chunks given up on."
)


class LogStream:
    """A bounded queue drained by one publisher: when NATS is slow the process's pipe fills and
    the process waits, instead of the daemon's memory growing. Every line also goes to a file
    in the work dir, the whole log kept for upload at the end."""

    def __init__(
        self,
        js: JetStreamContext,
        job_id: str,
        attempt: int,
        logfile: Path,
        flush: float = 0.1,
        correlation_id: str | None = None,
        attempts: int = 6,
        live_max_bytes: int = LIVE_MAX_BYTES,
    ) -> None:
        self.js = js
        self.live_left = live_max_bytes
        self.live_max_bytes = live_max_bytes
        self.attempts = attempts
        self.job_id = job_id
        self.attempt = attempt
        self.flush = flush
        self.correlation_id = correlation_id
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=10_000)
        self._seq = 0
        self._file = logfile.open("a", encoding="utf-8")
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LogStream:
        self._task = asyncio.create_task(self._publisher())
        if self.attempt > 1:  # a rerun's lines must not read as more of the earlier attempt's
            await self.line(f"=== attempt {self.attempt} ===")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.put(None)
        if self._task is not None:
            await self._task
        self._file.close()

    async def line(self, text: str) -> None:
        self._file.write(text + "\n")
        if self.live_left <= 0:
            return  # past the live cap: the file keeps it
        self.live_left -= len(text.encode()) + 1
        if self.live_left <= 0:
            text = (
                f"{LOG_TRUNCATED}: the live log of attempt {self.attempt} stops here, at "
                f"{self.live_max_bytes >> 20} MiB; the whole log is archived as "
                f"{log_key(self.job_id, self.attempt)} when the attempt ends and served "
                "by GET /api/v1/jobs/{id}/logs then]"
            )
            log.info("log.live_truncated", job_id=self.job_id, attempt=self.attempt)
        await self.queue.put(text)

    async def _send(self, lines: list[str], eof: bool = False) -> None:
        self._seq += 1
        chunk = LogChunk(
            job_id=self.job_id, attempt=self.attempt, seq=self._seq, lines=lines, eof=eof
        )

        async def send() -> None:
            await publish(
                self.js,
                log_subject(self.job_id),
                chunk,
                msg_id=f"{self.job_id}:{self.attempt}:{self._seq}",
                correlation_id=self.correlation_id,
            )

        try:
            await retry("log_chunk", send, attempts=self.attempts, backoff=SEND_BACKOFF)
        except Exception as exc:
            # Live followers miss these lines; the log file keeps them for the upload at the end.
            chunks_dropped.inc()
            lines_dropped.inc(len(lines))
            log.error(
                "log_chunk.dropped",
                job_id=self.job_id,
                attempt=self.attempt,
                seq=self._seq,
                lines=len(lines),
                eof=eof,
                error=str(exc) or type(exc).__name__,
            )

    async def _publisher(self) -> None:
        done = False
        while not done:
            first = await self.queue.get()
            if first is None:
                break
            batch, size = [first], len(first)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush):
                    while len(batch) < MAX_LINES and size < MAX_BYTES:
                        item = await self.queue.get()
                        if item is None:
                            done = True
                            break
                        batch.append(item)
                        size += len(item)
            await self._send(batch)
        await self._send([], eof=True)
