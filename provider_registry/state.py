"""The registry's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from nats.js import JetStreamContext

from shared.app import own_state


@dataclass
class State:
    js: JetStreamContext


def _state(request: Request) -> State:
    return own_state(request.app, State)


RegistryState = Annotated[State, Depends(_state)]
