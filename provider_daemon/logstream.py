"""Output lines → ``jobs.logs.<job_id>``, in order, batched, with back-pressure.

A chunk that cannot be published after its tries is not dropped: it is appended to a spool
file beside the work dir (``<job>-<attempt>.logspool``, one chunk per line), counted, and sent
again from disk, first by the stream itself (before its next chunk, at most every
``SPOOL_RETRY_SECONDS``) and after the job by the daemon's ``log_spool`` loop
(:func:`resend_spooled`), also after a daemon restart. Every chunk keeps its ``Nats-Msg-Id``
(job:attempt:seq, with the rank for a gang's rank > 0), so a chunk sent twice is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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

SPOOL_SUFFIX = ".logspool"
SPOOL_RETRY_SECONDS = 10.0

chunks_spooled = Counter(
    "dante_daemon_log_chunks_spooled_total",
    "Log chunks written to the spool on disk after every publish failed (sent again later).",
)
lines_spooled = Counter(
    "dante_daemon_log_lines_spooled_total", "Output lines in the log chunks spooled to disk."
)
chunks_resent = Counter(
    "dante_daemon_log_chunks_resent_total", "Spooled log chunks published from disk."
)


def spool_path(work_root: Path, job_id: str, attempt: int) -> Path:
    return work_root / f"{job_id}-{attempt}{SPOOL_SUFFIX}"


def _chunk_id(chunk: LogChunk) -> str:
    """The chunk's ``Nats-Msg-Id``: a gang's ranks count their chunks apart, so rank > 0 is
    in the id (else JetStream would drop its chunks as repeats of rank 0's)."""
    rank = f"r{chunk.rank}:" if chunk.rank else ""
    return f"{chunk.job_id}:{chunk.attempt}:{rank}{chunk.seq}"


async def resend_spool(js: JetStreamContext, path: Path) -> int:
    """Publish every chunk in one spool file, in order, then delete it; a failure leaves the
    file (all of it: chunks already sent are dropped as duplicates next time)."""
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    chunks = [LogChunk.model_validate_json(line) for line in text.splitlines() if line.strip()]
    for chunk in chunks:
        await publish(js, log_subject(chunk.job_id), chunk, msg_id=_chunk_id(chunk))
    await asyncio.to_thread(path.unlink, missing_ok=True)
    chunks_resent.inc(len(chunks))
    if chunks:
        log.info("log_spool.resent", file=path.name, chunks=len(chunks))
    return len(chunks)


async def resend_spooled(js: JetStreamContext, work_root: Path, busy: set[Path]) -> None:
    """The daemon's ``log_spool`` loop: every spool file not held by a running stream. Raises
    the first failure (the loop backs off and says so) after trying the rest."""
    failed: Exception | None = None
    spools = await asyncio.to_thread(lambda: sorted(work_root.glob(f"*{SPOOL_SUFFIX}")))
    for path in spools:
        if path in busy:
            continue
        try:
            await resend_spool(js, path)
        except Exception as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


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
        spool: Path | None = None,
        busy: set[Path] | None = None,
        rank: int = 0,
    ) -> None:
        self.js = js
        self.rank = rank
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
        self.spool = spool or logfile.with_name(logfile.stem + SPOOL_SUFFIX)
        # while this stream writes its spool, the daemon's loop leaves the file alone
        self._busy = busy if busy is not None else set()
        self._next_resend = 0.0  # monotonic time of the next try of a non-empty spool

    async def __aenter__(self) -> LogStream:
        self._busy.add(self.spool)
        self._task = asyncio.create_task(self._publisher())
        if self.attempt > 1:  # a rerun's lines must not read as more of the earlier attempt's
            await self.line(f"=== attempt {self.attempt} ===")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.queue.put(None)
            if self._task is not None:
                await self._task
            try:
                self._file.close()
            except OSError as exc:  # the run already failed on it (tasks.py reports why)
                log.error("logfile.close_failed", job_id=self.job_id, error=str(exc))
        finally:
            self._busy.discard(self.spool)  # what is left is the daemon's loop's to send

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
            job_id=self.job_id,
            attempt=self.attempt,
            seq=self._seq,
            lines=lines,
            eof=eof,
            rank=self.rank,
        )

        async def send() -> None:
            await publish(
                self.js,
                log_subject(self.job_id),
                chunk,
                msg_id=_chunk_id(chunk),
                correlation_id=self.correlation_id,
            )

        if self.spool.exists() and not await self._resend():
            self._to_spool(chunk)  # behind what is already waiting there, in order
            return
        try:
            await retry("log_chunk", send, attempts=self.attempts, backoff=SEND_BACKOFF)
        except Exception as exc:
            # Live followers miss these lines for now; the spool sends them when NATS is back.
            self._to_spool(chunk, str(exc) or type(exc).__name__)

    async def _resend(self) -> bool:
        """One try to send the spool (not more often than every ``SPOOL_RETRY_SECONDS``, so
        a NATS outage does not hold the job's output); True once it is empty."""
        if time.monotonic() < self._next_resend:
            return False
        try:
            await resend_spool(self.js, self.spool)
        except Exception as exc:
            self._next_resend = time.monotonic() + SPOOL_RETRY_SECONDS
            log.warning("log_spool.resend_failed", job_id=self.job_id, error=str(exc))
            return False
        return True

    def _to_spool(self, chunk: LogChunk, error: str | None = None) -> None:
        with self.spool.open("a", encoding="utf-8") as fh:
            fh.write(chunk.model_dump_json() + "\n")
        self._next_resend = max(self._next_resend, time.monotonic() + SPOOL_RETRY_SECONDS)
        chunks_spooled.inc()
        lines_spooled.inc(len(chunk.lines))
        if error is not None:
            log.error(
                "log_chunk.spooled",
                job_id=self.job_id,
                attempt=self.attempt,
                seq=chunk.seq,
                lines=len(chunk.lines),
                eof=chunk.eof,
                error=error,
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
