"""Fixtures shared by the registry's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest

from tests.support.registry import Events


@pytest.fixture
async def events(nats_url: str) -> AsyncIterator[Events]:
    """Every ``providers.events.*`` message the registry publishes, as the scheduler gets it."""
    nc = await nats.connect(nats_url)
    got = Events()
    await nc.subscribe("providers.events.*", cb=got.on_msg)
    yield got
    await nc.close()
