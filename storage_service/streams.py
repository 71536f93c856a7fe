"""The upload stream both backends consume: re-chunked, size-capped, checksum-verified.

Backends write what this yields and commit (rename, complete the multipart upload) only after
it ends, so an object that is too large or fails its checksum never becomes visible: the error
is raised where the end of the stream would have been.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from storage_service.errors import BadChecksumHeader, ChecksumMismatch, ObjectTooLarge

# Writes and hashes go to a thread per block; 1 MiB blocks keep that to ~1,000 hops per GiB
# and an upload's memory to a few blocks.
BLOCK = 1024 * 1024


@dataclass(frozen=True)
class ExpectedChecksums:
    md5: bytes | None = None
    sha256: bytes | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> ExpectedChecksums:
        """``Content-MD5`` (base64, RFC 1864) and ``x-checksum-sha256`` (hex or base64)."""
        md5 = sha256 = None
        if (value := headers.get("content-md5")) is not None:
            md5 = _b64(value, 16, "Content-MD5")
        for name in ("x-checksum-sha256", "x-amz-checksum-sha256"):
            if (value := headers.get(name)) is not None:
                value = value.strip()
                if len(value) == 64:
                    try:
                        sha256 = bytes.fromhex(value)
                    except ValueError as exc:
                        raise BadChecksumHeader(f"{name} is not hex or base64") from exc
                else:
                    sha256 = _b64(value, 32, name)
        return cls(md5, sha256)

    @property
    def any(self) -> bool:
        return self.md5 is not None or self.sha256 is not None


def _b64(value: str, size: int, name: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadChecksumHeader(f"{name} is not valid base64") from exc
    if len(raw) != size:
        raise BadChecksumHeader(f"{name} must encode {size} bytes")
    return raw


class VerifiedStream:
    """Wrap a request body: yield ``BLOCK``-sized blocks, refuse more than ``limit`` bytes,
    and check the expected digests when the body ends."""

    def __init__(
        self, body: AsyncIterator[bytes], *, limit: int, expected: ExpectedChecksums
    ) -> None:
        self._body = body
        self._limit = limit
        self._expected = expected
        self._md5 = hashlib.md5(usedforsecurity=False) if expected.md5 is not None else None
        self._sha256 = hashlib.sha256() if expected.sha256 is not None else None
        self.size = 0

    def _hash(self, block: bytes) -> None:
        # hashlib drops the GIL for large inputs, so this runs beside the event loop.
        if self._md5 is not None:
            self._md5.update(block)
        if self._sha256 is not None:
            self._sha256.update(block)

    def _verify(self) -> None:
        for name, hasher, want in (
            ("md5", self._md5, self._expected.md5),
            ("sha256", self._sha256, self._expected.sha256),
        ):
            if (
                hasher is not None
                and want is not None
                and not hmac.compare_digest(hasher.digest(), want)
            ):
                raise ChecksumMismatch(f"the body's {name} does not match the one sent")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = bytearray()
        hashing = self._md5 is not None or self._sha256 is not None
        async for chunk in self._body:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self._limit:
                raise ObjectTooLarge(f"objects are at most {self._limit} bytes")
            buffer += chunk
            # Strictly more than a block: the last bytes are held back until the digests are
            # checked, so a backend streaming to S3 in one PUT never sends a complete body
            # that fails its checksum (S3 would commit it).
            while len(buffer) > BLOCK:
                block = bytes(buffer[:BLOCK])
                del buffer[:BLOCK]
                if hashing:
                    await asyncio.to_thread(self._hash, block)
                yield block
        block = bytes(buffer)
        if hashing:
            await asyncio.to_thread(self._hash, block)
        self._verify()
        if block:
            yield block
