"""The scheduler's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from nats.js import JetStreamContext

from scheduler.settings import SchedulerSettings
from shared.app import own_state_dependency


@dataclass
class State:
    js: JetStreamContext
    settings: SchedulerSettings


SchedulerState = Annotated[State, Depends(own_state_dependency(State))]
