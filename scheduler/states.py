"""The job state machine: the legal transitions (``SchedulerService.transition`` applies them)."""

from __future__ import annotations

from scheduler.errors import IllegalTransition
from shared.contracts import JobState as S

ALLOWED: dict[S, frozenset[S]] = {
    S.QUEUED: frozenset({S.DISPATCHED, S.CANCELLED, S.FAILED}),
    S.DISPATCHED: frozenset({S.RUNNING, S.QUEUED, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.QUEUED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMED_OUT: frozenset(),
}
"""From each state, where a job may go. Back to ``queued`` only as a retry (attempt + 1)."""


__all__ = ["ALLOWED", "IllegalTransition", "check"]


def check(current: str, target: S) -> None:
    if target not in ALLOWED[S(current)]:
        raise IllegalTransition(f"a {current} job cannot become {target}")
