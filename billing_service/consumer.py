"""Billing's long-running loops: the usage consumer, reconciliation and storage sampling."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing_service.service import BillingService
from billing_service.settings import BillingSettings
from shared.contracts import UsageRecorded
from shared.db import unit_of_work
from shared.nats import Poison, PullConsumer

log = structlog.get_logger(__name__)

USAGE_CONSUMER = "billing-usage"


class BillingWorkers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        js: JetStreamContext,
        settings: BillingSettings,
        storage_sampler: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.sessions = sessions
        self.js = js
        self.settings = settings
        self.storage_sampler = storage_sampler
        self.last_reconciliation: dict[str, object] | None = None

    async def on_usage(self, msg: Msg) -> None:
        """Settle in one transaction, then ack (the consumer does): a crash before the commit
        redelivers the message, a crash after it finds the settlement and changes nothing."""
        try:
            usage = UsageRecorded.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Poison(f"invalid usage: {exc.error_count()} errors") from exc
        async with unit_of_work(self.sessions) as uow:
            await BillingService(uow, self.settings).settle(usage)

    async def reconcile_once(self) -> dict[str, object]:
        async with unit_of_work(self.sessions) as uow:
            self.last_reconciliation = await BillingService(uow, self.settings).reconcile()
        return self.last_reconciliation

    async def _every(
        self, interval: float, fn: Callable[[], Awaitable[object]], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            wait = interval
            try:
                await fn()
            except Exception as exc:
                # e.g. storage or auth not up yet at start: try again soon, not in an hour
                wait = min(interval, 30.0)
                log.warning(
                    "billing.loop_failed", loop=getattr(fn, "__name__", "?"), error=str(exc)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait * random.uniform(0.9, 1.1))

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
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(consumer.run(stop))
            tg.create_task(
                self._every(self.settings.reconcile_interval_seconds, self.reconcile_once, stop)
            )
            if self.storage_sampler is not None:
                tg.create_task(
                    self._every(self.settings.storage_sample_seconds, self.storage_sampler, stop)
                )
