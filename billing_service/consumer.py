"""Billing's long-running loops: the usage consumer, reconciliation and storage sampling."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing_service.service import BillingService
from billing_service.settings import BillingSettings
from shared.contracts import UsageRecorded
from shared.db import unit_of_work
from shared.loops import Backoff, ReadyChecks, every
from shared.nats import Poison, PullConsumer

USAGE_CONSUMER = "billing-usage"


class BillingWorkers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        js: JetStreamContext,
        settings: BillingSettings,
        storage_sampler: Callable[[], Awaitable[int]] | None = None,
        ready: ReadyChecks | None = None,
    ) -> None:
        self.sessions = sessions
        self.js = js
        self.settings = settings
        self.storage_sampler = storage_sampler
        self.ready = ready  # the app's ready checks: a failing loop makes /ready answer 503

    async def on_usage(self, msg: Msg) -> None:
        """Settle in one transaction, then ack (the consumer does): a crash before the commit
        redelivers the message, a crash after it finds the settlement and changes nothing."""
        try:
            usage = UsageRecorded.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Poison(f"invalid usage: {exc.error_count()} errors") from exc
        async with unit_of_work(self.sessions) as uow:
            await BillingService(uow, self.settings).settle(usage)

    async def reconcile_once(self) -> None:
        async with unit_of_work(self.sessions) as uow:
            await BillingService(uow, self.settings).reconcile()

    async def _every(
        self, name: str, interval: float, fn: Callable[[], Awaitable[object]], stop: asyncio.Event
    ) -> None:
        """Run ``fn`` every ``interval`` (±10 %); a failure (storage or auth not up yet at
        start) is retried within seconds, backing off to at most 30 s, not in an hour."""

        async def run() -> float:
            await fn()
            return interval * random.uniform(0.9, 1.1)

        retry_soon = Backoff(base=1.0, cap=min(interval, 30.0), jitter=0.2)
        await every(
            f"billing.{name}", run, interval, stop=stop, backoff=retry_soon, ready=self.ready
        )

    async def run(self, stop: asyncio.Event) -> None:
        consumer = PullConsumer(
            self.js,
            "USAGE",
            USAGE_CONSUMER,
            "usage.recorded.*",
            self.on_usage,
            ack_wait=self.settings.ack_wait_seconds,
            # settlement is idempotent and money must not be dropped: redeliver for a long time
            max_deliver=-1,
            ready=self.ready,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(consumer.run(stop))
            tg.create_task(
                self._every(
                    "reconcile",
                    self.settings.reconcile_interval_seconds,
                    self.reconcile_once,
                    stop,
                )
            )
            if self.storage_sampler is not None:
                tg.create_task(
                    self._every(
                        "storage_sample",
                        self.settings.storage_sample_seconds,
                        self.storage_sampler,
                        stop,
                    )
                )
