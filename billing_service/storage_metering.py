"""Storage metered as byte-hours per user, by sampling the storage service's API.

Every ``storage_sample_seconds`` billing lists the whole bucket through the storage API
(``GET /api/v1/storage/objects?owner=*``, with billing's service token; storage lets a service
see every namespace) and sums object sizes per user (keys ``users/<user id>/...``). A user is
charged for the bytes of the *previous* sample times the time since it (what they held over
that interval), at ``storage_price_micros_per_gb_hour``, collected from the wallet up to its
credit limit into ``platform:storage``. Each sample is one transaction keyed by user and time.
Sampling misses objects that live and die between two samples; with an hourly sample that is
at most an hour of an object's life, and the cheap alternative to consuming every write event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing_service import money
from billing_service.ledger import PLATFORM_STORAGE, Ledger, wallet
from billing_service.models import StorageUsage
from billing_service.repository import LedgerRepository, SettlementRepository
from billing_service.settings import BillingSettings
from shared.db import unit_of_work, utcnow

log = structlog.get_logger(__name__)

USERS_PREFIX = "users/"
Headers = Callable[[], Awaitable[dict[str, str]]]
BaseUrl = Callable[[], Awaitable[str]]


class StorageSampler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: BillingSettings,
        http: httpx.AsyncClient,
        base_url: BaseUrl,
        headers: Headers,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.http = http
        self.base_url = base_url
        self.headers = headers

    async def usage_by_owner(self) -> dict[str, int]:
        """Bytes per user id, now, over every page of the listing."""
        base = await self.base_url()
        sizes: dict[str, int] = defaultdict(int)
        cursor: str | None = None
        while True:
            params = {"owner": "*", "limit": "1000"}
            if cursor:
                params["cursor"] = cursor
            resp = await self.http.get(
                f"{base}/api/v1/storage/objects", params=params, headers=await self.headers()
            )
            resp.raise_for_status()
            page = resp.json()
            for obj in page["objects"]:
                key = obj["key"]
                if key.startswith(USERS_PREFIX):
                    owner = key[len(USERS_PREFIX) :].split("/", 1)[0]
                    sizes[owner] += int(obj["size"])
            cursor = page.get("next_cursor")
            if not cursor:
                return dict(sizes)

    async def sample(self, now: datetime | None = None) -> int:
        """Record one sample per user; returns how many users were charged something."""
        now = now or utcnow()
        current = await self.usage_by_owner()
        charged = 0
        async with unit_of_work(self.sessions) as uow:
            repo = SettlementRepository(uow.session)
            ledger = Ledger(LedgerRepository(uow.session))
            owners = set(current) | set(await repo.storage_owners())
            for owner in sorted(owners):
                last = await repo.last_storage_sample(owner)
                if last is None and not current.get(owner):
                    continue
                seconds = max(0, int((now - last.sampled_at).total_seconds())) if last else 0
                byte_seconds = (last.bytes if last else 0) * seconds
                charge = money.byte_seconds_charge(
                    byte_seconds, self.settings.storage_price_micros_per_gb_hour
                )
                collected = 0
                if charge:
                    acct = (await ledger.lock([wallet(owner)]))[wallet(owner)]
                    collected = min(charge, max(0, ledger.available(acct)))
                if collected:
                    await ledger.post(
                        ref=f"storage:{owner}:{now.isoformat()}",
                        kind="storage",
                        legs=[(wallet(owner), -collected), (PLATFORM_STORAGE, collected)],
                        memo=f"{byte_seconds} byte-seconds",
                    )
                    charged += 1
                uow.session.add(
                    StorageUsage(
                        user_id=owner,
                        sampled_at=now,
                        bytes=current.get(owner, 0),
                        seconds=seconds,
                        byte_seconds=byte_seconds,
                        charge_minor=collected,
                    )
                )
        log.info("billing.storage_sampled", users=len(owners), charged=charged)
        return charged
