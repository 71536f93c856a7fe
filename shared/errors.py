"""The error hierarchy and the one handler that renders it as ``{"error": code, "detail": ...}``."""

from __future__ import annotations

import sqlite3
import traceback
from typing import Any

import aiohttp
import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class DanteError(Exception):
    """A failure with a meaning a client can act on."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.headers = headers


class BadRequest(DanteError):
    status_code = 400
    code = "bad_request"


class Unauthorized(DanteError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "authentication required", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class Forbidden(DanteError):
    status_code = 403
    code = "forbidden"


class NotFound(DanteError):
    status_code = 404
    code = "not_found"


class Conflict(DanteError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(DanteError):
    status_code = 413
    code = "payload_too_large"


RETRY_AFTER_SECONDS = 2
"""What every 503 tells a client to wait before trying again (a restart takes a few seconds)."""


def retry_after(
    headers: dict[str, str] | None = None, seconds: int = RETRY_AFTER_SECONDS
) -> dict[str, str]:
    """``headers`` with ``Retry-After`` added unless it names one already."""
    out = dict(headers or {})
    if not any(k.lower() == "retry-after" for k in out):
        out["Retry-After"] = str(max(1, seconds))
    return out


class ServiceUnavailable(DanteError):
    """A dependency is down: 503 with ``Retry-After`` (every 503 gets one, see ``_dante``)."""

    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        kwargs["headers"] = retry_after(kwargs.get("headers"))
        super().__init__(message, **kwargs)


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class GatewayTimeout(DanteError):
    status_code = 504
    code = "upstream_timeout"


def error_response(
    status_code: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error shape. A 503 always carries ``Retry-After`` (the client's cue to retry)."""
    if status_code == 503:
        headers = retry_after(headers)
    return JSONResponse({"error": code, "detail": detail}, status_code=status_code, headers=headers)


def unavailable_response(detail: Any, code: str = "service_unavailable") -> JSONResponse:
    """503 + ``Retry-After``: the answer whenever a dependency is down."""
    return error_response(503, code, detail)


# The database (or the connection to it) is away, not the request wrong: PostgreSQL restarting
# or refusing connections, a connection it dropped, SQLite busy past its timeout.
_DB_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "psycopg")
_ASYNCPG_DOWN = (
    "PostgresConnectionError",  # class 08: connection exceptions
    "CannotConnectNowError",  # 57P03: starting up / shutting down
    "OperatorInterventionError",  # 57: admin shutdown, crash shutdown
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "InterfaceError",
)
_SQLITE_DOWN = ("database is locked", "database is busy", "unable to open database", "disk i/o")


# A call to another service (or NATS) that could not connect or timed out, left unhandled.
_DEPENDENCY_DOWN = (
    ConnectionError,
    TimeoutError,
    httpx.TransportError,
    aiohttp.ClientConnectionError,
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _from_db_driver(exc: BaseException) -> bool:
    """Raised inside the database layer (an ``OSError`` from elsewhere is not the database's)."""
    return any(
        str(frame.f_globals.get("__name__", "")).startswith(_DB_MODULES)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def database_unavailable(exc: BaseException) -> bool:
    """Is this failure the database being down (503, retry) rather than a bug (500)?"""
    for e in _chain(exc):
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError):
            return not isinstance(e.orig, sqlite3.Error) or _sqlite_down(e.orig)
        if isinstance(e, sqlite3.OperationalError):
            return _sqlite_down(e)
        if type(e).__module__.startswith("asyncpg") and any(
            c.__name__ in _ASYNCPG_DOWN for c in type(e).__mro__
        ):
            return True
        if isinstance(e, OSError) and _from_db_driver(e):
            return True
    return False


def _sqlite_down(e: BaseException) -> bool:
    return any(s in str(e).lower() for s in _SQLITE_DOWN)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, ours or the framework's, in the one JSON shape."""

    @app.exception_handler(DanteError)
    async def _dante(_: Request, exc: DanteError) -> JSONResponse:  # 503s get Retry-After
        if exc.status_code >= 500:
            log.warning("request.failed", error=exc.code, detail=exc.message)
        return error_response(exc.status_code, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return error_response(422, "validation_error", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(StaleDataError)
    async def _stale(_: Request, exc: StaleDataError) -> JSONResponse:
        # a compare-and-set lost to a concurrent change (scheduler ``jobs.version``)
        return error_response(
            409, "concurrent_update", "the resource changed while this request ran; retry it"
        )

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DanteError):  # raised in a middleware, outside the router's handlers
            return await _dante(request, exc)
        if database_unavailable(exc):
            log.warning("request.database_unavailable", error=type(exc).__name__, detail=str(exc))
            return unavailable_response(
                "the database is unavailable; retry shortly", code=DatabaseUnavailable.code
            )
        if isinstance(exc, _DEPENDENCY_DOWN):
            log.warning("request.dependency_unavailable", error=type(exc).__name__, detail=str(exc))
            return unavailable_response(
                "a service this request needs is unavailable; retry shortly"
            )
        log.exception("request.crashed", error=type(exc).__name__)
        return error_response(500, "internal_error", "internal error")

    # The database's own exception types reach the router's handlers; anything raised in a
    # middleware only reaches the catch-all. Both ask the same question.
    for kind in (OSError, sa_exc.DBAPIError, sqlite3.Error, *_DEPENDENCY_DOWN, Exception):
        app.add_exception_handler(kind, _unexpected)
