"""The scheduler's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from nats.js import JetStreamContext

from scheduler.settings import SchedulerSettings
from shared.app import own_state


@dataclass
class State:
    js: JetStreamContext
    settings: SchedulerSettings


def _state(request: Request) -> State:
    return own_state(request.app, State)


SchedulerState = Annotated[State, Depends(_state)]
