"""The gateway's hot paths handed straight to their handlers, past FastAPI's router.

Job intake (``POST /api/v1/jobs``) and every proxied request (job reads, provider search,
heartbeats) used to go through FastAPI's routing and dependency solving: route matching over
every included router, then the dependencies (body, principal, state, header) solved one by
one. That was ~60 % of the gateway's own CPU per submission, profiled in issue 12. This
middleware, innermost (after the request id, the limits, authentication and the input guard
have run), sends those requests to the same functions the routes call.

It takes only the path where nothing can go wrong before the handler runs. Anything unusual,
a body that does not validate, no or a refused token, a bad ``Idempotency-Key``, a caller
who may not submit, a path a gateway route of its own serves, is handed on to FastAPI
unchanged (the body replayed), so every refusal is still answered by the route, in the one
error shape, exactly as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import structlog
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway.routes import SUBMITTER_ROLES, accept_job, proxy_to, service_for
from api_gateway.schemas import JobSubmission
from api_gateway.state import State
from api_gateway.submit import IDEMPOTENCY_HEADER, valid_key
from shared.app import own_state, scope_correlation_id
from shared.auth import AUTH_ERROR, AUTHENTICATED, Principal
from shared.errors import DanteError, error_response
from shared.input_guard import is_json, replay_body

log = structlog.get_logger(__name__)

SUBMIT_PATH = "/api/v1/jobs"
_KEY_HEADER = IDEMPOTENCY_HEADER.lower().encode()


class FastLane:
    """Pure ASGI, innermost in the gateway's stack (see the module docstring)."""

    def __init__(self, app: ASGIApp, routes: Iterable[Any]) -> None:
        self.app = app
        api_routes = [r for r in routes if isinstance(r, APIRoute)]
        self.submit_route = next(
            r for r in api_routes if r.path == SUBMIT_PATH and "POST" in _methods(r)
        )
        self.proxy_route = next(r for r in api_routes if r.path == "/{path:path}")
        self.proxied_methods = _methods(self.proxy_route)
        # The gateway's own routes (the job log, intake): a proxied-looking path one of them
        # would take stays FastAPI's to decide.
        self.own: list[tuple[re.Pattern[str], frozenset[str]]] = [
            (r.path_regex, _methods(r)) for r in api_routes if r is not self.proxy_route
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            if method == "POST" and path == SUBMIT_PATH:
                await self._submit(scope, receive, send)
                return
            if method in self.proxied_methods and not self._own(method, path):
                service = service_for(path)
                if service is not None:
                    await self._proxy(service, path, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _own(self, method: str, path: str) -> bool:
        return any(rx.match(path) and method in methods for rx, methods in self.own)

    async def _proxy(
        self, service: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # what routing would have left for the metrics' route label (shared.metrics)
        scope["route"] = self.proxy_route
        scope["path_params"] = {"path": path[1:]}
        request = Request(scope, receive)
        try:
            state = own_state(scope["app"], State)
            response = await proxy_to(service, path, request, state)
        except DanteError as exc:
            response = _error(exc)
        await response(scope, receive, send)

    async def _submit(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        accepted = _submittable(scope, body)
        state = scope["app"].state
        if accepted is None or not isinstance(getattr(state, "own", None), State):
            await self.app(scope, replay_body(body, receive), send)
            return
        submission, principal, key = accepted
        scope["route"] = self.submit_route
        scope["path_params"] = {}
        structlog.contextvars.bind_contextvars(user_id=principal.user_id)  # as the route's
        try:
            job = await accept_job(
                submission, principal, state.own, scope_correlation_id(scope), key
            )
        except DanteError as exc:
            await _error(exc)(scope, receive, send)
            return
        content = job.model_dump_json().encode()
        await Response(content, 202, media_type="application/json")(scope, receive, send)


def _methods(route: APIRoute) -> frozenset[str]:
    return frozenset(route.methods or ())


def _submittable(scope: Scope, body: bytes) -> tuple[JobSubmission, Principal, str | None] | None:
    """The submission, its caller and key when the route would certainly accept them; None
    when the route must answer (and say why)."""
    state = scope.get("state", {})
    principal: Principal | None = state.get(AUTHENTICATED)
    if principal is None or AUTH_ERROR in state or principal.role not in SUBMITTER_ROLES:
        return None
    if not is_json(scope):
        return None
    key: str | None = None
    for name, value in scope["headers"]:
        if name == _KEY_HEADER:
            key = value.decode("latin-1")
            break
    if key is not None and not valid_key(key):
        return None
    try:
        # as FastAPI validates a body: the decoded JSON, then the model
        submission = JobSubmission.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return None
    return submission, principal, key


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error(exc: DanteError) -> Response:
    """As the app's handler for ``DanteError`` renders it (shared/errors.py)."""
    if exc.status_code >= 500:
        log.warning("request.failed", error=exc.code, detail=exc.message)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)
