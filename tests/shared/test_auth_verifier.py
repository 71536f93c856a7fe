"""The shared TokenVerifier refuses every token it should (in-process; keys from the test
keyring, the same code the auth service signs with)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from jose import jwt

from shared.auth import TokenVerifier
from shared.errors import Unauthorized


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "dante-auth",
        "aud": "dante",
        "sub": "user-1",
        "name": "u",
        "role": "requester",
        "typ": "access",
        "jti": "j1",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


def _unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    if header["alg"] == "none":
        return f"{head}.{body}."
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _verifier(local_jwks: Callable[[], Any], **kw: Any) -> TokenVerifier:
    return TokenVerifier(local_jwks, issuer="dante-auth", audience="dante", **kw)


async def test_a_good_token_verifies(local_jwks: Callable[[], Any], keyring: Any) -> None:
    p = await _verifier(local_jwks).verify(keyring.sign(_claims()))
    assert p.user_id == "user-1" and p.role == "requester"


@pytest.mark.parametrize(
    "case",
    [
        "none",
        "hs256_public_pem",
        "hs256_public_jwk_n",
        "expired",
        "nbf_future",
        "wrong_iss",
        "wrong_aud",
        "refresh_typ",
        "unknown_role",
        "unknown_kid",
        "garbage",
        "no_exp",
    ],
)
async def test_bad_tokens_are_refused(
    local_jwks: Callable[[], Any], keyring: Any, case: str
) -> None:
    kid = keyring.active.kid
    now = int(time.time())
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(keyring.active.private_pem, password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tokens = {
        "none": lambda: _unsigned({"alg": "none", "kid": kid, "typ": "JWT"}, _claims()),
        # the classic confusion attack: HMAC keyed with the RSA public key the JWKS publishes
        "hs256_public_pem": lambda: _unsigned(
            {"alg": "HS256", "kid": kid, "typ": "JWT"}, _claims(), public_pem
        ),
        "hs256_public_jwk_n": lambda: _unsigned(
            {"alg": "HS256", "kid": kid}, _claims(), keyring.active.public_jwk["n"].encode()
        ),
        "expired": lambda: keyring.sign(_claims(iat=now - 1000, nbf=now - 1000, exp=now - 10)),
        "nbf_future": lambda: keyring.sign(_claims(nbf=now + 600)),
        "wrong_iss": lambda: keyring.sign(_claims(iss="someone-else")),
        "wrong_aud": lambda: keyring.sign(_claims(aud="other-platform")),
        "refresh_typ": lambda: keyring.sign(_claims(typ="refresh")),
        "unknown_role": lambda: keyring.sign(_claims(role="superuser")),
        "unknown_kid": lambda: jwt.encode(
            _claims(), keyring.active.private_pem.decode(), "RS256", headers={"kid": "nope"}
        ),
        "garbage": lambda: "not.a.token",
        "no_exp": lambda: keyring.sign({k: v for k, v in _claims().items() if k != "exp"}),
    }
    with pytest.raises(Unauthorized):
        await _verifier(local_jwks).verify(tokens[case]())


async def test_an_expired_token_says_so_and_garbage_does_not(
    local_jwks: Callable[[], Any], keyring: Any
) -> None:
    now = int(time.time())
    verifier = _verifier(local_jwks)
    expired = keyring.sign(_claims(iat=now - 1000, nbf=now - 1000, exp=now - 10))
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(expired)
    assert caught.value.code == "token_expired" and caught.value.status_code == 401
    # an expired token whose signature does not verify is not "expired": it is not ours
    head, body, sig = expired.split(".")
    forged = f"{head}.{body}.{sig[:-4]}AAAA"
    for bad in (forged, "not.a.token", "garbage"):
        with pytest.raises(Unauthorized) as caught:
            await verifier.verify(bad)
        assert caught.value.code == "unauthorized"
    revoked = keyring.sign(_claims(jti="gone"))

    async def feed() -> dict[str, Any]:
        return {"tokens": ["gone"]}

    with pytest.raises(Unauthorized) as caught:
        await _verifier(local_jwks, fetch_revocations=feed).verify(revoked)
    assert caught.value.code == "token_revoked"


async def test_revocation_feed_refuses_users_providers_and_single_tokens(
    local_jwks: Callable[[], Any], keyring: Any
) -> None:
    now = time.time()
    feed: dict[str, Any] = {"users": {}, "providers": {}, "tokens": []}
    fetched: list[float] = []

    async def fetch() -> dict[str, Any]:
        fetched.append(time.monotonic())
        return feed

    verifier = _verifier(local_jwks, fetch_revocations=fetch, revocation_poll=0)
    old = keyring.sign(_claims(iat=round(now - 5, 3)))
    new_after = keyring.sign(_claims(iat=round(now + 1, 3), jti="j2"))
    daemon = keyring.sign(_claims(sub="prov-user", pid="p-1", jti="j3", iat=now - 5))
    assert (await verifier.verify(old)).user_id == "user-1"
    feed["users"] = {"user-1": now}
    with pytest.raises(Unauthorized, match="revoked"):
        await verifier.verify(old)
    assert (await verifier.verify(new_after)).user_id == "user-1"  # issued after the cut-off
    feed["providers"] = {"p-1": now}
    with pytest.raises(Unauthorized):
        await verifier.verify(daemon)
    feed["tokens"] = ["j2"]
    with pytest.raises(Unauthorized):
        await verifier.verify(new_after)
    assert len(fetched) >= 4


async def test_revocations_are_polled_at_most_once_per_interval_and_survive_a_feed_outage(
    local_jwks: Callable[[], Any], keyring: Any
) -> None:
    calls = 0
    down = False

    async def fetch() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if down:
            raise ConnectionError("auth is down")
        return {"users": {"user-1": time.time() + 5}}

    verifier = _verifier(local_jwks, fetch_revocations=fetch, revocation_poll=3600)
    token = keyring.sign(_claims())
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await verifier.verify(token)
    assert calls == 1
    down = True
    verifier._revocations_at = float("-inf")  # force the next poll, which fails
    with pytest.raises(Unauthorized):  # the last known list still holds
        await verifier.verify(token)
    assert calls == 2


async def test_a_remembered_token_is_refused_once_it_expires(
    local_jwks: Callable[[], Any], keyring: Any
) -> None:
    """Verified signatures are cached (shared/auth.py), but never past the token's expiry."""
    import asyncio

    verifier = _verifier(local_jwks)
    now = int(time.time())
    token = keyring.sign(_claims(iat=now - 10, nbf=now - 10, exp=now + 1))
    assert (await verifier.verify(token)).user_id == "user-1"
    assert (await verifier.verify(token)).user_id == "user-1"  # from the cache
    # past its exp, by the whole second the JWT library compares in
    await asyncio.sleep(max(0.0, now + 2.1 - time.time()))
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_a_key_deleted_from_the_jwks_is_refused_also_for_remembered_tokens(
    tmp_path: Any,
) -> None:
    """A key taken out of the auth service (rotated out, or leaked) stops verifying once the
    JWKS is read again, also for a token already verified and remembered."""
    from auth_service.keys import KeyRing, generate_key

    ring = KeyRing(tmp_path)  # one key of its own
    old = ring.active
    published = {"keys": [old.public_jwk]}
    fetches = 0

    async def jwks() -> dict[str, Any]:
        nonlocal fetches
        fetches += 1
        return published

    # every verification finds the JWKS due for a re-read (max age 0, no floor)
    verifier = _verifier(jwks, jwks_max_age=0, refetch_floor=0)
    token = ring.sign(_claims())
    assert (await verifier.verify(token)).user_id == "user-1"
    assert (await verifier.verify(token)).user_id == "user-1"  # remembered, key still there
    generate_key(tmp_path)
    ring = KeyRing(tmp_path)  # rotated: a new active key, then the old one deleted
    published = {"keys": [ring.active.public_jwk]}
    with pytest.raises(Unauthorized, match="unknown signing key"):
        await verifier.verify(token)
    assert (await verifier.verify(ring.sign(_claims()))).user_id == "user-1"
    assert fetches >= 4

    # with the default max age, a remembered token costs no fetch at all
    steady = _verifier(jwks)
    fresh = ring.sign(_claims(jti="j2"))
    await steady.verify(fresh)
    before = fetches
    for _ in range(3):
        await steady.verify(fresh)
    assert fetches == before
