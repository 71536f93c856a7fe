"""Storage's domain errors; each renders through shared.errors as ``{"error": code, ...}``."""

from __future__ import annotations

from shared.errors import BadRequest, Conflict, DanteError, Forbidden, NotFound, PayloadTooLarge


class InvalidKey(BadRequest):
    code = "invalid_key"


class InvalidBucketName(BadRequest):
    code = "invalid_bucket_name"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


class BadChecksumHeader(BadRequest):
    code = "invalid_checksum_header"


class ChecksumMismatch(BadRequest):
    code = "checksum_mismatch"


class ObjectTooLarge(PayloadTooLarge):
    code = "object_too_large"


class ObjectNotFound(NotFound):
    code = "object_not_found"

    def __init__(self, message: str = "no such object") -> None:
        super().__init__(message)


class BucketNotFound(NotFound):
    code = "bucket_not_found"

    def __init__(self, message: str = "no such bucket") -> None:
        super().__init__(message)


class BucketExists(Conflict):
    code = "bucket_exists"


class BucketNotEmpty(Conflict):
    code = "bucket_not_empty"


class RangeNotSatisfiable(DanteError):
    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(
            f"range not satisfiable for an object of {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )


class PresignRefused(Forbidden):
    """A presigned URL whose signature does not match, or which has expired."""

    code = "presign_invalid"


class PresignExpired(Forbidden):
    code = "presign_expired"


class BackendUnavailable(DanteError):
    status_code = 503
    code = "storage_backend_unavailable"
