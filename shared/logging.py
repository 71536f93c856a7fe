"""Structured logging: events with fields, JSON outside dev, a correlation id per request/job."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeGuard

import structlog
from structlog.typing import EventDict, Processor

CORRELATION_HEADER = "X-Request-ID"
"""HTTP header carrying the correlation id (the gateway sets it; clients may supply one)."""

_SECRET_KEYS = ("password", "token", "secret", "api_key", "authorization", "refresh")


@functools.lru_cache(maxsize=4096)
def _secret(key: str) -> bool:
    """Whether a field's name says secret. Remembered per name: field names are few, and the
    test ran for every field of every line (~1/6 of a log line's CPU, issue 12)."""
    return key != "event" and any(s in key.lower() for s in _SECRET_KEYS)


def _redact(_: object, __: str, event: EventDict) -> EventDict:
    """Belt and braces: a field whose name says secret never reaches a log line."""
    for key in list(event):
        if _secret(key):
            event[key] = "[redacted]"
    return event


TRACEBACK_FRAMES = 6
"""Frames kept per exception in a console (dev) traceback: where it was raised and the few
calls above. A full one through FastAPI, SQLAlchemy and asyncpg ran to ~150 lines, and rich's
rendering with locals to ~8,000 (about 3 s of CPU per crash; issue 18)."""


def short_exc_info(_: object, __: str, event: EventDict) -> EventDict:
    """Like ``format_exc_info``, but only the innermost frames of each chained exception."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if exc_info and exc_info[0] is not None:
        lines = traceback.format_exception(*exc_info, limit=-TRACEBACK_FRAMES)
        event["exception"] = "".join(lines).rstrip()
    return event


def _not_bind_banner(record: logging.LogRecord) -> bool:
    """Drop uvicorn's "Uvicorn running on http://…:<port>": our ``service.started`` line says
    the same with fields, and in ``make dev`` six of them pointed newcomers at internal ports
    instead of the gateway."""
    return not str(record.msg).startswith("Uvicorn running on")


def configure_logging(
    service: str, *, json: bool, level: str = "INFO", short_tracebacks: bool | None = None
) -> None:
    """Configure structlog and the stdlib root logger (uvicorn, alembic) to one format.

    ``short_tracebacks`` (default: with the console format, i.e. in dev) keeps a few frames
    per exception; JSON logs keep the whole traceback on one line.
    """
    short = (not json) if short_tracebacks is None else short_tracebacks
    exc_formatter = short_exc_info if short else structlog.processors.format_exc_info
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    # Our own events are rendered by structlog and written straight to stderr: through the
    # stdlib (two LogRecords, a caller lookup, a handler and a formatter per line) a line cost
    # ~90 us, twice the gateway's own CPU for a job submission (issue 12). Other libraries'
    # records still go through the stdlib handler below, rendered the same way.
    structlog.configure(
        processors=[*shared, exc_formatter, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # uvicorn's and other libraries' records get the same traceback treatment
        foreign_pre_chain=[*shared, exc_formatter],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log repeats what our request middleware already logs with fields.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx logs every request it sends at INFO ("HTTP Request: …"): our own lines say what
    # matters, and the idle cluster's heartbeats and polls repeated it every few seconds.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    uvicorn_error = logging.getLogger("uvicorn.error")
    if _not_bind_banner not in uvicorn_error.filters:
        uvicorn_error.addFilter(_not_bind_banner)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def valid_correlation_id(value: str | None) -> TypeGuard[str]:
    """Accept client-supplied ids only when short and plain, so they are safe to log and echo."""
    return (
        value is not None and 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)
    )


@contextmanager
def correlation(correlation_id: str | None, **fields: object) -> Iterator[None]:
    """Bind a correlation id (and other fields) to every log line inside the block."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id, **fields):
        yield
