"""Queries. Repositories add and flush; the unit of work commits."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.models import ApiKey, LoginAttempt, RefreshToken, Revocation, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_username(self, username: str) -> User | None:
        stmt = sa.select(User).where(User.username_key == username.lower())
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_id(self, user_id: str, *, for_update: bool = False) -> User | None:
        return await self.session.get(User, user_id, with_for_update=for_update)

    async def exists(self, username: str, email: str) -> bool:
        stmt = sa.select(sa.func.count()).where(
            sa.or_(User.username_key == username.lower(), User.email == email.lower())
        )
        return (await self.session.execute(stmt)).scalar_one() > 0

    async def email_taken(self, email: str, except_id: str) -> bool:
        stmt = sa.select(sa.func.count()).where(User.email == email.lower(), User.id != except_id)
        return (await self.session.execute(stmt)).scalar_one() > 0

    async def add(self, user: User) -> User:
        self.session.add(user)
        await self.session.flush()
        return user

    async def search(
        self, *, role: str | None, query: str | None, limit: int, offset: int
    ) -> tuple[list[User], int]:
        where = []
        if role:
            where.append(User.role == role)
        if query:
            like = f"%{query.lower()}%"
            where.append(sa.or_(User.username_key.like(like), User.email.like(like)))
        total = (
            await self.session.execute(sa.select(sa.func.count()).select_from(User).where(*where))
        ).scalar_one()
        stmt = sa.select(User).where(*where).order_by(User.created_at, User.id)
        rows = (await self.session.execute(stmt.limit(limit).offset(offset))).scalars().all()
        return list(rows), total


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

    async def revoke_user(self, user_id: str, at: datetime) -> None:
        await self.session.execute(
            sa.update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=at)
        )


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        stmt = sa.select(ApiKey).where(ApiKey.key_hash == key_hash)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_id(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id, with_for_update=True)

    async def of_user(self, user_id: str) -> list[ApiKey]:
        stmt = sa.select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)
        return list((await self.session.execute(stmt)).scalars().all())

    async def add(self, key: ApiKey) -> None:
        self.session.add(key)
        await self.session.flush()


class RevocationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: Revocation) -> None:
        self.session.add(row)
        await self.session.flush()

    async def live(self, now: datetime) -> list[Revocation]:
        """Rows still covering an unexpired token; expired ones are pruned on the way."""
        await self.session.execute(sa.delete(Revocation).where(Revocation.expires_at <= now))
        stmt = sa.select(Revocation).where(Revocation.expires_at > now)
        return list((await self.session.execute(stmt)).scalars().all())


class LoginAttemptRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: LoginAttempt) -> None:
        self.session.add(row)
        await self.session.flush()

    async def recent_failures(
        self, since: datetime, column: str, value: str, *, reset_on_success: bool
    ) -> list[datetime]:
        """Times of failed attempts after ``since`` whose ``column`` equals ``value``, oldest
        first; with ``reset_on_success`` only those after the last successful one."""
        col = getattr(LoginAttempt, column)
        start = since
        if reset_on_success:
            last_ok = (
                await self.session.execute(
                    sa.select(sa.func.max(LoginAttempt.at)).where(
                        col == value, LoginAttempt.success.is_(True)
                    )
                )
            ).scalar_one_or_none()
            if last_ok is not None:
                start = max(since, last_ok)
        stmt = (
            sa.select(LoginAttempt.at)
            .where(col == value, LoginAttempt.success.is_(False), LoginAttempt.at > start)
            .order_by(LoginAttempt.at)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def history(self, user_id: str, limit: int) -> list[LoginAttempt]:
        stmt = (
            sa.select(LoginAttempt)
            .where(LoginAttempt.user_id == user_id)
            .order_by(LoginAttempt.at.desc())
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars().all())
