"""Decisions: who may register, log in, refresh, and what a token says."""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog

from auth_service.errors import TooManyAttempts
from auth_service.keys import KeyRing
from auth_service.models import ApiKey, LoginAttempt, RefreshToken, Revocation, User
from auth_service.repository import (
    ApiKeyRepository,
    LoginAttemptRepository,
    RefreshTokenRepository,
    RevocationRepository,
    UserRepository,
)
from auth_service.schemas import (
    ApiKeyOut,
    ProviderTokenOut,
    RegisterIn,
    ServiceTokenOut,
    TokenOut,
)
from auth_service.security import digest, hash_password, new_secret, verify_password
from auth_service.settings import AuthSettings
from shared.auth import Principal
from shared.db import UnitOfWork, utcnow
from shared.errors import Conflict, Unauthorized

log = structlog.get_logger(__name__)


def access_claims(
    issuer: str,
    audience: str,
    *,
    sub: str,
    name: str,
    role: str,
    ttl: int,
    provider_id: str | None = None,
    now: datetime,
) -> dict[str, Any]:
    """The claims of an access token: written here only (the test suite mints with it too)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "name": name,
        "role": role,
        "typ": "access",
        "jti": uuid.uuid4().hex,
        # Millisecond precision (RFC 7519 allows fractions), so "tokens issued before the
        # revocation" is exact even when a fresh login follows within the same second.
        "iat": round(now.timestamp(), 3),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
    }
    if provider_id:
        claims["pid"] = provider_id
    return claims


class AuthService:
    def __init__(self, uow: UnitOfWork, keys: KeyRing, settings: AuthSettings) -> None:
        self.uow = uow
        self.keys = keys
        self.settings = settings
        self.users = UserRepository(uow.session)
        self.refresh_tokens = RefreshTokenRepository(uow.session)
        self.api_keys = ApiKeyRepository(uow.session)
        self.revocations = RevocationRepository(uow.session)
        self.logins = LoginAttemptRepository(uow.session)

    # --- tokens -----------------------------------------------------------------------------

    def _access_token(
        self, user: User, ttl: int, *, provider_id: str | None = None
    ) -> tuple[str, datetime]:
        return self._sign(user.id, user.username, user.role, ttl, provider_id=provider_id)

    def _sign(
        self, sub: str, name: str, role: str, ttl: int, *, provider_id: str | None = None
    ) -> tuple[str, datetime]:
        now = utcnow()
        claims = access_claims(
            self.settings.jwt_issuer,
            self.settings.jwt_audience,
            sub=sub,
            name=name,
            role=role,
            ttl=ttl,
            provider_id=provider_id,
            now=now,
        )
        return self.keys.sign(claims), now + timedelta(seconds=ttl)

    def service_token(self, client_id: str, client_secret: str) -> ServiceTokenOut:
        """Client-credentials grant: a ``service`` token with subject ``service:<client_id>``."""
        expected = self.settings.service_clients.get(client_id)
        # Compare against something even for an unknown client, so timing says nothing.
        ok = hmac.compare_digest(
            client_secret.encode(), (expected or secrets.token_hex(32)).encode()
        )
        if expected is None or not ok:
            log.warning("service_token.refused", client_id=client_id)
            raise Unauthorized("invalid client credentials", code="invalid_client")
        token, expires = self._sign(
            f"service:{client_id}", client_id, "service", self.settings.service_token_ttl_seconds
        )
        log.info("service_token.issued", client_id=client_id)
        return ServiceTokenOut(access_token=token, expires_at=expires)

    async def _issue(self, user: User, family_id: str | None = None) -> TokenOut:
        access, expires = self._access_token(user, self.settings.access_ttl_seconds)
        refresh = new_secret("rt_")
        await self.refresh_tokens.add(
            RefreshToken(
                id=str(uuid.uuid4()),
                user_id=user.id,
                family_id=family_id or str(uuid.uuid4()),
                token_hash=digest(refresh),
                expires_at=utcnow() + timedelta(seconds=self.settings.refresh_ttl_seconds),
            )
        )
        return TokenOut(
            token=access,
            access_token=access,
            refresh_token=refresh,
            expires_at=expires,
            user_id=user.id,
            username=user.username,
            role=user.role,
        )

    # --- users ------------------------------------------------------------------------------

    async def register(self, data: RegisterIn, *, role: str | None = None) -> User:
        if await self.users.exists(data.username, data.email):
            raise Conflict("username or email already taken", code="user_exists")
        user = User(
            id=str(uuid.uuid4()),
            username=data.username,
            username_key=data.username.lower(),
            email=data.email.lower(),
            password_hash=hash_password(data.password),
            role=role or data.role,
            active=True,
        )
        await self.users.add(user)
        log.info("user.registered", user_id=user.id, role=user.role)
        return user

    async def _throttled(
        self, column: str, value: str, limit: int, *, reset_on_success: bool
    ) -> int | None:
        """Seconds until ``value`` may fail again, or None when under the limit."""
        since = utcnow() - timedelta(seconds=self.settings.login_window_seconds)
        failures = await self.logins.recent_failures(
            since, column, value, reset_on_success=reset_on_success
        )
        if len(failures) < limit:
            return None
        # Free again when the oldest failure that still counts leaves the window.
        oldest = failures[len(failures) - limit]
        return int((oldest - since).total_seconds()) + 1

    async def login(
        self, username: str, password: str, *, ip: str = "", user_agent: str = ""
    ) -> TokenOut:
        """Check a password, throttling failures without ever locking out the right one.

        The address throttle runs first and refuses before any check: it caps what one client
        can guess across accounts. The account throttle runs only after the hash check and
        only for a wrong password (issue 18): a correct password is the proof that admits the
        owner, so nobody can lock a known user (``admin`` included) out by failing on purpose
        from elsewhere; a guesser past the limit gets 429 for every wrong try instead of 401.
        """
        key = username.lower()
        s = self.settings
        wait = await self._throttled("ip", ip, s.login_max_failures_per_ip, reset_on_success=False)
        if wait is not None:
            log.warning("login.throttled", by="address")
            raise TooManyAttempts("too many failed logins for this address", wait)
        user = await self.users.by_username(username)
        # The hash is verified even for an unknown user, so both answers take the same time.
        ok = verify_password(password, user.password_hash if user else None)
        reason = "ok"
        if user is None:
            reason = "unknown_user"
        elif not ok:
            reason = "wrong_password"
        elif not user.active:
            reason = "disabled"
        account_wait = None
        if reason != "ok":
            account_wait = await self._throttled(
                "username_key", key, s.login_max_failures_per_account, reset_on_success=True
            )
        await self.logins.add(
            LoginAttempt(
                id=str(uuid.uuid4()),
                user_id=user.id if user else None,
                username_key=key[:254],
                ip=ip[:64],
                user_agent=user_agent[:256],
                success=reason == "ok",
                reason=reason,
            )
        )
        if reason != "ok" or user is None:
            log.info("login.failed", reason=reason)
            await self.uow.commit()  # the failure must count even though we answer 401
            if account_wait is not None:
                log.warning("login.throttled", by="account")
                raise TooManyAttempts("too many failed logins for this account", account_wait)
            raise Unauthorized("invalid username or password", code="invalid_credentials")
        log.info("login.succeeded", user_id=user.id)
        return await self._issue(user)

    async def refresh(self, refresh_token: str) -> TokenOut:
        row = await self.refresh_tokens.by_hash(digest(refresh_token))
        now = utcnow()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise Unauthorized("invalid refresh token", code="invalid_refresh_token")
        if row.used_at is not None:
            # A spent token presented again means it leaked: burn the whole family.
            await self.refresh_tokens.revoke_family(row.family_id, now)
            log.warning("refresh.reused", user_id=row.user_id, family_id=row.family_id)
            await self.uow.commit()
            raise Unauthorized("refresh token reused", code="refresh_token_reused")
        row.used_at = now
        user = await self.users.by_id(row.user_id)
        if user is None or not user.active:
            raise Unauthorized("invalid refresh token", code="invalid_refresh_token")
        return await self._issue(user, family_id=row.family_id)

    # --- revocation -------------------------------------------------------------------------

    async def revoke(self, kind: str, subject: str, reason: str, *, until: datetime) -> None:
        """Refuse access tokens: ``user``/``provider`` ones issued before now, or one ``token``.

        ``until`` is when the last token it covers expires; the row is pruned after that.
        """
        await self.revocations.add(
            Revocation(
                id=str(uuid.uuid4()),
                kind=kind,
                subject=subject,
                revoked_at=utcnow(),
                expires_at=until,
                reason=reason,
            )
        )
        log.info("token.revoked", kind=kind, subject=subject, reason=reason)

    async def revoke_user(self, user_id: str, reason: str) -> None:
        """Every access and refresh token the user holds stops working."""
        now = utcnow()
        await self.refresh_tokens.revoke_user(user_id, now)
        until = now + timedelta(seconds=self.settings.max_token_ttl)
        await self.revoke("user", user_id, reason, until=until)

    async def revocation_feed(self) -> dict[str, object]:
        """What every verifier polls: subjects with a cut-off time, and single token ids."""
        feed: dict[str, dict[str, float]] = {"user": {}, "provider": {}}
        tokens: list[str] = []
        for row in await self.revocations.live(utcnow()):
            if row.kind == "token":
                tokens.append(row.subject)
            else:
                at = row.revoked_at.timestamp()
                feed[row.kind][row.subject] = max(at, feed[row.kind].get(row.subject, 0.0))
        return {"users": feed["user"], "providers": feed["provider"], "tokens": tokens}

    async def logout(self, principal: Principal, refresh_token: str | None) -> None:
        """End this session: its access token now, its refresh-token family for good."""
        if principal.token_id:
            until = utcnow() + timedelta(seconds=self.settings.max_token_ttl)
            await self.revoke("token", principal.token_id, "logout", until=until)
        if refresh_token:
            row = await self.refresh_tokens.by_hash(digest(refresh_token))
            if row is not None and row.user_id == principal.user_id:
                await self.refresh_tokens.revoke_family(row.family_id, utcnow())

    # --- provider keys ----------------------------------------------------------------------

    async def create_api_key(
        self, user_id: str, name: str, expires_in_days: int | None
    ) -> ApiKeyOut:
        secret = new_secret("dk_")
        expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
        key = ApiKey(
            id=str(uuid.uuid4()),
            user_id=user_id,
            provider_id=str(uuid.uuid4()),
            name=name,
            prefix=secret[:10],
            key_hash=digest(secret),
            expires_at=expires,
        )
        await self.api_keys.add(key)
        log.info("api_key.created", key_id=key.id, provider_id=key.provider_id)
        return ApiKeyOut(
            key_id=key.id,
            api_key=secret,
            provider_id=key.provider_id,
            name=name,
            expires_at=expires,
        )

    async def provider_token(self, api_key: str) -> ProviderTokenOut:
        key = await self.api_keys.by_hash(digest(api_key))
        now = utcnow()
        if (
            key is None
            or key.revoked_at is not None
            or (key.expires_at is not None and key.expires_at <= now)
        ):
            raise Unauthorized("invalid API key", code="invalid_api_key")
        user = await self.users.by_id(key.user_id)
        if user is None or not user.active or user.role != "provider":
            raise Unauthorized("invalid API key", code="invalid_api_key")
        key.last_used_at = now
        token, expires = self._access_token(
            user, self.settings.provider_token_ttl_seconds, provider_id=key.provider_id
        )
        return ProviderTokenOut(access_token=token, expires_at=expires, provider_id=key.provider_id)

    async def ensure_admin(self) -> None:
        """Create the first admin from settings, once."""
        s = self.settings
        if await self.users.by_username(s.admin_username):
            return
        await self.users.add(
            User(
                id=str(uuid.uuid4()),
                username=s.admin_username,
                username_key=s.admin_username.lower(),
                email=s.admin_email.lower(),
                password_hash=hash_password(s.admin_password),
                role="admin",
                active=True,
            )
        )
        log.info("admin.created", username=s.admin_username)
