"""The error hierarchy and the one handler that renders it as ``{"error": code, "detail": ...}``."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


class ServiceUnavailable(DanteError):
    status_code = 503
    code = "service_unavailable"


class GatewayTimeout(DanteError):
    status_code = 504
    code = "upstream_timeout"


def error_response(
    status_code: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status_code, headers=headers)


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
    async def _dante(_: Request, exc: DanteError) -> JSONResponse:
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

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request.crashed", error=type(exc).__name__)
        return error_response(500, "internal_error", "internal error")
