"""MinIO or any S3 through the ``minio`` SDK.

The SDK is synchronous, so every call runs on this backend's own thread pool (a stalled S3
cannot starve the loop's default executor). Uploads cross back into the loop for each block
the SDK reads; downloads read the HTTP response a chunk at a time. Neither ever holds more
than one multipart part (``s3_part_size``) of an object.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import urllib3
from minio import Minio
from minio.error import S3Error

from storage_service.backends.base import CHUNK, BucketInfo, ObjectInfo
from storage_service.errors import (
    BackendUnavailable,
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    ObjectNotFound,
)
from storage_service.settings import StorageSettings

T = TypeVar("T")

_NOT_FOUND_BUCKET = {"NoSuchBucket"}
_S3_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_NOT_FOUND_OBJECT = {"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NotFound"}


def _from_code(code: str | None, bucket: str | None) -> Exception:
    if code in _NOT_FOUND_BUCKET:
        return BucketNotFound()
    if code in _NOT_FOUND_OBJECT:
        return ObjectNotFound()
    if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        return BucketExists(f"bucket {bucket!r} exists")
    if code == "BucketNotEmpty":
        return BucketNotEmpty(f"bucket {bucket!r} is not empty")
    return BackendUnavailable(f"S3 refused the request: {code}")


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, S3Error):
        return _from_code(exc.code, exc.bucket_name)
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return BackendUnavailable(f"S3 unreachable: {type(exc).__name__}")
    return exc


class _BodyReader:
    """A blocking ``read(n)`` for the SDK's thread over the async upload stream."""

    def __init__(self, data: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._it = aiter(data)
        self._loop = loop
        self._left = b""
        self._done = False

    async def _gather(self, n: int) -> bytes:
        # Collect exactly n bytes (or what is left) in one hop and join them once: the SDK
        # then builds its part from one bytes object instead of growing it chunk by chunk,
        # and only the block that straddles the boundary is split.
        parts = [self._left] if self._left else []
        have = len(self._left)
        self._left = b""
        while have < n and not self._done:
            try:
                block = await anext(self._it)
            except StopAsyncIteration:
                self._done = True
                break
            if have + len(block) > n:
                cut = n - have
                block, self._left = block[:cut], block[cut:]
            parts.append(block)
            have += len(block)
        return b"".join(parts)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        if self._done and not self._left:
            return b""
        return asyncio.run_coroutine_threadsafe(self._gather(n), self._loop).result()


class S3Backend:
    name = "s3"

    def __init__(self, settings: StorageSettings) -> None:
        self._settings = settings
        kwargs: dict[str, Any] = {
            "access_key": settings.s3_access_key,
            "secret_key": settings.s3_secret_key,
            "secure": settings.s3_secure,
            "region": settings.s3_region,  # known region: presigning needs no network call
        }
        self._upload_slots = asyncio.Semaphore(settings.s3_max_uploads)
        self._pool = ThreadPoolExecutor(settings.s3_threads, thread_name_prefix="s3")
        http = urllib3.PoolManager(
            num_pools=4,
            maxsize=settings.s3_threads,
            timeout=urllib3.Timeout(connect=5, read=300),
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._client = Minio(settings.s3_endpoint, http_client=http, **kwargs)
        # Streamed single PUTs (``_put_streamed``); built here, in the app's lifespan.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(300, connect=5))
        # Signatures cover the Host header, so URLs for clients elsewhere are signed for the
        # host they will use.
        self._signer = (
            Minio(settings.s3_public_endpoint, **kwargs)
            if settings.s3_public_endpoint
            else self._client
        )

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc) from exc

    async def ping(self) -> None:
        await self._run(self._client.bucket_exists, self._settings.default_bucket)

    async def close(self) -> None:
        await self._http.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def bucket_exists(self, bucket: str) -> bool:
        return await self._run(self._client.bucket_exists, bucket)

    async def ensure_bucket(self, bucket: str) -> None:
        if not await self._run(self._client.bucket_exists, bucket):
            with contextlib.suppress(BucketExists):  # another instance made it meanwhile
                await self._run(self._client.make_bucket, bucket)

    async def list_buckets(self) -> list[BucketInfo]:
        buckets = await self._run(self._client.list_buckets)
        return sorted((BucketInfo(b.name, b.creation_date) for b in buckets), key=lambda b: b.name)

    async def create_bucket(self, bucket: str) -> None:
        if await self._run(self._client.bucket_exists, bucket):
            raise BucketExists(f"bucket {bucket!r} exists")
        await self._run(self._client.make_bucket, bucket)

    async def delete_bucket(self, bucket: str) -> None:
        if not await self._run(self._client.bucket_exists, bucket):
            raise BucketNotFound()
        objects, _ = await self.list(bucket, "", "", 1)
        if objects:  # some S3 servers delete non-empty buckets when configured to; we never do
            raise BucketNotEmpty(f"bucket {bucket!r} is not empty")
        await self._run(self._client.remove_bucket, bucket)

    async def put(
        self,
        bucket: str,
        key: str,
        data: AsyncIterable[bytes],
        *,
        content_type: str,
        content_length: int | None = None,
    ) -> ObjectInfo:
        if content_length is not None and content_length <= self._settings.s3_single_put_max:
            return await self._put_streamed(bucket, key, data, content_type, content_length)
        async with self._upload_slots:
            return await self._put(bucket, key, data, content_type=content_type)

    async def _put_streamed(
        self, bucket: str, key: str, data: AsyncIterable[bytes], content_type: str, length: int
    ) -> ObjectInfo:
        """One PUT, the body streamed from the request as it arrives (declared length only).

        Measured against the SDK's multipart upload (docs/storage.md): the SDK copies every
        part about three times and, over plain HTTP, hashes it for the signature, which S3
        hashes again to check. A presigned PUT (unsigned payload, as a client would send
        directly) costs both processes less and holds one block, not parts. The stream holds
        its last block back until its checksums are verified, so a failing body is never
        complete and S3 drops it.
        """
        url = self._client.presigned_put_object(bucket, key, expires=timedelta(minutes=15))
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        try:
            resp = await self._http.put(url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"S3 unreachable: {type(exc).__name__}") from exc
        if resp.status_code >= 300:
            found = _S3_CODE.search(resp.text)
            raise _from_code(found.group(1) if found else f"HTTP {resp.status_code}", bucket)
        return await self.stat(bucket, key)

    async def _put(
        self, bucket: str, key: str, data: AsyncIterable[bytes], *, content_type: str
    ) -> ObjectInfo:
        reader = _BodyReader(data, asyncio.get_running_loop())
        # length=-1: the SDK reads to the end of the stream before it sends the last part, so
        # an error raised at the end (size, checksum) aborts the upload instead of committing.
        await self._run(
            self._client.put_object,
            bucket,
            key,
            reader,
            length=-1,
            part_size=self._settings.s3_part_size,
            num_parallel_uploads=self._settings.s3_parallel_uploads,
            content_type=content_type,
        )
        return await self.stat(bucket, key)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        st = await self._run(self._client.stat_object, bucket, key)
        if st.is_delete_marker:
            raise ObjectNotFound()
        return ObjectInfo(
            key,
            st.size or 0,
            (st.etag or "").strip('"'),
            st.last_modified or datetime.now(UTC),
            st.content_type or "application/octet-stream",
        )

    async def open(self, bucket: str, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            await self.stat(bucket, key)
            return _empty()
        resp = await self._run(self._client.get_object, bucket, key, offset=offset, length=length)
        return self._stream(resp)

    async def _stream(self, resp: Any) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            while True:
                chunk = await loop.run_in_executor(self._pool, resp.read, CHUNK)
                if not chunk:
                    break
                yield chunk
        finally:
            resp.close()
            resp.release_conn()

    async def delete(self, bucket: str, key: str) -> None:
        await self.stat(bucket, key)  # S3 deletes are silent about absent keys; we are not
        await self._run(self._client.remove_object, bucket, key)

    async def list(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> tuple[list[ObjectInfo], bool]:
        def collect() -> list[Any]:
            it = self._client.list_objects(
                bucket, prefix=prefix or None, recursive=True, start_after=start_after or None
            )
            return list(itertools.islice(it, limit + 1))

        found = await self._run(collect)
        objects = [
            ObjectInfo(
                o.object_name,
                o.size or 0,
                (o.etag or "").strip('"'),
                o.last_modified or datetime.now(UTC),
            )
            for o in found[:limit]
        ]
        return objects, len(found) > limit

    def presign(self, method: str, bucket: str, key: str, expires_in: int) -> str | None:
        if self._settings.presign_via == "service":
            return None
        expires = timedelta(seconds=expires_in)
        if method == "PUT":
            return self._signer.presigned_put_object(bucket, key, expires=expires)
        return self._signer.presigned_get_object(bucket, key, expires=expires)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield
