"""Objects as files under one root directory: the embedded default, no server needed.

Layout: ``<root>/<bucket>/<seg>.d/.../<last>.o``. The suffixes keep an object ``a`` and an
object ``a/b`` apart (S3 allows both; a file system cannot have ``a`` as file and directory).
Each file holds the object's bytes followed by a small trailer (JSON metadata, its length, a
magic), so content and metadata are replaced together by one atomic rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import struct
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from storage_service.backends.base import CHUNK, BucketInfo, ObjectInfo
from storage_service.errors import (
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    InvalidKey,
    ObjectNotFound,
)

MAGIC = b"DNT1"
FOOTER = struct.Struct(">I4s")  # metadata length, magic


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


class LocalBackend:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._tmp = self.root / ".tmp"  # same file system as the objects, so rename is atomic
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(exist_ok=True)
        self._sweep_tmp()

    def _sweep_tmp(self, older_than: float = 24 * 3600) -> None:
        """Drop uploads a crashed process left half-written (a day old: surely not in flight,
        even with another instance on the same root)."""
        cutoff = time.time() - older_than
        for entry in os.scandir(self._tmp):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    # --- paths --------------------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        return self.root / bucket

    def _segments(self, key: str) -> list[str]:
        parts = key.split("/")
        if any(p in ("", ".", "..") or os.sep in p or "\0" in p for p in parts):
            raise InvalidKey("key is not a relative path")  # keys.py refuses these first
        return parts

    def _path(self, bucket: str, key: str) -> Path:
        parts = self._segments(key)
        return self._bucket_dir(bucket).joinpath(*(p + ".d" for p in parts[:-1]), parts[-1] + ".o")

    def _require_bucket(self, bucket: str) -> Path:
        path = self._bucket_dir(bucket)
        if not path.is_dir():
            raise BucketNotFound()
        return path

    # --- health and buckets -------------------------------------------------------------------

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self.root, os.W_OK):
            raise OSError(f"{self.root} is not writable")

    async def close(self) -> None:
        return None

    async def bucket_exists(self, bucket: str) -> bool:
        return await asyncio.to_thread(self._bucket_dir(bucket).is_dir)

    async def ensure_bucket(self, bucket: str) -> None:
        await asyncio.to_thread(self._bucket_dir(bucket).mkdir, exist_ok=True)

    async def list_buckets(self) -> list[BucketInfo]:
        def scan() -> list[BucketInfo]:
            return sorted(
                (
                    BucketInfo(e.name, _mtime(e.stat()))
                    for e in os.scandir(self.root)
                    if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
                ),
                key=lambda b: b.name,
            )

        return await asyncio.to_thread(scan)

    async def create_bucket(self, bucket: str) -> None:
        try:
            await asyncio.to_thread(self._bucket_dir(bucket).mkdir)
        except FileExistsError as exc:
            raise BucketExists(f"bucket {bucket!r} exists") from exc

    async def delete_bucket(self, bucket: str) -> None:
        def remove() -> None:
            path = self._require_bucket(bucket)
            if any(path.iterdir()):
                raise BucketNotEmpty(f"bucket {bucket!r} is not empty")
            path.rmdir()

        await asyncio.to_thread(remove)

    # --- objects ------------------------------------------------------------------------------

    async def put(
        self,
        bucket: str,
        key: str,
        data: AsyncIterable[bytes],
        *,
        content_type: str,
        content_length: int | None = None,
    ) -> ObjectInfo:
        target = self._path(bucket, key)
        await asyncio.to_thread(self._require_bucket, bucket)
        tmp = self._tmp / uuid.uuid4().hex
        f: BinaryIO = await asyncio.to_thread(open, tmp, "wb")
        md5 = hashlib.md5(usedforsecurity=False)

        def write(block: bytes) -> None:
            f.write(block)
            md5.update(block)

        try:
            size = 0
            async for block in data:
                await asyncio.to_thread(write, block)
                size += len(block)
            etag = md5.hexdigest()
            meta = json.dumps({"content_type": content_type, "etag": etag}).encode()
            st = await asyncio.to_thread(self._commit, f, tmp, target, meta)
        except BaseException:
            # Synchronous on purpose: this also runs when the request is cancelled.
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        return ObjectInfo(key, size, etag, _mtime(st), content_type)

    def _commit(self, f: BinaryIO, tmp: Path, target: Path, meta: bytes) -> os.stat_result:
        f.write(meta)
        f.write(FOOTER.pack(len(meta), MAGIC))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        for attempt in itertools.count():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, target)
                break
            except FileNotFoundError:  # a delete pruned the directory meanwhile; make it again
                if attempt >= 3:
                    raise
        return target.stat()

    @staticmethod
    def _read_meta(f: BinaryIO, file_size: int) -> tuple[int, dict]:
        """The object's data size and metadata, from the trailer of an open file."""
        if file_size < FOOTER.size:
            raise ObjectNotFound("object is damaged")
        f.seek(file_size - FOOTER.size)
        meta_len, magic = FOOTER.unpack(f.read(FOOTER.size))
        data_size = file_size - FOOTER.size - meta_len
        if magic != MAGIC or data_size < 0:
            raise ObjectNotFound("object is damaged")
        f.seek(data_size)
        return data_size, json.loads(f.read(meta_len))

    def _stat_sync(self, bucket: str, key: str) -> ObjectInfo:
        path = self._path(bucket, key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                size, meta = self._read_meta(f, st.st_size)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._require_bucket(bucket)
            raise ObjectNotFound() from None
        return ObjectInfo(key, size, meta["etag"], _mtime(st), meta["content_type"])

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._stat_sync, bucket, key)

    async def open(self, bucket: str, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        path = self._path(bucket, key)

        def start() -> tuple[BinaryIO, int]:
            try:
                f = open(path, "rb")  # noqa: SIM115 - handed to the stream, which closes it
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectNotFound() from None
            try:
                # Re-read the trailer from this open file: the object may have been replaced
                # since it was stat'ed, and we must never stream trailer bytes as data.
                size, _ = self._read_meta(f, os.fstat(f.fileno()).st_size)
                f.seek(offset)
            except BaseException:
                f.close()
                raise
            return f, max(0, min(length, size - offset))

        f, remaining = await asyncio.to_thread(start)
        return self._stream(f, remaining)

    async def _stream(self, f: BinaryIO, remaining: int) -> AsyncIterator[bytes]:
        try:
            while remaining > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def delete(self, bucket: str, key: str) -> None:
        def remove() -> None:
            self._stat_sync(bucket, key)
            path = self._path(bucket, key)
            path.unlink(missing_ok=True)
            stop = self._bucket_dir(bucket)
            parent = path.parent
            while parent != stop:  # prune directories the object leaves empty
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

        await asyncio.to_thread(remove)

    async def list(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> tuple[list[ObjectInfo], bool]:
        def collect() -> tuple[list[ObjectInfo], bool]:
            base = self._require_bucket(bucket)
            head, _, _ = prefix.rpartition("/")
            start_dir, logical = base, ""
            if head:
                start_dir = base.joinpath(*(p + ".d" for p in self._segments(head)))
                logical = head + "/"
            found: list[ObjectInfo] = []
            walker = self._walk(start_dir, logical, prefix, start_after)
            with contextlib.closing(walker):
                for key, _path in itertools.islice(walker, limit + 1):
                    with contextlib.suppress(ObjectNotFound):  # deleted while we walked
                        found.append(self._stat_sync(bucket, key))
            return found[:limit], len(found) > limit

        return await asyncio.to_thread(collect)

    def _walk(
        self, directory: Path, logical: str, prefix: str, start_after: str
    ) -> Generator[tuple[str, Path]]:
        """Keys under ``directory`` in UTF-8 byte order (= code point order of ``str``).

        Entries sort by the key text they stand for (``seg/`` for a directory), which puts a
        directory's whole subtree where its keys belong among its siblings.
        """
        try:
            with os.scandir(directory) as it:
                entries = []
                for e in it:
                    if e.name.endswith(".d") and e.is_dir(follow_symlinks=False):
                        entries.append((logical + e.name[:-2] + "/", Path(e.path), True))
                    elif e.name.endswith(".o") and e.is_file(follow_symlinks=False):
                        entries.append((logical + e.name[:-2], Path(e.path), False))
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda entry: entry[0])
        for key, path, is_dir in entries:
            if is_dir:
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if start_after >= key and not start_after.startswith(key):
                    continue  # every key below sorts before the cursor
                yield from self._walk(path, key, prefix, start_after)
            elif key.startswith(prefix) and key > start_after:
                yield key, path

    def presign(self, method: str, bucket: str, key: str, expires_in: int) -> str | None:
        return None  # this service signs and serves local objects itself
