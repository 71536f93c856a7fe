"""The registry's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from nats.js import JetStreamContext

from provider_registry.beats import Announcer
from shared.app import own_state_dependency


@dataclass
class State:
    js: JetStreamContext
    # set after a commit that wrote provider events: the outbox loop publishes them at once
    outbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    # when each provider's last plain heartbeat event was written, this replica
    announcer: Announcer = field(default_factory=Announcer)


RegistryState = Annotated[State, Depends(own_state_dependency(State))]
