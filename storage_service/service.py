"""Decisions: whose namespace a request acts in, which bucket, what is allowed, what is signed."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter

from shared.auth import Principal
from shared.errors import Conflict, Forbidden
from storage_service.backends import Backend, ObjectInfo
from storage_service.errors import (
    BucketNotFound,
    InvalidCursor,
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
)
from storage_service.keys import ALL_NAMESPACES, Namespace, validate_bucket, validate_key
from storage_service.presign import PresignSigner
from storage_service.ranges import parse_range
from storage_service.schemas import (
    BucketOut,
    ObjectListOut,
    ObjectOut,
    PresignBatchOut,
    PresignOut,
)
from storage_service.settings import StorageSettings
from storage_service.streams import ExpectedChecksums, VerifiedStream

log = structlog.get_logger(__name__)

DEFAULT_CONTENT_TYPE = "application/octet-stream"

object_bytes = Counter(
    "dante_storage_object_bytes_total", "Object bytes stored (in) and served (out).", ["direction"]
)
object_refusals = Counter(
    "dante_storage_upload_refusals_total", "Uploads refused, by reason.", ["reason"]
)


@dataclass(frozen=True)
class Download:
    info: ObjectInfo
    range: tuple[int, int] | None  # inclusive byte range, or None for the whole object
    body: AsyncIterator[bytes]

    @property
    def length(self) -> int:
        return self.range[1] - self.range[0] + 1 if self.range else self.info.size


@dataclass(frozen=True)
class Scope:
    """One request's bucket and namespace."""

    bucket: str
    ns: Namespace


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        return validate_key(key)
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidKey) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc


