"""Token verification against the auth service's JWKS, shared by the gateway and every service.

Only asymmetric algorithms are accepted, and only the one the key itself declares, so a token
signed with ``alg: none`` or HMAC (including HMAC keyed with the public key) never verifies.

Revocation: the auth service serves a small feed (``GET /internal/revocations``) of users and
provider ids whose tokens issued before a cut-off are void, plus single token ids (logout).
Every verifier re-reads it at most every ``revocation_poll`` seconds (5 by default), on demand,
so a revoked or disabled user's token is refused everywhere within that bound. If the feed
cannot be read the last copy stays in force (fail open on the feed, never on signatures): an
auth outage must not take every service down with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JOSEError
from starlette.datastructures import Headers
from starlette.types import Scope

from shared.errors import DanteError, Forbidden, ServiceUnavailable, Unauthorized

log = structlog.get_logger(__name__)

ALLOWED_ALGORITHMS = frozenset({"RS256"})
ROLES = ("requester", "provider", "admin", "service")
"""``service``: another Dante service calling with a client-credentials token."""

JWKSFetcher = Callable[[], Awaitable[dict[str, Any]]]
RevocationFetcher = Callable[[], Awaitable[dict[str, Any]]]
VERIFIED_CACHE = 10_000
"""Verified tokens a verifier remembers (until each expires; the oldest goes first)."""


@dataclass(frozen=True)
class Revocations:
    users: dict[str, float]
    providers: dict[str, float]
    tokens: frozenset[str]

    @classmethod
    def parse(cls, feed: dict[str, Any]) -> Revocations:
        return cls(
            users={str(k): float(v) for k, v in feed.get("users", {}).items()},
            providers={str(k): float(v) for k, v in feed.get("providers", {}).items()},
            tokens=frozenset(str(t) for t in feed.get("tokens", [])),
        )

    def refuses(self, claims: dict[str, Any]) -> bool:
        issued = float(claims.get("iat", 0))
        if claims.get("jti") in self.tokens:
            return True
        cutoff = self.users.get(str(claims.get("sub")))
        if cutoff is not None and issued < cutoff:
            return True
        pid = claims.get("pid")
        cutoff = self.providers.get(str(pid)) if pid else None
        return cutoff is not None and issued < cutoff


NO_REVOCATIONS = Revocations({}, {}, frozenset())


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the verified token says."""

    user_id: str
    role: str
    username: str
    provider_id: str | None = None
    token_id: str | None = None
    token: str | None = None  # the raw bearer, to forward on the caller's behalf

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_service(self) -> bool:
        return self.role == "service"

    def can_see(self, owner_id: str) -> bool:
        return self.is_admin or owner_id == self.user_id


