"""The registry's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from nats.js import JetStreamContext

from shared.app import own_state_dependency


@dataclass
class State:
    js: JetStreamContext


RegistryState = Annotated[State, Depends(own_state_dependency(State))]
