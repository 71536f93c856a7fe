"""Output lines → ``jobs.logs.<job_id>``, in order, batched, with back-pressure."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from nats.js import JetStreamContext

from shared.contracts import LogChunk
from shared.nats import publish

MAX_LINES = 200
MAX_BYTES = 64 * 1024


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
    ) -> None:
        self.js = js
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
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.put(None)
        if self._task is not None:
            await self._task
        self._file.close()

    async def line(self, text: str) -> None:
        self._file.write(text + "\n")
        await self.queue.put(text)

    async def _send(self, lines: list[str], eof: bool = False) -> None:
        self._seq += 1
        chunk = LogChunk(
            job_id=self.job_id, attempt=self.attempt, seq=self._seq, lines=lines, eof=eof
        )
        for delay in (0.2, 0.5, 1, 2, 5):
            try:
                await publish(
                    self.js,
                    f"jobs.logs.{self.job_id}",
                    chunk,
                    msg_id=f"{self.job_id}:{self.attempt}:{self._seq}",
                    correlation_id=self.correlation_id,
                )
                return
            except Exception:
                await asyncio.sleep(delay)

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
