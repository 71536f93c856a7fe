"""One way to wait for a condition in tests: ``eventually`` (sync) and ``eventually_async``.

A check returns something truthy when the condition holds (that value is returned) or returns
something falsy / raises ``AssertionError`` while it does not yet. The time bound only stops a
hung run: it is never the assertion (speed goes into ``bench/``). On expiry the last
``AssertionError`` is re-raised, so a failure says what was last seen, not just "timed out".

Where something pushes events (NATS subscriptions), wait on them instead: ``Bus.wait_for`` in
``tests/support/daemons.py`` waits on an ``asyncio.Condition`` and never polls.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

LIMIT = 60.0  # generous: the machine running the suite may be shared and slow
INTERVAL = 0.05


def _expired(what: str, last: AssertionError | None, seen: Any) -> AssertionError:
    if last is not None:
        return last
    return AssertionError(f"{what or 'condition'} not reached; last value: {seen!r}")


def eventually(
    check: Callable[[], T], *, limit: float = LIMIT, interval: float = INTERVAL, what: str = ""
) -> T:
    """Call ``check`` until it returns something truthy and return that."""
    deadline = time.monotonic() + limit
    last: AssertionError | None = None
    seen: Any = None
    while True:
        try:
            seen = check()
            last = None
            if seen:
                return seen
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise _expired(what, last, seen)
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T] | T],
    *,
    limit: float = LIMIT,
    interval: float = INTERVAL,
    what: str = "",
) -> T:
    """``eventually`` for the event loop: ``check`` may be a coroutine function or a plain one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last: AssertionError | None = None
    seen: Any = None
    while True:
        try:
            got = check()
            seen = await got if inspect.isawaitable(got) else got
            last = None
            if seen:
                return seen
        except AssertionError as exc:
            last = exc
        if loop.time() >= deadline:
            raise _expired(what, last, seen)
        await asyncio.sleep(interval)
