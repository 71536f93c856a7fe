"""What can go wrong talking to the gateway, one class per thing a caller would handle."""

from __future__ import annotations

from typing import Any


class DanteError(Exception):
    """Any failure of a call. ``status`` is the HTTP status (0: no answer at all)."""

    status: int = 0

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "error", detail: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code
        self.detail = detail

    def hint(self) -> str | None:
        """A next step for a person at a terminal, if there is an obvious one."""
        return None


class Unreachable(DanteError):
    """No answer from the gateway: wrong URL, it is down, or the network is."""

    def hint(self) -> str | None:
        return "is the gateway running? check --url / DANTE_URL (make dev prints it)"


class AuthenticationError(DanteError):
    status = 401

    def hint(self) -> str | None:
        return "your session has expired or was revoked: run `dante login`"


class PermissionDenied(DanteError):
    status = 403

    def hint(self) -> str | None:
        return "your account's role does not allow this (see `dante whoami`)"


class NotFound(DanteError):
    status = 404


class Conflict(DanteError):
    status = 409


class InvalidRequest(DanteError):
    """400/413/422: the request itself was refused; ``detail`` says why."""

    status = 422


class RateLimited(DanteError):
    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def hint(self) -> str | None:
        wait = f" in {self.retry_after:g} s" if self.retry_after else ""
        return f"too many requests: try again{wait}"


class ServiceUnavailable(DanteError):
    """502/503/504 that did not go away with retries."""

    status = 503

    def hint(self) -> str | None:
        return "the platform is (partly) down or overloaded; try again shortly"


class JobFileError(DanteError):
    """A job file that does not follow the schema; the message names the file and line."""


_BY_STATUS: dict[int, type[DanteError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI-style validation errors
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def from_response(status: int, body: Any, headers: dict[str, str] | None = None) -> DanteError:
    """The error for a non-2xx answer; the body is the platform's ``{"error", "detail"}``."""
    code, detail = "http_error", None
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        detail = body.get("detail")
    elif body:
        detail = str(body)[:500]
    message = _detail_text(detail) if detail not in (None, "") else f"HTTP {status} ({code})"
    cls = _BY_STATUS.get(status, DanteError)
    if cls is DanteError and status >= 500:
        cls = ServiceUnavailable if status in (502, 503, 504) else DanteError
    if cls is RateLimited:
        return RateLimited(
            message,
            status=status,
            code=code,
            detail=detail,
            retry_after=retry_after_seconds((headers or {}).get("retry-after")),
        )
    return cls(message, status=status, code=code, detail=detail)


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
