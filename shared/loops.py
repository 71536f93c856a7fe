"""One periodic loop and one bounded retry: every background loop and retry goes through these.

The policy, stated once (Prefect's ``critical_service_loop`` is the model, but a process here
does not exit on a failing loop: it stays up, says so, and is taken out of rotation):

- **Back-off.** After ``n`` consecutive failures the next try waits
  ``max(interval, min(cap, base * 2**n))``, with ±``jitter`` so a fleet restarted together does
  not retry in step. One success resets it.
- **Said every time, loud after** ``unhealthy_after`` **consecutive failures.** Each failure
  logs ``<name>.failed`` (failures, error, next_in_s) and counts in
  ``dante_loop_failures_total{loop}``: at warning, then at error with ``unhealthy=true`` once
  the run of failures reaches ``unhealthy_after``; then the gauge ``dante_loop_unhealthy{loop}``
  is 1 and (given the app's ready checks) ``/ready`` answers 503 naming ``loop.<name>``. The
  next success logs ``<name>.resumed`` and clears both. A bounded ``retry`` is not a process's
  health unless its caller says so (``unhealthy_after=None`` by default).
- **Stop.** A loop ends when ``stop`` is set (it never starts another run after that); a retry
  waiting on ``stop`` raises :class:`Stopped` instead of trying again.
- **What is retried.** ``retry_on`` (default: any ``Exception``); anything else propagates at
  once, as does ``asyncio.CancelledError``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger(__name__)

T = TypeVar("T")
ReadyChecks = MutableMapping[str, Callable[[], Awaitable[Any]]]

loop_failures = Counter("dante_loop_failures_total", "Failed runs of a background loop.", ["loop"])
loop_unhealthy = Gauge(
    "dante_loop_unhealthy", "1 while a loop has failed too often in a row.", ["loop"]
)


class Stopped(Exception):
    """We were told to stop while still retrying."""


class LoopFailing(Exception):
    """A loop failed ``unhealthy_after`` times in a row (what ``/ready`` reports)."""


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential back-off: ``base`` doubling per failure, never past ``cap``, never
    below ``floor`` (a periodic loop's own interval)."""

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5
    floor: float = 0.0

    def delay(self, failures: int) -> float:
        raw = self.base * 2 ** min(failures, 16) if failures else self.floor
        return max(self.floor, min(self.cap, raw)) * random.uniform(
            1 - self.jitter, 1 + self.jitter
        )


class Delays(Protocol):
    """What ``every`` asks between runs: ``delay(0)`` after a success, ``delay(n)`` after the
    n-th failure in a row."""

    def delay(self, failures: int) -> float: ...


@dataclass
class LeaseBackoff:
    """Back-off for a loop that keeps a lease alive against a TTL (a heartbeat): one failed
    beat must never let the lease lapse.

    ``delay(0)`` (a success) is the interval ±``jitter`` and marks the lease renewed now.
    After a failure the next try comes before ``renewed + ttl - interval`` (halving what is
    left of that window, never closer than ``min_gap``), then before ``renewed + ttl``; only a
    lease already lapsed backs off further, from the interval doubling up to ``cap``, which is
    held to ``ttl - interval`` so a registry back from an outage hears within its grace of one
    TTL.
    """

    interval: float
    ttl: float
    cap: float = 60.0
    jitter: float = 0.2
    min_gap: float = 0.5
    clock: Callable[[], float] = time.monotonic
    renewed: float = field(default=float("-inf"))

    def delay(self, failures: int) -> float:
        now = self.clock()
        spread = random.uniform(1 - self.jitter, 1 + self.jitter)
        if failures == 0:
            self.renewed = now
            return self.interval * spread
        cap = min(self.cap, max(self.min_gap, self.ttl - self.interval))
        regular = min(cap, self.interval * 2 ** min(failures, 16)) * spread
        for edge in (self.renewed + self.ttl - self.interval, self.renewed + self.ttl):
            if now < edge:
                return max(self.min_gap, min(regular, (edge - now) / 2))
        return max(self.min_gap, regular)


