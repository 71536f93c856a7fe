"""Namespaces, traversal, authentication and admin-only buckets, on both backends."""

from __future__ import annotations

import pytest

from tests.support.storage import Storage

# Raw request targets: percent-encoding here reaches the server as written (httpx would
# otherwise remove dot segments before sending).
TRAVERSALS = [
    "%2e%2e/escape",
    "a/%2e%2e/%2e%2e/escape",
    "a%2f..%2f..%2fescape",
    "/etc/passwd",  # /objects//etc/passwd: absolute
    "%2e",
    "a/%2e/b",
    "a//b",
    "a%5c..%5c..%5cescape",  # backslashes
    "a%00b",  # NUL
    "a%0ab",  # newline
    "%252e%252e/escape",  # double-encoded dots arrive as a literal "%2e%2e"
    "%EF%BC%8E%EF%BC%8E/escape",  # U+FF0E fullwidth dots fold to ".." under NFKC
    "x/%E2%80%A5/escape",  # U+2025 two-dot leader folds to ".."
    "a%EF%BC%8Fb",  # fullwidth solidus folds to "/"
    "e%CC%81",  # NFD "é": not in NFC form
    "a%E2%80%AEtxt.exe",  # right-to-left override
    "a%E2%80%8Bb",  # zero-width space
    "trailing/",
]


CONTROL = {"a%00b", "a%0ab"}


@pytest.mark.parametrize("raw", TRAVERSALS)
async def test_traversal_and_unicode_tricks_refused(storage: Storage, raw: str) -> None:
    alice = storage.user()
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        url = f"/api/v1/storage/objects/{raw}"
        resp = await storage.client.request(
            method, url, headers=alice.auth, content=b"x" if method == "PUT" else None
        )
        # a control character never reaches a route: every service refuses it in any path
        # (shared/input_guard.py, 422 validation_error); the rest is the key check's (400)
        status, code = (422, "validation_error") if raw in CONTROL else (400, "invalid_key")
        assert resp.status_code == status, (method, raw, resp.status_code)
        if method != "HEAD":
            assert resp.json()["error"] == code


