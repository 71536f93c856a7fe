"""Every service's OpenAPI document says who may call each operation and how it can fail.

FastAPI's own document knows neither: our bearer check is a plain dependency
(``shared.auth.current_principal``), not a ``fastapi.security`` scheme, and our errors are
raised, not returned. :func:`install_openapi` (called by ``shared.app.create_service_app``)
replaces an app's ``openapi()`` with one that, for every operation:

* adds the ``bearerAuth`` security requirement where the route depends on the verified caller;
* declares the error answers that apply, each with the one error shape (:data:`ERROR_SCHEMA`,
  what ``shared.errors`` renders): 401/403 where a token is needed; 400 and 404 where there is
  input (it may make no sense, or name nothing); 409 on writes; 422 everywhere (any URL can
  carry a bad character, ``shared/input_guard.py``); 503 everywhere (a dependency or the
  service itself still starting); plus what a route lists in its own ``responses=``
  (:func:`errors` builds those);
* replaces FastAPI's ``HTTPValidationError`` with the same shape (our 422 is rendered by
  ``shared.errors`` as ``{"error": "validation_error", "detail": [...]}``).

The gateway merges these documents into the public one (``api_gateway/openapi.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi

from shared.auth import current_principal

ERROR_REF = "#/components/schemas/Error"
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {
            "type": "string",
            "description": "a stable machine-readable code: not_found, validation_error, "
            "token_expired, token_revoked, rate_limited, service_unavailable, ...",
        },
        "detail": {
            "description": "what went wrong and what to do about it: a sentence, or for "
            "validation_error a list of {loc, msg, type}",
        },
    },
}
BEARER_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "an access token from POST /api/v1/auth/login (or /refresh, /token)",
}
SECURITY_SCHEME = "bearerAuth"

ERROR_DESCRIPTIONS = {
    400: "the request is malformed (error: bad_request, ...)",
    401: "no token, or it is invalid (error: unauthorized), expired (token_expired: refresh it) "
    "or revoked (token_revoked: log in again)",
    403: "the caller's role or ownership does not allow this (error: forbidden)",
    404: "no such resource, or not the caller's (error: not_found)",
    409: "the resource's current state does not allow this (error: conflict)",
    413: "the request body is too large (error: payload_too_large)",
    415: "the body's media type is not accepted",
    402: "the account's balance does not cover it (error: insufficient_balance)",
    416: "the requested range cannot be satisfied",
    422: "the input does not validate (error: validation_error, detail lists each problem)",
    429: "too many requests: wait for Retry-After seconds (error: rate_limited)",
    503: "the service or one it depends on is unavailable: retry later",
    504: "the upstream service did not answer in time: retry later",
}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or ERROR_DESCRIPTIONS.get(status, "error"),
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
    }


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own error answers beyond the ones declared for all."""
    return {status: error_response(status) for status in statuses}


def _needs_token(dependant: Dependant) -> bool:
    return any(d.call is current_principal or _needs_token(d) for d in dependant.dependencies)


def _defaults(method: str, op: dict[str, Any], authenticated: bool, path: str) -> list[int]:
    statuses = [503]
    if authenticated:
        statuses += [401, 403]
    if op.get("parameters") or op.get("requestBody"):
        # input that parses but makes no sense (an invalid cursor); what it names not found
        statuses += [400, 404]
    if method in ("post", "put", "patch", "delete"):
        statuses.append(409)  # the resource's state does not allow it now
    # any operation: a path or query no field can hold is refused (shared/input_guard.py)
    statuses.append(422)
    return statuses


def declare_errors(
    document: dict[str, Any],
    authenticated: Callable[[str, str], bool],
    extra: Iterable[int] = (),
    body_extra: Iterable[int] = (),
) -> dict[str, Any]:
    """Add the error schema, the bearer scheme, and each operation's errors and security to
    ``document`` (in place; also returned). ``authenticated(method, path)`` says whether an
    operation needs a token; ``extra`` statuses go on every operation, ``body_extra`` on
    those with a request body (the gateway adds its rate limit and body limit this way)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = BEARER_SCHEME
    for path, operations in document.get("paths", {}).items():
        for method, op in operations.items():
            needs = authenticated(method, path)
            if needs:
                op["security"] = [{SECURITY_SCHEME: []}]
            responses = op.setdefault("responses", {})
            statuses = _defaults(method, op, needs, path) + list(extra)
            if op.get("requestBody"):
                statuses += list(body_extra)
            for status in statuses:
                responses.setdefault(str(status), error_response(status))
            for status, response in responses.items():
                if status[:1] in ("4", "5") and not response.get("content"):
                    response["content"] = error_response(int(status))["content"]
            if "422" in responses:
                responses["422"] = {**error_response(422), **_described(responses["422"])}
    return document


def _described(response: dict[str, Any]) -> dict[str, Any]:
    """A route's own description of its 422, kept; FastAPI's generic one dropped."""
    text = response.get("description", "")
    return {} if text in ("", "Validation Error") else {"description": text}


def _routes(app: FastAPI) -> Iterable[Any]:
    """Every route as served, included routers flattened (FastAPI >= 0.160 keeps them lazy)."""
    flatten = getattr(routing, "iter_route_contexts", None)
    return flatten(app.routes) if flatten is not None else app.routes


def _routes_needing_token(app: FastAPI) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for route in _routes(app):
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant) and _needs_token(dependant):
            out.update((m.lower(), str(route.path_format)) for m in route.methods or ())
    return out


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the documented version (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            needing = _routes_needing_token(app)
            app.openapi_schema = declare_errors(
                document, lambda method, path: (method, path) in needing
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
