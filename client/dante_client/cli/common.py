"""What every command shares: the session, output (tables or ``--json``), exit codes, errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dante_client import config
from dante_client.client import Client
from dante_client.errors import AuthenticationError, DanteError

# Exit codes besides the job's own (docs/client.md). A job's own code passes through as is.
EXIT_FAILED = 1  # the job failed without an exit code of its own (e.g. nothing could run it)
EXIT_ERROR = 2  # the command itself failed: bad usage, a bad job file, an API error
EXIT_TIMED_OUT = 124  # like coreutils `timeout`
EXIT_CANCELLED = 125
EXIT_INTERRUPTED = 130  # Ctrl-C: detached, the job keeps running

# Colour and progress bars only on a terminal (rich checks isatty; NO_COLOR is honoured).
# Piped output gets wide lines (no folding of ids mid-way) rather than rich's 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    url: str | None = None


state = State()

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")
]


def session_url() -> str:
    return os.environ.get("DANTE_URL") or state.url or config.load().url


def client() -> Client:
    """A client for the stored session (or ``DANTE_TOKEN``), its rotations saved back."""
    profile = config.load()
    url = os.environ.get("DANTE_URL") or state.url or profile.url
    token = os.environ.get("DANTE_TOKEN")
    if token:
        return Client(url, token=token)
    if not (profile.access_token or profile.refresh_token):
        raise AuthenticationError("not logged in")
    return Client(
        url,
        token=profile.access_token,
        refresh_token=profile.refresh_token,
        expires_at=profile.expires,
        token_store=config.FileTokenStore(profile),
    )


def fail(message: str, code: int = EXIT_ERROR, hint: str | None = None) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    if hint:
        err.print(f"[dim]hint: {hint}[/dim]")
    raise typer.Exit(code)


def report(exc: DanteError) -> NoReturn:
    fail(exc.message, EXIT_ERROR, exc.hint())


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    t = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold", no_wrap=col in ("JOB", "PROVIDER", "KEY", "USER"))
    for row in rows:
        t.add_row(*(v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in row))
    out.print(t)


def when(at: datetime | None) -> str:
    """A short local-ish time: how long ago, to the second under an hour."""
    if at is None:
        return ""
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    secs = int((datetime.now(UTC) - at).total_seconds())
    if secs < 0:
        return at.isoformat(timespec="seconds")
    if secs < 60:
        return f"{secs}s ago"
    if secs < 3600:
        return f"{secs // 60}m ago"
    if secs < 86400:
        return f"{secs // 3600}h ago"
    return at.date().isoformat()


def size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


STATE_STYLE = {
    "queued": "yellow",
    "dispatched": "cyan",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
}


def styled_state(status: str) -> Text:
    return Text(status, style=STATE_STYLE.get(status, ""))
