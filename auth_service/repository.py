"""Queries. Repositories add and flush; the unit of work commits."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.models import ApiKey, RefreshToken, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_username(self, username: str) -> User | None:
        stmt = sa.select(User).where(User.username_key == username.lower())
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_id(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def exists(self, username: str, email: str) -> bool:
        stmt = sa.select(sa.func.count()).where(
            sa.or_(User.username_key == username.lower(), User.email == email.lower())
        )
        return (await self.session.execute(stmt)).scalar_one() > 0

    async def add(self, user: User) -> User:
        self.session.add(user)
        await self.session.flush()
        return user


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_hash(self, token_hash: str) -> RefreshToken | None:
        stmt = sa.select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        return (await self.session.execute(stmt.with_for_update())).scalar_one_or_none()

    async def add(self, token: RefreshToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def revoke_family(self, family_id: str, at: datetime) -> None:
        await self.session.execute(
            sa.update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=at)
        )


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        stmt = sa.select(ApiKey).where(ApiKey.key_hash == key_hash)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add(self, key: ApiKey) -> None:
        self.session.add(key)
        await self.session.flush()
