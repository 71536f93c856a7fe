from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_PORTS, ServiceSettings

DEV_PRESIGN_SECRET = "dante-dev-presign-secret"
DEV_S3_SECRET_KEY = "minioadmin"  # MinIO's well-known default, as the compose file uses

GiB = 1024**3
MiB = 1024**2


class StorageSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_STORAGE_", extra="ignore")

    service_name: str = "storage"
    port: int = DEFAULT_PORTS["storage"]

    backend: Literal["local", "s3"] = "local"
    root_dir: Path = Path(".dev/objects")

    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = DEV_S3_SECRET_KEY
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # host[:port] that presigned S3 URLs point at, when clients reach S3 by another name than
    # this service does (compose: "minio:9000" inside, "localhost:9000" outside).
    s3_public_endpoint: str | None = None
    # The SDK copies a part about three times while it reads and sends it, and keeps
    # ``s3_parallel_uploads`` parts in flight: measured, an upload costs the process ~48 MiB
    # at 5 MiB x 2 and ~87 MiB at 16 MiB x 1 (docs/storage.md). 5 MiB is S3's minimum part;
    # a 5 GiB object is then 1,024 parts (S3 allows 10,000).
    s3_part_size: int = Field(default=5 * MiB, ge=5 * MiB)
    s3_parallel_uploads: int = Field(default=2, ge=1, le=8)
    # Uploads to S3 at once per process; more wait. Bounds memory at ~48 MiB per slot.
    s3_max_uploads: int = Field(default=4, ge=1)
    # An upload that declares its length up to this size goes to S3 as one streamed PUT
    # (S3's single-PUT limit is 5 GiB); larger or chunked ones as multipart. 0: always
    # multipart.
    s3_single_put_max: int = Field(default=5 * GiB, ge=0, le=5 * GiB)
    s3_threads: int = Field(default=32, ge=2)

    default_bucket: str = "dante"
    max_object_size: int = Field(default=5 * GiB, ge=0)
    list_max_keys: int = Field(default=1000, ge=1, le=1000)

    presign_secret: str = DEV_PRESIGN_SECRET
    # "backend": S3 signs its own URLs (clients talk to S3 directly); "service": this service
    # signs and serves them (for when S3 is not reachable from where the URLs are used).
    # The local-disk backend always uses "service".
    presign_via: Literal["backend", "service"] = "backend"
    presign_max_seconds: int = Field(default=7 * 24 * 3600, ge=1, le=7 * 24 * 3600)
    # Base URL service-signed URLs start with (the gateway's public address); when unset, the
    # base URL of the request that asked for them.
    public_url: str | None = None

    # Seconds to keep retrying the backend at start (MinIO may come up after us in compose).
    startup_wait_seconds: float = 30.0

    @property
    def secret_defaults(self) -> dict[str, object]:  # type: ignore[override]
        """The S3 secret only matters, and is only refused at its default, with the S3 backend."""
        refused: dict[str, object] = {"presign_secret": DEV_PRESIGN_SECRET}
        if self.backend == "s3":
            refused["s3_secret_key"] = DEV_S3_SECRET_KEY
        return refused