async def test_presign_traversal_refused(storage: Storage) -> None:
    alice = storage.user()
    resp = await alice.request("POST", "/presign", json={"key": "../other/x", "method": "PUT"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_key"


async def test_overlong_key_refused(storage: Storage) -> None:
    alice = storage.user()
    assert (await alice.put("a" * 251, b"x")).status_code == 400
    assert (await alice.put("/".join(["abcdefgh"] * 120), b"x")).status_code == 400


async def test_requester_never_sees_another_users_objects(storage: Storage) -> None:
    alice, bob = storage.user(), storage.user()
    await alice.put("secret.txt", b"alice only")
    assert (await bob.get("secret.txt")).status_code == 404
    assert (await bob.request("HEAD", "/objects/secret.txt")).status_code == 404
    assert (await bob.request("DELETE", "/objects/secret.txt")).status_code == 404
    # Spelling out alice's stored key only names a key inside bob's own namespace.
    stored = f"users/{alice.user_id}/secret.txt"
    assert (await bob.get(stored)).status_code == 404
    listed = (await bob.request("GET", "/objects")).json()
    assert listed["objects"] == []
    assert listed["owner"] == bob.user_id
    # bob's write of the same key lands in his namespace, not over alice's object.
    await bob.put("secret.txt", b"bob's")
    assert (await alice.get("secret.txt")).content == b"alice only"


async def test_requester_cannot_pick_an_owner(storage: Storage) -> None:
    alice, bob = storage.user(), storage.user()
    await alice.put("x", b"x")
    resp = await bob.get("x", params={"owner": alice.user_id})
    assert resp.status_code == 403
    resp = await bob.request("GET", "/objects", params={"owner": "*"})
    assert resp.status_code == 403
    resp = await bob.request("POST", "/presign", json={"key": "x", "owner": alice.user_id})
    assert resp.status_code == 403
    # Naming oneself is allowed.
    assert (await alice.get("x", params={"owner": alice.user_id})).status_code == 200


async def test_admin_addresses_any_namespace(storage: Storage) -> None:
    alice, admin = storage.user(), storage.user("admin")
    await alice.put("report.csv", b"a,b")
    got = await admin.get("report.csv", params={"owner": alice.user_id})
    assert got.status_code == 200
    assert got.content == b"a,b"
    listed = (await admin.request("GET", "/objects", params={"owner": alice.user_id})).json()
    assert [o["key"] for o in listed["objects"]] == ["report.csv"]
    everything = await admin.request(
        "GET", "/objects", params={"owner": "*", "prefix": f"users/{alice.user_id}/"}
    )
    assert [o["key"] for o in everything.json()["objects"]] == [f"users/{alice.user_id}/report.csv"]
    put = await admin.put("from-admin.txt", b"hi", params={"owner": alice.user_id})
    assert put.status_code == 201
    assert (await alice.get("from-admin.txt")).content == b"hi"
    deleted = await admin.request(
        "DELETE", "/objects/from-admin.txt", params={"owner": alice.user_id}
    )
    assert deleted.status_code == 204
    bad_owner = await admin.get("x", params={"owner": "../etc"})
    assert bad_owner.status_code == 400


ROUTES = [
    ("PUT", "/api/v1/storage/objects/k"),
    ("GET", "/api/v1/storage/objects/k"),
    ("HEAD", "/api/v1/storage/objects/k"),
    ("DELETE", "/api/v1/storage/objects/k"),
    ("GET", "/api/v1/storage/objects"),
    ("POST", "/api/v1/storage/presign"),
    ("POST", "/api/v1/storage/presign/batch"),
    ("GET", "/api/v1/storage/buckets"),
    ("POST", "/api/v1/storage/buckets"),
    ("DELETE", "/api/v1/storage/buckets/dante"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_requires_a_token(storage: Storage, method: str, path: str) -> None:
    resp = await storage.client.request(method, path)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    forged = await storage.client.request(
        method, path, headers={"Authorization": "Bearer abc.def.ghi"}
    )
    assert forged.status_code == 401
    expired = storage.mint("admin", ttl=-60)
    stale = await storage.client.request(
        method, path, headers={"Authorization": f"Bearer {expired}"}
    )
    assert stale.status_code == 401


async def test_buckets_are_admin_only(storage: Storage) -> None:
    alice = storage.user()
    assert (await alice.request("GET", "/buckets")).status_code == 403
    assert (await alice.request("POST", "/buckets", json={"name": "mine"})).status_code == 403
    assert (await alice.request("DELETE", "/buckets/dante")).status_code == 403


async def test_bucket_lifecycle(storage: Storage) -> None:
    admin, alice = storage.user("admin"), storage.user()
    listed = (await admin.request("GET", "/buckets")).json()
    assert any(b["name"] == "dante" and b["default"] for b in listed)
    name = f"extra-{storage.backend}"
    created = await admin.request("POST", "/buckets", json={"name": name})
    assert created.status_code == 201, created.text
    assert (await admin.request("POST", "/buckets", json={"name": name})).status_code == 409
    assert name in {b["name"] for b in (await admin.request("GET", "/buckets")).json()}
    # Objects in a non-default bucket keep the same per-user namespace.
    assert (await alice.put("in-extra", b"e", params={"bucket": name})).status_code == 201
    assert (await alice.get("in-extra")).status_code == 404
    assert (await alice.get("in-extra", params={"bucket": name})).content == b"e"
    not_empty = await admin.request("DELETE", f"/buckets/{name}")
    assert not_empty.status_code == 409
    assert not_empty.json()["error"] == "bucket_not_empty"
    await alice.request("DELETE", "/objects/in-extra", params={"bucket": name})
    assert (await admin.request("DELETE", f"/buckets/{name}")).status_code == 204
    assert (await admin.request("DELETE", f"/buckets/{name}")).status_code == 404
    assert (await alice.get("in-extra", params={"bucket": name})).status_code == 404


async def test_bucket_names_validated_and_default_kept(storage: Storage) -> None:
    admin = storage.user("admin")
    for bad in ["Upper", "ab", "a_b", "-start", "x" * 64, "192.168.0.1", "a..b"]:
        resp = await admin.request("POST", "/buckets", json={"name": bad})
        assert resp.status_code == 400, bad
        assert resp.json()["error"] == "invalid_bucket_name"
    keep = await admin.request("DELETE", "/buckets/dante")
    assert keep.status_code == 409
    alice = storage.user()
    assert (await alice.get("x", params={"bucket": "Bad_Name"})).status_code == 400
    assert (await alice.put("x", b"x", params={"bucket": "no-such-bucket"})).status_code == 404