class TokenVerifier:
    """Verifies bearer tokens with keys from a JWKS, cached by ``kid``.

    An unknown ``kid`` triggers a refetch (a rotated key), but at most once per
    ``refetch_floor`` seconds, so garbage tokens cannot be used to hammer the auth service.
    The JWKS is also read again once it is ``jwks_max_age`` seconds old, so a key deleted
    from the auth service (rotated out, or leaked) is refused within that bound, also for
    tokens already verified and remembered. A failed refetch keeps the keys it has.
    """

    def __init__(
        self,
        fetch_jwks: JWKSFetcher,
        *,
        issuer: str,
        audience: str,
        refetch_floor: float = 10.0,
        fetch_revocations: RevocationFetcher | None = None,
        revocation_poll: float = 5.0,
        jwks_max_age: float = 60.0,
    ) -> None:
        self._fetch_revocations = fetch_revocations
        self._poll = revocation_poll
        self._revocations = NO_REVOCATIONS
        self._revocations_at = float("-inf")
        self._revocation_lock = asyncio.Lock()
        self._fetch = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._floor = refetch_floor
        self._max_age = jwks_max_age
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        # token → (its verified claims, its key id), until it expires (see ``verify``)
        self._verified: dict[str, tuple[dict[str, Any], str]] = {}

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._floor:
                return
            self._fetched_at = time.monotonic()
            try:
                jwks = await self._fetch()
            except Exception as exc:
                log.warning("jwks.fetch_failed", error=str(exc))
                return
            self._keys = {k["kid"]: k for k in jwks.get("keys", []) if "kid" in k}

    async def revocations(self) -> Revocations:
        """The current revocation list, re-read if older than the poll interval."""
        if self._fetch_revocations is None:
            return NO_REVOCATIONS
        if time.monotonic() - self._revocations_at >= self._poll:
            async with self._revocation_lock:
                if time.monotonic() - self._revocations_at >= self._poll:
                    self._revocations_at = time.monotonic()
                    try:
                        self._revocations = Revocations.parse(await self._fetch_revocations())
                    except Exception as exc:
                        log.warning("revocations.fetch_failed", error=type(exc).__name__)
        return self._revocations

    async def key_for(self, kid: str) -> dict[str, Any] | None:
        if kid not in self._keys or self._keys_stale():
            await self._refresh()
        return self._keys.get(kid)

    def _keys_stale(self) -> bool:
        return time.monotonic() - self._fetched_at >= self._max_age

    async def _verify_signature(self, token: str) -> tuple[dict[str, Any], str]:
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise Unauthorized("malformed token") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALLOWED_ALGORITHMS or not kid:
            raise Unauthorized("token algorithm not accepted")
        key = await self.key_for(kid)
        if key is None:
            raise Unauthorized("unknown signing key")
        if key.get("alg", alg) != alg:
            raise Unauthorized("token algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                options={"require_exp": True, "require_iat": True, "require_sub": True},
            )
        except ExpiredSignatureError as exc:
            # only a token whose signature verified gets here: the client should refresh it
            raise Unauthorized(
                "token expired: refresh it (POST /api/v1/auth/refresh) or log in again",
                code="token_expired",
            ) from exc
        except JOSEError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        if claims.get("typ") != "access" or claims.get("role") not in ROLES:
            raise Unauthorized("not an access token")
        return claims, kid

    async def verify(self, token: str) -> Principal:
        """The token's principal. A signature, once verified, is remembered until the token
        expires (at most ``VERIFIED_CACHE`` tokens), so a client's next request costs a dict
        lookup instead of an RSA verification; expiry, the signing key (still in the JWKS)
        and the revocation list are still checked on every call, so a revoked token is refused
        within the revocation bound and a deleted key's within ``jwks_max_age``."""
        remembered = self._verified.get(token)
        if remembered is not None:
            if self._keys_stale():
                await self._refresh()
            if remembered[0]["exp"] <= time.time() or remembered[1] not in self._keys:
                self._verified.pop(token, None)
                remembered = None
        if remembered is None:
            remembered = await self._verify_signature(token)
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.pop(next(iter(self._verified)))  # the oldest entry
            self._verified[token] = remembered
        claims = remembered[0]
        if (await self.revocations()).refuses(claims):
            raise Unauthorized("token revoked: log in again", code="token_revoked")
        return Principal(
            user_id=str(claims["sub"]),
            role=claims["role"],
            username=claims.get("name", ""),
            provider_id=claims.get("pid"),
            token_id=claims.get("jti"),
            token=token,
        )


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def bearer_token(request: Request) -> str:
    token = _bearer(request.headers.get("authorization", ""))
    if token is None:
        raise Unauthorized()
    return token


AUTHENTICATED = "principal"
"""Request-state key where an authenticating middleware leaves the verified caller."""
AUTH_ERROR = "auth_error"
"""Request-state key where it leaves why the presented token was refused."""


async def authenticate_scope(scope: Scope, verifier: TokenVerifier) -> None:
    """For a middleware in front of everything else: verify the request's bearer token once
    and leave the result in the request state, for rate limits and for
    :func:`current_principal`. A request without a token is left as it is."""
    token = _bearer(Headers(scope=scope).get("authorization", ""))
    if token is None:
        return
    state = scope.setdefault("state", {})
    try:
        state[AUTHENTICATED] = await verifier.verify(token)
    except DanteError as exc:
        state[AUTH_ERROR] = exc


async def current_principal(request: Request) -> Principal:
    """Dependency: the verified caller, as a middleware already resolved it, else verified now
    with the verifier the lifespan built."""
    state = request.scope.get("state", {})
    if AUTH_ERROR in state:
        raise state[AUTH_ERROR]
    principal: Principal | None = state.get(AUTHENTICATED)
    if principal is None:
        token = bearer_token(request)
        # app.state.service is shared.app.ServiceState (not imported: it imports this module)
        verifier: TokenVerifier | None = request.app.state.service.verifier
        if verifier is None:
            raise ServiceUnavailable("token verification is not ready yet")
        principal = await verifier.verify(token)
    structlog.contextvars.bind_contextvars(user_id=principal.user_id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def _check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"requires role {' or '.join(roles)}")
        return principal

    return _check


async def _provider(principal: CurrentPrincipal) -> Principal:
    if principal.role != "provider" or not principal.provider_id:
        raise Forbidden("requires a provider token")
    return principal


ProviderPrincipal = Annotated[Principal, Depends(_provider)]
AdminPrincipal = Annotated[Principal, Depends(require_role("admin"))]
