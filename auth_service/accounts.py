"""Account management: the profile, password change, admin actions, key listing/revocation.

Every change that alters what a token says (role, active, password) revokes the user's tokens,
so a stale token cannot outlive the change by more than the verifiers' poll interval.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from auth_service.models import User
from auth_service.rules import password_problem
from auth_service.schemas import ApiKeyInfo, LoginOut, ProfileIn, TokenOut
from auth_service.security import hash_password, verify_password
from auth_service.service import AuthService
from shared.auth import Principal
from shared.db import utcnow
from shared.errors import BadRequest, Conflict, Forbidden, NotFound

log = structlog.get_logger(__name__)


class AccountService(AuthService):
    async def user(self, user_id: str, *, for_update: bool = False) -> User:
        user = await self.users.by_id(user_id, for_update=for_update)
        if user is None:
            raise NotFound("user not found")
        return user

    # --- self ----------------------------------------------------------------------------

    async def update_profile(self, user_id: str, data: ProfileIn) -> User:
        if data.role is not None or data.active is not None:
            raise Forbidden("role and active are set by an admin", code="not_self_editable")
        user = await self.user(user_id, for_update=True)
        if data.email is not None and data.email.lower() != user.email:
            if await self.users.email_taken(data.email, user.id):
                raise Conflict("email already taken", code="user_exists")
            user.email = data.email.lower()
        if data.display_name is not None:
            user.display_name = data.display_name
        user.updated_at = utcnow()
        log.info("user.profile_updated", user_id=user.id)
        return user

    async def change_password(self, user_id: str, current: str, new: str) -> TokenOut:
        """New password; every refresh and access token issued before is revoked, and a
        fresh session is returned so the caller stays signed in."""
        user = await self.user(user_id, for_update=True)
        if not verify_password(current, user.password_hash):
            raise BadRequest("current password is wrong", code="wrong_password")
        problem = password_problem(new, user.username)
        if problem:
            raise BadRequest(problem, code="weak_password")
        user.password_hash = hash_password(new)
        user.updated_at = utcnow()
        await self.revoke_user(user.id, "password_changed")
        log.info("user.password_changed", user_id=user.id)
        return await self._issue(user)

    async def login_history(self, user_id: str, limit: int) -> list[LoginOut]:
        rows = await self.logins.history(user_id, limit)
        return [
            LoginOut(at=r.at, ip=r.ip, user_agent=r.user_agent, success=r.success, reason=r.reason)
            for r in rows
        ]

    # --- admin ---------------------------------------------------------------------------

    async def set_active(self, admin: Principal, user_id: str, active: bool) -> User:
        if user_id == admin.user_id and not active:
            raise Conflict("an admin cannot disable itself", code="self_lockout")
        user = await self.user(user_id, for_update=True)
        if user.active != active:
            user.active = active
            user.updated_at = utcnow()
            if not active:
                await self.revoke_user(user.id, "disabled")
            log.info("user.active_changed", user_id=user.id, active=active, by=admin.user_id)
        return user

    async def set_role(self, admin: Principal, user_id: str, role: str) -> User:
        if user_id == admin.user_id and role != "admin":
            raise Conflict("an admin cannot demote itself", code="self_lockout")
        user = await self.user(user_id, for_update=True)
        if user.role != role:
            user.role = role
            user.updated_at = utcnow()
            # Tokens carry the role: the old ones must not keep the old powers.
            await self.revoke_user(user.id, "role_changed")
            log.info("user.role_changed", user_id=user.id, role=role, by=admin.user_id)
        return user

    # --- provider keys -------------------------------------------------------------------

    async def list_api_keys(self, user_id: str) -> list[ApiKeyInfo]:
        return [ApiKeyInfo.model_validate(k) for k in await self.api_keys.of_user(user_id)]

    async def revoke_api_key(self, principal: Principal, key_id: str) -> None:
        """The key stops exchanging, and tokens already minted from it are refused too."""
        key = await self.api_keys.by_id(key_id)
        if key is None or not (principal.is_admin or key.user_id == principal.user_id):
            raise NotFound("API key not found")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            until = utcnow() + timedelta(seconds=self.settings.provider_token_ttl_seconds)
            await self.revoke("provider", key.provider_id, "api_key_revoked", until=until)
            log.info("api_key.revoked", key_id=key.id, provider_id=key.provider_id)
