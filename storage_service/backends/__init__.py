"""Storage backends: local disk (the embedded default) and S3 through the minio SDK."""

from __future__ import annotations

from storage_service.backends.base import Backend, BucketInfo, ObjectInfo
from storage_service.settings import StorageSettings

__all__ = ["Backend", "BucketInfo", "ObjectInfo", "make_backend"]


def make_backend(settings: StorageSettings) -> Backend:
    if settings.backend == "s3":
        from storage_service.backends.s3 import S3Backend

        return S3Backend(settings)
    from storage_service.backends.local import LocalBackend

    return LocalBackend(settings.root_dir)
