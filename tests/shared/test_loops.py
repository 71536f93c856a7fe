"""shared.loops: the one periodic loop and the one bounded retry, with their stated policy."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from shared.app import create_service_app, service_state
from shared.loops import Backoff, LoopFailing, Stopped, every, retry
from shared.settings import ServiceSettings

FAST = Backoff(base=0.001, cap=0.005, jitter=0.5)


def failures(loop: str) -> float:
    return REGISTRY.get_sample_value("dante_loop_failures_total", {"loop": loop}) or 0.0


def unhealthy(loop: str) -> float | None:
    return REGISTRY.get_sample_value("dante_loop_unhealthy", {"loop": loop})


def test_back_off_doubles_with_jitter_up_to_the_cap_and_never_below_the_floor() -> None:
    b = Backoff(base=10, cap=60, jitter=0.2, floor=10)
    calm = [b.delay(0) for _ in range(200)]
    assert all(8 <= d <= 12 for d in calm) and len(set(calm)) > 100  # spread, not in step
    assert all(32 <= b.delay(2) <= 48 for _ in range(50))
    assert all(48 <= b.delay(30) <= 72 for _ in range(50))  # capped at 60 s ± jitter


async def test_a_loop_that_keeps_failing_is_loud_unhealthy_and_recovers() -> None:
    stop = asyncio.Event()
    ready: dict[str, Any] = {}
    runs: list[str] = []
    states: list[bool] = []  # ready check passing, seen before each run

    async def check_passes() -> bool:
        try:
            await ready["loop.t-recover"]()
        except LoopFailing:
            return False
        return True

    async def work() -> None:
        states.append(await check_passes())
        runs.append("run")
        if len(runs) <= 4:
            raise ConnectionError("down")
        if len(runs) == 6:
            stop.set()

    with structlog.testing.capture_logs() as logs:
        await every("t-recover", work, 0.001, stop=stop, backoff=FAST, ready=ready)
    assert len(runs) == 6
    # Runs 1-3 saw a healthy loop; after the 3rd failure it is unhealthy until a success.
    assert states == [True, True, True, False, False, True]
    failed = [e for e in logs if e["event"] == "t-recover.failed"]
    assert [e["log_level"] for e in failed] == ["warning", "warning", "error", "error"]
    assert [e["failures"] for e in failed] == [1, 2, 3, 4] and "down" in failed[2]["error"]
    resumed = [e for e in logs if e["event"] == "t-recover.resumed"]
    assert [e["after_failures"] for e in resumed] == [4]
    assert failures("t-recover") == 4
    assert unhealthy("t-recover") == 0
    assert "loop.t-recover" not in ready  # an ended loop no longer answers for the process


async def test_ready_answers_503_naming_the_failing_loop() -> None:
    settings = ServiceSettings(service_name="loops-test")

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):  # type: ignore[no-untyped-def]
        yield

    app = create_service_app(settings, title="t", lifespan=lifespan)
    stop = asyncio.Event()
    failing = asyncio.Event()
    count = 0

    async def work() -> None:
        nonlocal count
        count += 1
        if count >= 3:
            failing.set()
        raise RuntimeError("database unreachable")

    loop = asyncio.create_task(
        every(
            "t-ready", work, 0.001, stop=stop, backoff=FAST, ready=service_state(app).ready_checks
        )
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await failing.wait()
        resp = await c.get("/ready")
        assert resp.status_code == 503
        body = resp.json()
        assert body["error"] == "not_ready"
        assert body["detail"]["loop.t-ready"] == "unavailable: LoopFailing"
        assert unhealthy("t-ready") == 1
        stop.set()
        await loop
        assert (await c.get("/ready")).status_code == 200


async def test_a_hint_wakes_the_loop_and_a_returned_delay_replaces_the_interval() -> None:
    stop = asyncio.Event()
    wake = asyncio.Event()
    runs = 0
    second = asyncio.Event()

    async def work() -> float | None:
        nonlocal runs
        runs += 1
        if runs == 1:
            return 0.0  # "more is waiting": run again at once, no hint needed
        if runs == 2:
            second.set()
            return None  # the interval (an hour) unless a hint comes
        stop.set()
        return None

    loop = asyncio.create_task(every("t-wake", work, 3600, stop=stop, wake=wake))
    await second.wait()
    wake.set()
    await loop
    assert runs == 3


async def test_retry_is_bounded_by_attempts_and_raises_the_last_error() -> None:
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"try {calls}")

    with pytest.raises(ConnectionError, match="try 4"):
        await retry("t-bounded", work, attempts=4, backoff=FAST)
    assert calls == 4


async def test_retry_gives_up_at_once_when_told_and_returns_a_result() -> None:
    tries: list[str] = []

    async def rejected() -> None:
        tries.append("rejected")
        raise PermissionError("HTTP 403")

    with pytest.raises(PermissionError):
        await retry("t-giveup", rejected, backoff=FAST, give_up=lambda e: "403" in str(e))
    assert tries == ["rejected"]

    async def flaky() -> str:
        tries.append("flaky")
        if len(tries) < 4:
            raise ConnectionError("blip")
        return "ok"

    assert await retry("t-flaky", flaky, backoff=FAST) == "ok"
    assert tries.count("flaky") == 3


async def test_retry_is_bounded_by_time_too() -> None:
    async def down() -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError):
        await retry("t-within", down, within=0.05, backoff=FAST)
    assert failures("t-within") >= 2


async def test_retry_stops_when_the_stop_event_is_set() -> None:
    stop = asyncio.Event()
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            stop.set()
        raise ConnectionError("down")

    with pytest.raises(Stopped):
        await retry("t-stop", work, stop=stop, backoff=FAST)
    assert calls == 3
