"""The gateway's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends
from nats.js import JetStreamContext

from api_gateway.proxy import Upstreams
from api_gateway.submit import Submissions
from shared.app import own_state_dependency


@dataclass
class State:
    js: JetStreamContext
    upstreams: Upstreams
    http: httpx.AsyncClient
    submissions: Submissions


GatewayState = Annotated[State, Depends(own_state_dependency(State))]
