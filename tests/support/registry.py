"""Helpers for the registry's tests: the app in-process, a provider's identity, and a recorder
of ``providers.events.*`` as the scheduler receives them (a batch's :class:`AttemptsHeld` as one
``held`` entry per provider it lists)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from provider_registry.main import create_app
from provider_registry.settings import RegistrySettings
from shared.contracts import AttemptRef, AttemptsHeld, ProviderEvent


def registry_app(db_url: str, nats_url: str, jwks: Callable[[], Any], **fields: Any) -> Any:
    settings = RegistrySettings(database_url=db_url, nats_url=nats_url, port=0, **fields)
    return create_app(settings, jwks=jwks)


def provider(mint_token: Callable[..., str]) -> tuple[str, dict[str, str]]:
    """A new provider id and its daemon's bearer headers."""
    pid = str(uuid.uuid4())
    token = mint_token("provider", str(uuid.uuid4()), provider_id=pid)
    return pid, {"authorization": f"Bearer {token}"}


@dataclass
class Held:
    """One provider's listing in an :class:`AttemptsHeld` batch."""

    provider_id: str
    at: datetime
    attempts: list[AttemptRef]
    batch: int  # the position of its message among the ``held`` ones received
    kind: str = "held"


Event = ProviderEvent | Held


class Events:
    """Every ``providers.events.*`` message, by provider, in the order received (subscribe
    :meth:`on_msg`)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[Event]] = {}
        self.batches = 0
        self.changed = asyncio.Condition()

    async def on_msg(self, msg: Any) -> None:
        if msg.subject.endswith(".held"):
            held = AttemptsHeld.model_validate_json(msg.data)
            self.batches += 1
            got: list[Event] = [
                Held(pid, held.at, refs, self.batches) for pid, refs in held.held.items()
            ]
        else:
            got = [ProviderEvent.model_validate_json(msg.data)]
        async with self.changed:
            for event in got:
                self.seen.setdefault(event.provider_id, []).append(event)
            self.changed.notify_all()

    def of(self, provider_id: str, kind: str) -> list[ProviderEvent]:
        return [
            e
            for e in self.seen.get(provider_id, [])
            if isinstance(e, ProviderEvent) and e.kind == kind
        ]

    def held(self, provider_id: str) -> list[Held]:
        """The provider's listings that came in ``held`` batches."""
        return [e for e in self.seen.get(provider_id, []) if isinstance(e, Held)]

    async def wait(self, provider_id: str, kind: str, limit: float = 60) -> ProviderEvent:
        """The first ``kind`` event for the provider; the bound only stops a hung run."""
        async with asyncio.timeout(limit), self.changed:
            while not (found := self.of(provider_id, kind)):
                await self.changed.wait()
            return found[0]

    async def until(self, provider_id: str, count: int, limit: float = 60) -> list[Event]:
        """The provider's events once ``count`` arrived; the bound only stops a hung run."""
        async with asyncio.timeout(limit), self.changed:
            while len(self.seen.get(provider_id, [])) < count:
                await self.changed.wait()
            return list(self.seen[provider_id])
