"""The one small interface both backends implement, with the same behaviour."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

CHUNK = 1024 * 1024  # download chunk: one thread hop per MiB


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # the full stored key
    size: int
    etag: str
    last_modified: datetime
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created_at: datetime | None


class Backend(Protocol):
    name: str

    async def ping(self) -> None:
        """Raise if the backend cannot serve requests (the /ready check)."""

    async def close(self) -> None: ...

    async def bucket_exists(self, bucket: str) -> bool: ...

    async def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists."""

    async def list_buckets(self) -> list[BucketInfo]: ...

    async def create_bucket(self, bucket: str) -> None:
        """Create ``bucket``; ``BucketExists`` if it does."""

    async def delete_bucket(self, bucket: str) -> None:
        """``BucketNotFound`` if absent, ``BucketNotEmpty`` if it holds objects."""

    async def put(
        self,
        bucket: str,
        key: str,
        data: AsyncIterable[bytes],
        *,
        content_type: str,
        content_length: int | None = None,
    ) -> ObjectInfo:
        """Store what ``data`` yields; the object appears only if ``data`` ends without error.
        ``content_length``, when the client declared it, is exactly what ``data`` yields."""

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """``ObjectNotFound`` / ``BucketNotFound`` when absent."""

    async def open(self, bucket: str, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes from ``offset``, in chunks of at most ``CHUNK``."""

    async def delete(self, bucket: str, key: str) -> None: ...

    async def list(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> tuple[list[ObjectInfo], bool]:
        """Up to ``limit`` objects under ``prefix`` after ``start_after`` in UTF-8 byte order,
        and whether more follow."""

    def presign(self, method: str, bucket: str, key: str, expires_in: int) -> str | None:
        """A URL the backend itself honours, or ``None`` when this service must sign it."""
