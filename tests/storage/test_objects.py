"""Object contract: the same behaviour from both backends."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

from tests.support.storage import MAX_OBJECT, Storage

MiB = 1024 * 1024


async def generated(total: int, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    """Deterministic bytes, produced as sent (never the whole body in memory)."""
    sent = 0
    counter = 0
    while sent < total:
        block = hashlib.sha256(counter.to_bytes(8, "big")).digest() * (chunk // 32)
        block = block[: total - sent]
        counter += 1
        sent += len(block)
        yield block


async def digest_of(total: int) -> str:
    h = hashlib.sha256()
    async for block in generated(total):
        h.update(block)
    return h.hexdigest()


async def test_put_get_roundtrip_keeps_content_type(storage: Storage) -> None:
    alice = storage.user()
    put = await alice.put("docs/hello.txt", b"hello world", headers={"Content-Type": "text/plain"})
    assert put.status_code == 201, put.text
    body = put.json()
    assert body["key"] == "docs/hello.txt"
    assert body["size"] == 11
    assert body["owner"] == alice.user_id
    assert body["bucket"] == "dante"
    got = await alice.get("docs/hello.txt")
    assert got.status_code == 200
    assert got.content == b"hello world"
    assert got.headers["content-type"].startswith("text/plain")
    assert got.headers["content-length"] == "11"
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["etag"] == f'"{body["etag"]}"'
    assert got.headers["x-content-type-options"] == "nosniff"


async def test_default_content_type_and_empty_object(storage: Storage) -> None:
    alice = storage.user()
    put = await alice.request("PUT", "/objects/empty")
    assert put.status_code == 201, put.text
    got = await alice.get("empty")
    assert got.status_code == 200
    assert got.content == b""
    assert got.headers["content-type"] == "application/octet-stream"


async def test_invalid_content_type_refused(storage: Storage) -> None:
    alice = storage.user()
    put = await alice.put("x", b"1", headers={"Content-Type": "text/plain\x7f"})
    assert put.status_code == 400
    assert put.json()["error"] == "bad_request"


async def test_head_returns_metadata_without_body(storage: Storage) -> None:
    alice = storage.user()
    await alice.put("a.bin", b"12345", headers={"Content-Type": "application/x-thing"})
    head = await alice.request("HEAD", "/objects/a.bin")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "5"
    assert head.headers["content-type"] == "application/x-thing"
    assert "last-modified" in head.headers
    missing = await alice.request("HEAD", "/objects/nope.bin")
    assert missing.status_code == 404


async def test_overwrite_replaces_content(storage: Storage) -> None:
    alice = storage.user()
    await alice.put("v", b"one")
    await alice.put("v", b"second")
    assert (await alice.get("v")).content == b"second"


async def test_delete_then_gone(storage: Storage) -> None:
    alice = storage.user()
    await alice.put("tmp/x", b"x")
    deleted = await alice.request("DELETE", "/objects/tmp/x")
    assert deleted.status_code == 204
    got = await alice.get("tmp/x")
    assert got.status_code == 404
    assert got.json()["error"] == "object_not_found"
    again = await alice.request("DELETE", "/objects/tmp/x")
    assert again.status_code == 404


async def test_key_and_longer_key_coexist(storage: Storage) -> None:
    """S3 allows ``a`` and ``a/b`` side by side; the local layout must too."""
    alice = storage.user()
    assert (await alice.put("a", b"file")).status_code == 201
    assert (await alice.put("a/b", b"nested")).status_code == 201
    assert (await alice.get("a")).content == b"file"
    assert (await alice.get("a/b")).content == b"nested"
    await alice.request("DELETE", "/objects/a/b")
    assert (await alice.get("a")).content == b"file"


async def test_unicode_key_roundtrip(storage: Storage) -> None:
    alice = storage.user()
    key = "données/日本語 file+name (1).txt"
    assert (await alice.put(key, b"u")).status_code == 201
    assert (await alice.get(key)).content == b"u"
    listed = await alice.request("GET", "/objects", params={"prefix": "données/"})
    assert [o["key"] for o in listed.json()["objects"]] == [key]


async def test_streamed_upload_multipart_with_checksum(storage: Storage) -> None:
    """11 MiB, chunked (no Content-Length), crosses S3's 5 MiB part size: multipart path."""
    alice = storage.user()
    size = 11 * MiB
    want = await digest_of(size)
    put = await alice.put("big/blob", generated(size), headers={"x-checksum-sha256": want})
    assert put.status_code == 201, put.text
    assert put.json()["size"] == size
    h = hashlib.sha256()
    async with storage.client.stream(
        "GET", "/api/v1/storage/objects/big/blob", headers=alice.auth
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(size)
        async for chunk in resp.aiter_bytes():
            h.update(chunk)
    assert h.hexdigest() == want


async def test_content_md5_verified(storage: Storage) -> None:
    alice = storage.user()
    data = b"checked payload"
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    put = await alice.put("md5ok", data, headers={"Content-MD5": good})
    assert put.status_code == 201
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    put = await alice.put("md5bad", data, headers={"Content-MD5": bad})
    assert put.status_code == 400
    assert put.json()["error"] == "checksum_mismatch"
    assert (await alice.get("md5bad")).status_code == 404


async def test_checksum_mismatch_keeps_previous_version(storage: Storage) -> None:
    alice = storage.user()
    await alice.put("keep", b"original")
    wrong = hashlib.sha256(b"not the body").hexdigest()
    put = await alice.put("keep", b"replacement", headers={"x-checksum-sha256": wrong})
    assert put.status_code == 400
    assert put.json()["error"] == "checksum_mismatch"
    assert (await alice.get("keep")).content == b"original"


async def test_checksum_mismatch_on_multipart_aborts(storage: Storage) -> None:
    alice = storage.user()
    wrong = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    put = await alice.put("mp-bad", generated(7 * MiB), headers={"x-checksum-sha256": wrong})
    assert put.status_code == 400
    assert (await alice.get("mp-bad")).status_code == 404


async def test_malformed_checksum_header_refused(storage: Storage) -> None:
    alice = storage.user()
    for headers in ({"Content-MD5": "not base64!"}, {"x-checksum-sha256": "abc"}):
        put = await alice.put("x", b"1", headers=headers)
        assert put.status_code == 400
        assert put.json()["error"] == "invalid_checksum_header"


async def test_size_cap_declared_length(storage: Storage) -> None:
    alice = storage.user()
    put = await alice.put("huge", b"x", headers={"Content-Length": str(MAX_OBJECT + 1)})
    assert put.status_code == 413
    assert put.json()["error"] == "object_too_large"


async def test_size_cap_streamed_body(storage: Storage) -> None:
    alice = storage.user()
    put = await alice.put("huge", generated(MAX_OBJECT + 1))
    assert put.status_code == 413
    assert put.json()["error"] == "object_too_large"
    assert (await alice.get("huge")).status_code == 404
    exact = await alice.put("exact", generated(MAX_OBJECT))
    assert exact.status_code == 201
    assert exact.json()["size"] == MAX_OBJECT


async def test_declared_length_upload_with_checksum(storage: Storage) -> None:
    """Content-Length declared (S3: one streamed PUT), a whole number of 1 MiB blocks."""
    alice = storage.user()
    body = b"".join([block async for block in generated(3 * MiB)])
    want = hashlib.sha256(body).hexdigest()
    put = await alice.put("declared", body, headers={"x-checksum-sha256": want})
    assert put.status_code == 201, put.text
    assert put.json()["size"] == len(body)
    got = await alice.get("declared")
    assert got.content == body
    assert got.headers["etag"] == f'"{put.json()["etag"]}"'


async def test_declared_length_mismatch_never_commits(storage: Storage) -> None:
    """The failing body is a whole number of blocks, so only the held-back last block keeps a
    streamed PUT from completing before the digest is checked."""
    alice = storage.user()
    await alice.put("blocks", b"original")
    body = b"".join([block async for block in generated(2 * MiB)])
    for headers in (
        {"x-checksum-sha256": hashlib.sha256(b"other").hexdigest()},
        {"Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()},
    ):
        put = await alice.put("blocks", body, headers=headers)
        assert put.status_code == 400
        assert put.json()["error"] == "checksum_mismatch"
        assert (await alice.get("blocks")).content == b"original"
        fresh = await alice.put("blocks-new", body, headers=headers)
        assert fresh.status_code == 400
        assert (await alice.get("blocks-new")).status_code == 404
