"""Ops endpoints, settings, the S3 server's signature checks, and key rules as properties."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from minio import Minio
from minio.error import S3Error

from storage_service.backends.s3 import S3Backend
from storage_service.errors import BackendUnavailable, InvalidKey
from storage_service.keys import Namespace, validate_key
from storage_service.main import create_app
from storage_service.settings import StorageSettings
from tests.support.asgi import served
from tests.support.storage import S3Server, Storage, storage_settings


async def test_health_ready_metrics(storage: Storage) -> None:
    health = await storage.client.get("/health")
    assert health.json() == {"status": "ok", "service": "storage"}
    ready = await storage.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"backend": "ok"}
    metrics = await storage.client.get("/metrics")
    assert "dante_http_requests_total" in metrics.text
    assert "dante_storage_object_bytes_total" in metrics.text


async def test_s3_server_refuses_a_wrong_secret(s3_server: S3Server) -> None:
    wrong = Minio(
        s3_server.endpoint, s3_server.access_key, "not-the-secret", secure=False, region="us-east-1"
    )
    with pytest.raises(S3Error) as err:
        wrong.list_buckets()
    assert err.value.code in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId")
    anonymous = Minio(s3_server.endpoint, secure=False, region="us-east-1")
    with pytest.raises(S3Error):
        anonymous.list_objects("dante").__next__()


async def test_s3_backend_with_wrong_secret_is_not_ready(
    s3_server: S3Server, tmp_path: Path
) -> None:
    settings = storage_settings("s3", tmp_path, s3_server, s3_secret_key="not-the-secret")
    backend = S3Backend(settings)
    try:
        with pytest.raises(BackendUnavailable):
            await backend.ping()
    finally:
        await backend.close()
    app = create_app(settings)
    with pytest.raises(BackendUnavailable):
        async with served(app):
            pass


async def test_unreachable_s3_fails_start(tmp_path: Path) -> None:
    from tests.support.servers import free_port

    settings = StorageSettings(
        backend="s3",
        s3_endpoint=f"127.0.0.1:{free_port()}",
        startup_wait_seconds=0,
        root_dir=tmp_path,
    )
    with pytest.raises(BackendUnavailable):
        async with served(create_app(settings)):
            pass


def test_settings_defaults_and_prod_refusals() -> None:
    s = StorageSettings()
    assert (s.service_name, s.port, s.backend, s.default_bucket) == (
        "storage",
        8082,
        "local",
        "dante",
    )
    assert s.max_object_size == 5 * 1024**3
    with pytest.raises(ValueError, match="PRESIGN_SECRET"):
        StorageSettings(environment="prod")
    StorageSettings(environment="prod", presign_secret="s" * 32)  # local: no S3 secret needed
    with pytest.raises(ValueError, match="S3_SECRET_KEY"):
        StorageSettings(environment="prod", presign_secret="s" * 32, backend="s3")
    StorageSettings(
        environment="prod", presign_secret="s" * 32, backend="s3", s3_secret_key="k" * 20
    )


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DANTE_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("DANTE_STORAGE_S3_ENDPOINT", "minio:9000")
    monkeypatch.setenv("DANTE_STORAGE_MAX_OBJECT_SIZE", "1024")
    s = StorageSettings()
    assert (s.backend, s.s3_endpoint, s.max_object_size) == ("s3", "minio:9000", 1024)


@hsettings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
    | st.sampled_from(
        [
            "..",
            "../x",
            "a/../b",
            "./a",
            "a/.",
            "\uff0e\uff0e/x",
            "a\\b",
            "/a",
            "a//b",
            "%2e%2e",
            "\u2025/a",
        ]
    )
)
def test_no_accepted_key_leaves_its_namespace(key: str) -> None:
    ns = Namespace.of_user("u-1")
    try:
        full = ns.full_key(key)
    except InvalidKey:
        return
    # Every spelling that passes stays under the prefix, however a consumer normalises it.
    for form in (full, __import__("unicodedata").normalize("NFKC", full)):
        assert posixpath.normpath(form).startswith("users/u-1/")
        assert ".." not in form.split("/")
        assert "\\" not in form and "\x00" not in form
    assert validate_key(key) == key


def test_local_backend_sweeps_stale_partial_uploads(tmp_path: Path) -> None:
    import os

    from storage_service.backends.local import LocalBackend

    LocalBackend(tmp_path)
    stale, fresh = tmp_path / ".tmp" / "stale", tmp_path / ".tmp" / "fresh"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in flight")
    os.utime(stale, (0, 0))
    LocalBackend(tmp_path)
    assert not stale.exists()
    assert fresh.exists()