async def _pause(stop: asyncio.Event | None, seconds: float, wake: asyncio.Event | None) -> None:
    """Sleep ``seconds`` or until ``stop`` (or ``wake``) is set, whichever is first."""
    events = [e for e in (stop, wake) if e is not None]
    if not events:
        await asyncio.sleep(seconds)
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class _Health:
    """One loop's consecutive-failure count and how it shows in logs, metrics and /ready."""

    def __init__(self, name: str, unhealthy_after: int | None, ready: ReadyChecks | None) -> None:
        self.name = name
        self.unhealthy_after = unhealthy_after
        self.failures = 0
        self.last_error = ""
        self.ready = ready
        if ready is not None:
            ready[f"loop.{name}"] = self.check

    @property
    def unhealthy(self) -> bool:
        return self.unhealthy_after is not None and self.failures >= self.unhealthy_after

    async def check(self) -> None:
        if self.unhealthy:
            raise LoopFailing(f"{self.name}: {self.failures} failures, last: {self.last_error}")

    def failed(self, exc: BaseException, next_in: float) -> None:
        self.failures += 1
        self.last_error = str(exc) or type(exc).__name__
        loop_failures.labels(self.name).inc()
        fields = {"loop": self.name, "error": self.last_error, "failures": self.failures}
        if self.unhealthy:
            loop_unhealthy.labels(self.name).set(1)
            log.error(f"{self.name}.failed", **fields, unhealthy=True, next_in_s=round(next_in, 2))
        else:
            log.warning(f"{self.name}.failed", **fields, next_in_s=round(next_in, 2))

    def succeeded(self) -> None:
        if self.failures:
            loop_unhealthy.labels(self.name).set(0)
            log.info(f"{self.name}.resumed", loop=self.name, after_failures=self.failures)
        self.failures = 0

    def close(self) -> None:
        if self.unhealthy:
            loop_unhealthy.labels(self.name).set(0)
        if self.ready is not None:
            self.ready.pop(f"loop.{self.name}", None)


async def every(
    name: str,
    work: Callable[[], Awaitable[float | None]],
    interval: float,
    *,
    stop: asyncio.Event,
    backoff: Delays | None = None,
    unhealthy_after: int = 3,
    ready: ReadyChecks | None = None,
    wake: asyncio.Event | None = None,
    settle: float = 0.0,
    first_after: float | None = None,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    give_up: Callable[[BaseException], bool] = lambda exc: False,
) -> None:
    """Run ``work`` every ``interval`` seconds until ``stop`` is set; failures back off by
    ``backoff`` (default: from the interval, ±20 %, up to a minute).

    ``work`` may return the seconds to wait before the next run instead (0: at once).
    ``wake`` ends a wait early (a hint that there is work), after a ``settle`` pause that lets a
    burst of hints be served by one run. ``first_after`` delays the first run (default: at once).
    An error for which ``give_up`` answers true ends the loop by propagating.
    """
    health = _Health(name, unhealthy_after, ready)
    backoff = backoff or Backoff(base=interval, cap=max(60.0, interval), jitter=0.2, floor=interval)
    try:
        if first_after:
            await _pause(stop, first_after, None)
        while not stop.is_set():
            if wake is not None:
                wake.clear()
            try:
                chosen = await work()
            except retry_on as exc:
                if give_up(exc):
                    raise
                delay = backoff.delay(health.failures + 1)
                health.failed(exc, delay)
            else:
                health.succeeded()
                delay = backoff.delay(0) if chosen is None else chosen
            if delay <= 0 or stop.is_set():
                continue
            await _pause(stop, delay, wake)
            if wake is not None and wake.is_set() and settle and not stop.is_set():
                await asyncio.sleep(settle)
    finally:
        health.close()


async def retry(
    name: str,
    work: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event | None = None,
    attempts: int | None = None,
    within: float | None = None,
    backoff: Backoff = Backoff(),
    unhealthy_after: int | None = None,
    ready: ReadyChecks | None = None,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    give_up: Callable[[BaseException], bool] = lambda exc: False,
) -> T:
    """``await work()`` until it returns, retrying failures with ``backoff``.

    Bounded: after ``attempts`` tries, or once ``within`` seconds have passed (None: no
    limit), the last error is raised; while waiting to retry, a set ``stop`` raises
    :class:`Stopped`. An error for which ``give_up``
    answers true is raised at once (a 4xx will not get better).
    """
    health = _Health(name, unhealthy_after, ready)
    deadline = None if within is None else time.monotonic() + within
    try:
        while True:
            try:
                result = await work()
            except retry_on as exc:
                delay = backoff.delay(health.failures + 1)
                spent = (attempts is not None and health.failures + 1 >= attempts) or (
                    deadline is not None and time.monotonic() >= deadline
                )
                if give_up(exc) or spent:
                    loop_failures.labels(name).inc()
                    raise
                health.failed(exc, delay)
                await _pause(stop, delay, None)
                if stop is not None and stop.is_set():
                    raise Stopped(name) from exc
            else:
                health.succeeded()
                return result
    finally:
        health.close()
