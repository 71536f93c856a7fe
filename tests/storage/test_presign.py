"""Presigned URLs: usable without a token, for exactly one object and method, until expiry."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from shared.app import own_state
from storage_service.state import State
from tests.support.storage import BASE_URL, MAX_OBJECT, Storage


async def fetch(storage: Storage, method: str, url: str, **kwargs: object) -> httpx.Response:
    """No Authorization header: service-signed URLs go to the app in-process, S3 URLs to S3."""
    if url.startswith(BASE_URL):
        return await storage.client.request(method, url, **kwargs)  # type: ignore[arg-type]
    async with httpx.AsyncClient(timeout=30) as plain:
        return await plain.request(method, url, **kwargs)  # type: ignore[arg-type]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def tamper_signature(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    name = "X-Amz-Signature" if "X-Amz-Signature" in query else "signature"
    sig = query[name]
    query[name] = ("0" if sig[0] != "0" else "1") + sig[1:]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_presigned_get_needs_no_token(storage: Storage) -> None:
    alice = storage.user()
    await alice.put("share/data.bin", b"0123456789", headers={"Content-Type": "application/x-d"})
    resp = await alice.request("POST", "/presign", json={"key": "share/data.bin", "method": "GET"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["method"] == "GET"
    assert body["key"] == "share/data.bin"
    got = await fetch(storage, "GET", body["url"])
    assert got.status_code == 200
    assert got.content == b"0123456789"
    ranged = await fetch(storage, "GET", body["url"], headers={"Range": "bytes=2-4"})
    assert ranged.status_code == 206
    assert ranged.content == b"234"


async def test_presigned_put_needs_no_token(storage: Storage) -> None:
    alice = storage.user()
    resp = await alice.request(
        "POST", "/presign", json={"key": "results/out.txt", "method": "PUT", "expires_in": 600}
    )
    assert resp.status_code == 200, resp.text
    url = resp.json()["url"]
    put = await fetch(
        storage, "PUT", url, content=b"result!", headers={"Content-Type": "text/plain"}
    )
    assert put.status_code == 200, put.text
    got = await alice.get("results/out.txt")
    assert got.content == b"result!"
    assert got.headers["content-type"].startswith("text/plain")


async def test_tampered_presigned_urls_refused(storage: Storage) -> None:
    alice, bob = storage.user(), storage.user()
    await alice.put("mine.txt", b"alice")
    await bob.put("mine.txt", b"bob")
    url = (await alice.request("POST", "/presign", json={"key": "mine.txt"})).json()["url"]
    bad_sig = await fetch(storage, "GET", tamper_signature(url))
    assert bad_sig.status_code == 403
    other_key = url.replace(alice.user_id, bob.user_id)
    assert (await fetch(storage, "GET", other_key)).status_code == 403
    wrong_method = await fetch(storage, "PUT", url, content=b"overwrite")
    assert wrong_method.status_code in (403, 405)
    assert (await alice.get("mine.txt")).content == b"alice"
    if url.startswith(BASE_URL):  # our own refusals are JSON
        assert bad_sig.json()["error"] == "presign_invalid"
        later = with_query(url, expires=str(int(time.time()) + 10**6))
        assert (await fetch(storage, "GET", later)).json()["error"] == "presign_invalid"


def service_signed(storage: Storage, method: str, full_key: str, expires: int) -> str:
    signer = own_state(storage.app, State).storage.signer
    return signer.url(BASE_URL, method, "dante", full_key, expires)


async def test_service_signed_url_expired_or_unsigned_refused(storage: Storage) -> None:
    """The service-signed form works on both backends (``presign_via=service``)."""
    alice = storage.user()
    await alice.put("old.txt", b"old")
    full = f"users/{alice.user_id}/old.txt"
    fresh = service_signed(storage, "GET", full, int(time.time()) + 300)
    assert (await fetch(storage, "GET", fresh)).content == b"old"
    expired = service_signed(storage, "GET", full, int(time.time()) - 1)
    resp = await fetch(storage, "GET", expired)
    assert resp.status_code == 403
    assert resp.json()["error"] == "presign_expired"
    bare = fresh.split("?")[0]
    resp = await fetch(storage, "GET", bare)
    assert resp.status_code == 403
    assert resp.json()["error"] == "presign_invalid"


async def test_service_signed_put_enforces_cap_and_checksum(storage: Storage) -> None:
    alice = storage.user()
    full = f"users/{alice.user_id}/upload.bin"
    url = service_signed(storage, "PUT", full, int(time.time()) + 300)
    too_big = await fetch(
        storage, "PUT", url, content=b"x", headers={"Content-Length": str(MAX_OBJECT + 1)}
    )
    assert too_big.status_code == 413
    wrong = hashlib.sha256(b"other").hexdigest()
    mismatch = await fetch(
        storage, "PUT", url, content=b"data", headers={"x-checksum-sha256": wrong}
    )
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "checksum_mismatch"
    right = hashlib.sha256(b"data").hexdigest()
    ok = await fetch(storage, "PUT", url, content=b"data", headers={"x-checksum-sha256": right})
    assert ok.status_code == 200
    assert (await alice.get("upload.bin")).content == b"data"


async def test_presign_get_of_missing_object_is_404(storage: Storage) -> None:
    alice = storage.user()
    resp = await alice.request("POST", "/presign", json={"key": "nothing-here"})
    assert resp.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"key": "k", "method": "DELETE"},
        {"key": "k", "expires_in": 0},
        {"key": "k", "expires_in": 8 * 24 * 3600},
        {"method": "GET"},
    ],
)
async def test_presign_request_validated(storage: Storage, body: dict) -> None:
    alice = storage.user()
    resp = await alice.request("POST", "/presign", json=body)
    assert resp.status_code == 422
    assert resp.json()["error"] == "validation_error"


async def test_batch_presigns_exactly_a_jobs_inputs_and_outputs(storage: Storage) -> None:
    alice = storage.user()
    await alice.put("data/train.csv", b"x,y\n1,2\n")
    resp = await alice.request(
        "POST",
        "/presign/batch",
        json={"inputs": ["data/train.csv"], "outputs": ["runs/1/model.bin", "runs/1/log.txt"]},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body["inputs"]) == {"data/train.csv"}
    assert set(body["outputs"]) == {"runs/1/model.bin", "runs/1/log.txt"}
    # The daemon side: no token, only these URLs.
    got = await fetch(storage, "GET", body["inputs"]["data/train.csv"])
    assert got.content == b"x,y\n1,2\n"
    put = await fetch(storage, "PUT", body["outputs"]["runs/1/model.bin"], content=b"weights")
    assert put.status_code == 200
    assert (await alice.get("runs/1/model.bin")).content == b"weights"
    # An output URL does not read, and an input URL does not write.
    assert (await fetch(storage, "GET", body["outputs"]["runs/1/log.txt"])).status_code in (
        403,
        404,
        405,
    )
    overwrite = await fetch(storage, "PUT", body["inputs"]["data/train.csv"], content=b"evil")
    assert overwrite.status_code in (403, 405)
    assert (await alice.get("data/train.csv")).content == b"x,y\n1,2\n"


async def test_batch_owner_rules(storage: Storage) -> None:
    alice, bob, admin = storage.user(), storage.user(), storage.user("admin")
    await alice.put("in.txt", b"in")
    refused = await bob.request(
        "POST", "/presign/batch", json={"inputs": ["in.txt"], "owner": alice.user_id}
    )
    assert refused.status_code == 403
    missing = await alice.request("POST", "/presign/batch", json={"inputs": ["absent.txt"]})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no such input: absent.txt"  # the job's error names it
    traversal = await alice.request("POST", "/presign/batch", json={"outputs": ["../../x"]})
    assert traversal.status_code == 400
    ok = await admin.request(
        "POST", "/presign/batch", json={"inputs": ["in.txt"], "owner": alice.user_id}
    )
    assert ok.status_code == 200
    assert ok.json()["owner"] == alice.user_id
    assert (await fetch(storage, "GET", ok.json()["inputs"]["in.txt"])).content == b"in"
