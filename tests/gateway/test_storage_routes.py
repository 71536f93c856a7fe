"""Objects through the API gateway: the proxy keeps streaming, ranges, validators, checksums,
request ids and refusals; presigned URLs name the gateway and need no token there; a service
token (the scheduler's) presigns a job's objects for their owner."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid

import httpx
import pytest

from shared.contracts import log_key
from tests.support.storage import Gateway
from tests.support.wait import eventually_async

MiB = 1024 * 1024


async def test_objects_stream_both_ways_with_ranges_and_validators(gateway: Gateway) -> None:
    alice = gateway.via.user()
    body = os.urandom(3 * MiB + 123)  # far over the gateway's 64 KiB JSON body limit
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    sha = hashlib.sha256(body).hexdigest()
    put = await alice.put(
        "data/blob.bin",
        body,
        headers={"Content-MD5": md5, "x-checksum-sha256": sha, "Content-Type": "application/x-b"},
    )
    assert put.status_code == 201, put.text
    assert put.json()["size"] == len(body)

    got = await alice.get("data/blob.bin")
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["content-length"] == str(len(body))
    assert got.headers["content-type"] == "application/x-b"
    assert got.headers["etag"] == f'"{put.json()["etag"]}"'
    assert got.headers["accept-ranges"] == "bytes"
    # one of each, the gateway's own: the upstream's copies are not passed on
    assert len(got.headers.get_list("date")) == 1 and len(got.headers.get_list("server")) == 1

    part = await alice.get("data/blob.bin", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(body)}"
    assert part.content == body[1000:2000]

    beyond = await alice.get("data/blob.bin", headers={"Range": f"bytes={len(body)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(body)}"

    head = await alice.request("HEAD", "/objects/data/blob.bin")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(body))
    assert head.headers["etag"] == got.headers["etag"]


async def test_a_checksum_mismatch_through_the_gateway_keeps_the_old_object(
    gateway: Gateway,
) -> None:
    alice = gateway.via.user()
    assert (await alice.put("c.bin", b"first")).status_code == 201
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    bad = await alice.put("c.bin", b"second", headers={"Content-MD5": wrong})
    assert bad.status_code == 400
    assert bad.json()["error"] == "checksum_mismatch"
    assert (await alice.get("c.bin")).content == b"first"


async def test_a_chunked_upload_streams_through(gateway: Gateway) -> None:
    """No Content-Length: the gateway must pass the body on as it comes."""
    alice = gateway.via.user()
    blocks = [os.urandom(256 * 1024) for _ in range(6)]

    async def body():  # type: ignore[no-untyped-def]
        for block in blocks:
            yield block

    put = await alice.put("chunked.bin", body())
    assert put.status_code == 201, put.text
    assert (await alice.get("chunked.bin")).content == b"".join(blocks)


async def test_presigned_urls_name_the_gateway_and_need_no_token(gateway: Gateway) -> None:
    alice = gateway.via.user()
    key = "results/out.bin"
    presign = await alice.request("POST", "/presign", json={"key": key, "method": "PUT"})
    assert presign.status_code == 200, presign.text
    put_url = presign.json()["url"]
    assert put_url.startswith(gateway.url + "/api/v1/storage/presigned/")

    async with httpx.AsyncClient(timeout=30) as anonymous:
        put = await anonymous.put(put_url, content=b"made by a job")
        assert put.status_code == 200, put.text
        get_url = (await alice.request("POST", "/presign", json={"key": key})).json()["url"]
        assert get_url.startswith(gateway.url)
        got = await anonymous.get(get_url)
        assert got.status_code == 200
        assert got.content == b"made by a job"
        ranged = await anonymous.get(get_url, headers={"Range": "bytes=5-6"})
        assert ranged.status_code == 206
        assert ranged.content == b"by"
        # The signature is the authorisation: a PUT URL does not read, a forged one does nothing.
        assert (await anonymous.get(put_url)).status_code == 403
        forged = get_url.replace("signature=", "signature=A")
        assert (await anonymous.get(forged)).json()["error"] == "presign_invalid"
        # Anything else under /api/v1/storage still needs a token.
        listing = await anonymous.get(f"{gateway.url}/api/v1/storage/objects")
        assert listing.status_code == 401
    assert (await alice.get(key)).content == b"made by a job"


async def test_a_service_token_presigns_a_jobs_objects_for_their_owner(
    gateway: Gateway,
) -> None:
    alice = gateway.via.user()
    assert (await alice.put("inputs/data.csv", b"a,b\n1,2\n")).status_code == 201
    scheduler = gateway.via.mint("service", "service:scheduler")
    job_id = str(uuid.uuid4())
    request = {
        "inputs": ["inputs/data.csv"],
        "outputs": ["outputs/model.bin", log_key(job_id, 1)],
        "owner": alice.user_id,
        "expires_in": 3600,
    }
    auth = {"Authorization": f"Bearer {scheduler}"}
    resp = await gateway.client.post("/api/v1/storage/presign/batch", json=request, headers=auth)
    assert resp.status_code == 200, resp.text
    urls = resp.json()
    assert urls["owner"] == alice.user_id
    assert set(urls["inputs"]) == {"inputs/data.csv"}
    assert set(urls["outputs"]) == {"outputs/model.bin", f"jobs/{job_id}/attempt-1.log"}

    async with httpx.AsyncClient(timeout=30) as daemon:  # holds URLs, no token
        assert (await daemon.get(urls["inputs"]["inputs/data.csv"])).content == b"a,b\n1,2\n"
        log_url = urls["outputs"][f"jobs/{job_id}/attempt-1.log"]
        assert (await daemon.put(log_url, content=b"hello\n")).status_code == 200
    # Landed in alice's namespace, where alice reads it with her own token.
    assert (await alice.get(f"jobs/{job_id}/attempt-1.log")).content == b"hello\n"

    missing = {**request, "inputs": ["inputs/nope.csv"]}
    resp = await gateway.client.post("/api/v1/storage/presign/batch", json=missing, headers=auth)
    assert resp.status_code == 404
    # A requester still cannot name another owner.
    bob = gateway.via.user()
    resp = await bob.request("POST", "/presign/batch", json=request)
    assert resp.status_code == 403


@pytest.mark.parametrize(
    "forged",
    [{"x-user-id": "someone"}, {"x-user-role": "admin"}, {"x-provider-id": "p-1"}],
    ids=["user", "role", "provider"],
)
async def test_identity_headers_never_reach_upstream(
    gateway: Gateway, forged: dict[str, str]
) -> None:
    user = gateway.via.user()
    headers = {**user.auth, **forged, "x-request-id": "req-abc-123"}
    resp = await gateway.client.get("/api/v1/providers/echo", headers=headers)
    assert resp.status_code == 200, resp.text
    seen = resp.json()["headers"]
    assert not set(forged) & set(seen)
    assert seen["x-request-id"] == "req-abc-123"
    assert seen["authorization"] == user.auth["Authorization"]
    assert resp.headers["x-request-id"] == "req-abc-123"
    assert resp.headers.get_list("x-request-id") == ["req-abc-123"]


async def test_a_json_body_over_the_limit_is_413_and_never_forwarded(gateway: Gateway) -> None:
    user = gateway.via.user()
    small = await gateway.client.post(
        "/api/v1/providers/echo", content=b"x" * 1000, headers=user.auth
    )
    assert small.json()["size"] == 1000

    async def chunked():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 10_000

    for content in (b"x" * 100_000, chunked()):
        resp = await gateway.client.post(
            "/api/v1/providers/echo", content=content, headers=user.auth
        )
        assert resp.status_code == 413
        assert resp.json()["error"] == "payload_too_large"


async def test_a_slow_upstream_is_504(gateway: Gateway) -> None:
    user = gateway.via.user()
    resp = await gateway.client.get("/api/v1/providers/slow", headers=user.auth)
    assert resp.status_code == 504
    assert resp.json()["error"] == "upstream_timeout"
    assert resp.headers["x-request-id"]
    posted = await gateway.client.post("/api/v1/providers/slow", content=b"{}", headers=user.auth)
    assert posted.status_code == 504


async def test_an_upload_longer_than_the_upstream_timeout_completes(gateway: Gateway) -> None:
    """The gateway's 1 s upstream timeout counts from the end of the body, not its start."""
    alice = gateway.via.user()
    blocks = [os.urandom(64 * 1024) for _ in range(5)]

    async def trickle():  # type: ignore[no-untyped-def]
        for block in blocks:
            await asyncio.sleep(0.4)
            yield block

    put = await alice.put("slow.bin", trickle())
    assert put.status_code == 201, put.text

    async def stored() -> bytes | None:  # the read back has the same 1 s bound: on a loaded
        got = await alice.get("slow.bin")  # machine it may time out, and is tried again
        return got.content if got.status_code == 200 else None

    assert await eventually_async(stored, what="the object read back") == b"".join(blocks)


async def test_no_upstream_is_503(gateway: Gateway) -> None:
    user = gateway.via.user()
    resp = await gateway.client.get("/api/v1/jobs", headers=user.auth)
    assert resp.status_code == 503
    assert resp.json()["error"] == "service_unavailable"
