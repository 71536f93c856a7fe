"""A job's inputs, outputs and whole log, moved through presigned URLs (the daemon holds no
storage token: each URL allows one method on one key, until it expires)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
import structlog

from shared.contracts import TaskObject
from shared.loops import Backoff, retry

log = structlog.get_logger(__name__)

CHUNK = 1 << 20
# A blip in the gateway must not cost a finished job its results: four tries, 1 s doubling
# to 4 s between them (± half). A 4xx answer will not get better and is not retried.
ATTEMPTS = 4
BACKOFF = Backoff(base=0.5, cap=5.0, jitter=0.5)


@dataclass
class Stored:
    """What ``store_outputs`` did: keys stored, outputs that failed, the log's failure."""

    keys: list[str]
    errors: list[str]
    log_error: str | None = None


class TransferFailed(Exception):
    """An input could not be fetched, or an output could not be stored."""


def local_path(root: Path, key: str) -> Path:
    """``root/key``, refusing a key that would step outside ``root`` (the gateway validates keys
    too; the daemon does not rely on it)."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise TransferFailed(f"unsafe object key {key!r}")
    return root.joinpath(*parts)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk


def _client_error(exc: BaseException) -> bool:
    return isinstance(exc, TransferFailed) and "HTTP 4" in str(exc)


async def _retrying(what: str, once: Callable[[], Awaitable[None]]) -> None:
    try:
        await retry(
            "transfer",
            once,
            attempts=ATTEMPTS,
            backoff=BACKOFF,
            retry_on=(httpx.TransportError, TransferFailed),
            give_up=_client_error,
        )
    except (httpx.TransportError, TransferFailed) as exc:
        raise TransferFailed(f"{what}: {exc}") from exc


class Transfers:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def download(self, obj: TaskObject, root: Path) -> Path:
        dest = local_path(root, obj.key)
        dest.parent.mkdir(parents=True, exist_ok=True)

        async def once() -> None:
            async with self.http.stream("GET", obj.url) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise TransferFailed(f"HTTP {resp.status_code} {resp.text[:200]}")
                with dest.open("wb") as fh:
                    async for chunk in resp.aiter_bytes(CHUNK):
                        fh.write(chunk)

        await _retrying(f"input {obj.key}", once)
        return dest

    async def upload(self, obj: TaskObject, path: Path) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size

        async def once() -> None:
            resp = await self.http.put(
                obj.url,
                content=_file_chunks(path),
                headers={"content-length": str(size)},
            )
            if resp.status_code >= 300:
                raise TransferFailed(f"HTTP {resp.status_code} {resp.text[:200]}")

        await _retrying(f"output {obj.key}", once)

    async def fetch_inputs(self, inputs: list[TaskObject], root: Path) -> None:
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        for obj in inputs:
            await self.download(obj, root)

    async def store_outputs(
        self, outputs: list[TaskObject], root: Path, log_upload: TaskObject | None, logfile: Path
    ) -> Stored:
        """Upload each output the job wrote, then the whole log. An output the job did not
        write is not an error of the daemon's; a log that could not be stored is apart
        (``log_error``): it does not change the job's outcome."""
        stored: list[str] = []
        errors: list[str] = []
        for obj in outputs:
            try:
                path = local_path(root, obj.key)
                if not path.is_file():
                    log.info("output.missing", key=obj.key)
                    continue
                await self.upload(obj, path)
                stored.append(obj.key)
            except TransferFailed as exc:
                errors.append(str(exc))
        log_error = None
        if log_upload is not None and await asyncio.to_thread(logfile.exists):
            try:
                await self.upload(log_upload, logfile)
                stored.append(log_upload.key)
            except TransferFailed as exc:
                log_error = str(exc)
        return Stored(stored, errors, log_error)