class StorageService:
    def __init__(self, backend: Backend, settings: StorageSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.signer = PresignSigner(settings.presign_secret)

    # --- who and where ------------------------------------------------------------------------

    def scope(self, principal: Principal, bucket: str | None, owner: str | None) -> Scope:
        """A requester acts in its own namespace; an admin or a service (the scheduler
        presigning a job's objects for its owner) in any (``owner=<user id>``) or in the whole
        bucket (``owner=*``)."""
        name = validate_bucket(bucket) if bucket else self.settings.default_bucket
        if owner is None or owner == principal.user_id:
            return Scope(name, Namespace.of_user(principal.user_id))
        if not (principal.is_admin or principal.is_service):
            raise Forbidden("only an admin or a service may act in another user's namespace")
        if owner == ALL_NAMESPACES:
            return Scope(name, Namespace(ALL_NAMESPACES))
        return Scope(name, Namespace.of_user(owner))

    def _out(self, scope: Scope, info: ObjectInfo, *, with_type: bool = True) -> ObjectOut:
        return ObjectOut(
            key=scope.ns.relative(info.key),
            bucket=scope.bucket,
            owner=scope.ns.owner,
            size=info.size,
            etag=info.etag,
            last_modified=info.last_modified,
            content_type=info.content_type if with_type else None,
        )

    # --- objects ------------------------------------------------------------------------------

    async def put_object(
        self,
        scope: Scope,
        key: str,
        body: AsyncIterator[bytes],
        *,
        content_type: str | None,
        content_length: int | None,
        checksums: ExpectedChecksums,
    ) -> ObjectOut:
        full = scope.ns.full_key(key)
        return self._out(
            scope,
            await self._put(scope.bucket, full, body, content_type, content_length, checksums),
        )

    async def _put(
        self,
        bucket: str,
        full_key: str,
        body: AsyncIterator[bytes],
        content_type: str | None,
        content_length: int | None,
        checksums: ExpectedChecksums,
    ) -> ObjectInfo:
        limit = self.settings.max_object_size
        if content_length is not None and content_length > limit:
            raise ObjectTooLarge(f"objects are at most {limit} bytes")
        if bucket != self.settings.default_bucket:
            # Some S3 servers create a bucket on first write; only admins make buckets here.
            await self._require_bucket(bucket)
        stream = VerifiedStream(body, limit=limit, expected=checksums)
        try:
            info = await self.backend.put(
                bucket,
                full_key,
                stream,
                content_type=content_type or DEFAULT_CONTENT_TYPE,
                content_length=content_length,
            )
        except Exception as exc:
            reason = getattr(exc, "code", type(exc).__name__)
            object_refusals.labels(reason).inc()
            log.info("object.put_refused", bucket=bucket, key=full_key, reason=reason)
            raise
        object_bytes.labels("in").inc(info.size)
        log.info("object.stored", bucket=bucket, key=full_key, size=info.size)
        return info

    async def head_object(self, scope: Scope, key: str) -> ObjectInfo:
        return await self.backend.stat(scope.bucket, scope.ns.full_key(key))

    async def get_object(self, scope: Scope, key: str, range_header: str | None) -> Download:
        return await self._get(scope.bucket, scope.ns.full_key(key), range_header)

    async def _get(self, bucket: str, full_key: str, range_header: str | None) -> Download:
        info = await self.backend.stat(bucket, full_key)
        span = parse_range(range_header, info.size)
        offset, length = (span[0], span[1] - span[0] + 1) if span else (0, info.size)
        body = await self.backend.open(bucket, full_key, offset, length)
        object_bytes.labels("out").inc(length)
        return Download(info, span, body)

    async def delete_object(self, scope: Scope, key: str) -> None:
        full = scope.ns.full_key(key)
        await self.backend.delete(scope.bucket, full)
        log.info("object.deleted", bucket=scope.bucket, key=full)

    async def list_objects(
        self, scope: Scope, prefix: str, cursor: str | None, limit: int
    ) -> ObjectListOut:
        full_prefix = scope.ns.full_prefix(prefix)
        start_after = ""
        if cursor:
            start_after = scope.ns.prefix + decode_cursor(cursor)
        limit = max(1, min(limit, self.settings.list_max_keys))
        found, more = await self.backend.list(scope.bucket, full_prefix, start_after, limit)
        objects = [self._out(scope, o, with_type=False) for o in found]
        return ObjectListOut(
            bucket=scope.bucket,
            owner=scope.ns.owner,
            prefix=prefix,
            objects=objects,
            next_cursor=encode_cursor(objects[-1].key) if more and objects else None,
        )

    # --- presigned URLs -----------------------------------------------------------------------

    def _presign_url(
        self, method: str, bucket: str, full_key: str, expires_in: int, base_url: str
    ) -> str:
        url = self.backend.presign(method, bucket, full_key, expires_in)
        if url is None:
            expires = int(time.time()) + expires_in
            url = self.signer.url(
                self.settings.public_url or base_url, method, bucket, full_key, expires
            )
        return url

    def _expires_in(self, expires_in: int) -> int:
        return min(expires_in, self.settings.presign_max_seconds)

    async def presign(
        self, scope: Scope, key: str, method: str, expires_in: int, base_url: str
    ) -> PresignOut:
        full = scope.ns.full_key(key)
        if method == "GET":  # a URL for an object that is not there helps nobody
            await self.backend.stat(scope.bucket, full)
        else:
            await self._require_bucket(scope.bucket)
        expires_in = self._expires_in(expires_in)
        url = self._presign_url(method, scope.bucket, full, expires_in, base_url)
        log.info("object.presigned", bucket=scope.bucket, key=full, method=method, ttl=expires_in)
        return PresignOut(
            url=url,
            method=method,  # type: ignore[arg-type]
            key=key,
            bucket=scope.bucket,
            expires_at=datetime.fromtimestamp(time.time() + expires_in, UTC),
        )

    async def presign_job_io(
        self,
        scope: Scope,
        inputs: list[str],
        outputs: list[str],
        expires_in: int,
        base_url: str,
    ) -> PresignBatchOut:
        """GET URLs for exactly a job's inputs and PUT URLs for exactly its outputs.

        What the scheduler calls at dispatch; the daemon holding the URLs needs no token and
        can touch nothing else. Inputs must exist, so a job fails at submission, not on a GPU.
        """
        expires_in = self._expires_in(expires_in)
        await self._require_bucket(scope.bucket)
        ins: dict[str, str] = {}
        for key in inputs:
            full = scope.ns.full_key(key)
            try:
                await self.backend.stat(scope.bucket, full)
            except ObjectNotFound:
                raise ObjectNotFound(f"no such input: {key}") from None
            ins[key] = self._presign_url("GET", scope.bucket, full, expires_in, base_url)
        outs = {
            key: self._presign_url(
                "PUT", scope.bucket, scope.ns.full_key(key), expires_in, base_url
            )
            for key in outputs
        }
        log.info(
            "objects.presigned_batch",
            bucket=scope.bucket,
            owner=scope.ns.owner,
            inputs=len(ins),
            outputs=len(outs),
            ttl=expires_in,
        )
        return PresignBatchOut(
            bucket=scope.bucket,
            owner=scope.ns.owner,
            expires_at=datetime.fromtimestamp(time.time() + expires_in, UTC),
            inputs=ins,
            outputs=outs,
        )

    def check_presigned(
        self, method: str, bucket: str, full_key: str, expires: str | None, signature: str | None
    ) -> None:
        validate_bucket(bucket)
        self.signer.verify(method, bucket, full_key, expires, signature)
        # Signed keys were validated when signed; check again so a leaked secret is no
        # traversal either.
        validate_key(full_key)

    async def presigned_get(self, bucket: str, full_key: str, range_header: str | None) -> Download:
        return await self._get(bucket, full_key, range_header)

    async def presigned_put(
        self,
        bucket: str,
        full_key: str,
        body: AsyncIterator[bytes],
        *,
        content_type: str | None,
        content_length: int | None,
        checksums: ExpectedChecksums,
    ) -> ObjectInfo:
        return await self._put(bucket, full_key, body, content_type, content_length, checksums)

    # --- buckets (admin) ----------------------------------------------------------------------

    async def _require_bucket(self, bucket: str) -> None:
        if not await self.backend.bucket_exists(bucket):
            raise BucketNotFound()

    async def list_buckets(self) -> list[BucketOut]:
        return [
            BucketOut(
                name=b.name, created_at=b.created_at, default=b.name == self.settings.default_bucket
            )
            for b in await self.backend.list_buckets()
        ]

    async def create_bucket(self, name: str) -> BucketOut:
        await self.backend.create_bucket(validate_bucket(name))
        log.info("bucket.created", bucket=name)
        return BucketOut(name=name, created_at=datetime.now(UTC))

    async def delete_bucket(self, name: str) -> None:
        if validate_bucket(name) == self.settings.default_bucket:
            raise Conflict("the default bucket cannot be deleted")
        await self.backend.delete_bucket(name)
        log.info("bucket.deleted", bucket=name)
