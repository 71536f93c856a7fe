"""Nothing the platform accepted is dropped by a redelivery bound (issue 18), on a real
nats-server: a message whose handling keeps failing backs off, is dead-lettered (counted,
logged), replayed once old enough, and handled; a submission whose intake keeps failing is
stored as a failed job with the reason (real scheduler, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

import nats
import pytest
import structlog
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from shared.contracts import JobSubmitted
from shared.db import utcnow
from shared.nats import (
    DEAD_REASON,
    DEAD_SUBJECT,
    REPLAYS,
    PullConsumer,
    ensure_streams,
    publish,
    replay_dead_letters,
)
from tests.support.wait import eventually_async


def dead_count(consumer: str, action: str) -> float:
    labels = {"consumer": consumer, "action": action}
    return REGISTRY.get_sample_value("dante_nats_dead_letters_total", labels) or 0.0


async def test_a_failing_message_is_dead_lettered_then_replayed_and_handled(
    own_nats: str,
) -> None:
    nc = await nats.connect(own_nats)
    js = nc.jetstream()
    await ensure_streams(js, ["STATUS", "DEAD"])
    durable = f"t-{uuid.uuid4().hex[:8]}"
    failing = True
    seen: list[tuple[int, str | None]] = []
    handled: list[bytes] = []

    async def handler(msg: Any) -> None:
        seen.append((msg.metadata.num_delivered, (msg.headers or {}).get(REPLAYS)))
        if failing:
            raise ConnectionRefusedError("database is away")
        handled.append(msg.data)

    consumer = PullConsumer(
        js,
        "STATUS",
        durable,
        "jobs.status.*",
        handler,
        idle_poll=0.2,
        dead_letters=True,
        max_deliver=3,
        backoff_base=0.05,
        backoff_cap=0.2,
        replay_after=1.0,
    )
    # a watcher on the dead letters, to see what was stored and with which headers
    letters: list[Any] = []

    async def on_letter(msg: Any) -> None:
        letters.append(msg)

    await nc.subscribe(f"dead.{durable}", cb=on_letter)
    before = dead_count(durable, "stored")
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(consumer.run(stop))
        await js.publish("jobs.status.job-1", b'{"report": 1}', headers={"Nats-Msg-Id": "r1"})
        await eventually_async(lambda: letters)
        assert [n for n, _ in seen] == [1, 2, 3]  # the bound, then no 4th delivery
        assert dead_count(durable, "stored") == before + 1
        letter = letters[0]
        assert letter.data == b'{"report": 1}'
        assert letter.headers[DEAD_SUBJECT] == "jobs.status.job-1"
        assert "database is away" in letter.headers[DEAD_REASON]
        # the database comes back: the letter is replayed (once old enough) and handled
        failing = False
        await eventually_async(lambda: handled)
        stop.set()
        await task
    assert handled == [b'{"report": 1}']
    assert seen[-1] == (1, "1")  # a fresh delivery of the replayed message
    events = [e["event"] for e in logs]
    assert "consumer.dead_lettered" in events and "dead_letter.replayed" in events
    assert dead_count(durable, "replayed") >= 1
    # replayed letters leave DEAD: an operator's replay finds nothing to send again
    assert await replay_dead_letters(js, durable) == 0
    await nc.close()


async def test_a_letter_past_its_replays_is_kept_until_an_operator_replays_it(
    own_nats: str,
) -> None:
    nc = await nats.connect(own_nats)
    js = nc.jetstream()
    await ensure_streams(js, ["STATUS", "DEAD"])
    durable = f"t-{uuid.uuid4().hex[:8]}"
    fixed = False
    handled: list[bytes] = []

    async def handler(msg: Any) -> None:
        if not fixed:
            raise ValueError("a bad value")
        handled.append(msg.data)

    consumer = PullConsumer(
        js,
        "STATUS",
        durable,
        "jobs.status.*",
        handler,
        idle_poll=0.2,
        dead_letters=True,
        max_deliver=2,
        backoff_base=0.05,
        backoff_cap=0.1,
        replay_after=0.3,
        max_replays=1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await js.publish("jobs.status.job-2", b"payload")
    await eventually_async(lambda: dead_count(durable, "kept") >= 1)
    assert dead_count(durable, "stored") == 2 and dead_count(durable, "replayed") == 1
    stop.set()
    await task
    # the cause is fixed; the operator replays what was kept, with the scheduler's CLI
    fixed = True
    env = {**os.environ, "DANTE_SCHEDULER_NATS_URL": own_nats}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scheduler",
        "replay-dead-letters",
        durable,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and f"replayed 1 dead letters of {durable}" in out.decode()
    assert await replay_dead_letters(js, durable) == 0  # nothing left to replay
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually_async(lambda: handled)
    stop.set()
    await task
    assert handled == [b"payload"]
    await nc.close()


@pytest.fixture
def db_url(pg_url: str) -> str:
    """PostgreSQL only: the failure used below is a PostgreSQL trigger."""
    return pg_url


REFUSE_QUEUED_INSERT = (
    """CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
    BEGIN
      IF NEW.name = 'poison' AND NEW.state = 'queued' THEN
        RAISE EXCEPTION 'intake refused by the test';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
)
"""A job the database keeps refusing to store as queued (a valid message whose every intake
fails), while storing it as failed works: what a bad value or a broken row would do."""


async def test_a_submission_whose_intake_keeps_failing_ends_failed_with_the_reason(
    own_nats: str,
    scheduler_factory: Callable[..., Any],
    mint_token: Callable[..., str],
    db_url: str,
) -> None:
    owner = str(uuid.uuid4())
    headers = {"authorization": f"Bearer {mint_token('requester', owner)}"}
    fast = {"max_deliver": 3, "retry_backoff_cap_seconds": 0.2}
    async with scheduler_factory(**fast) as (_, client):
        engine = create_async_engine(db_url)
        async with engine.begin() as conn:
            for statement in REFUSE_QUEUED_INSERT:
                await conn.exec_driver_sql(statement)
        await engine.dispose()
        nc = await nats.connect(own_nats)
        js = nc.jetstream()
        ok_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
        for job_id, name in ((ok_id, "fine"), (bad_id, "poison")):
            sub = JobSubmitted(
                job_id=job_id,
                owner_id=owner,
                type="script",
                name=name,
                spec={"params": {"script_content": "echo hi"}},
                submitted_at=utcnow(),
            )
            await publish(js, "jobs.submitted", sub, msg_id=job_id)

        async def state(job_id: str) -> dict[str, Any] | None:
            r = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
            return r.json() if r.status_code == 200 else None

        bad = await eventually_async(lambda: state(bad_id), what="the poison job's record")
        assert bad["status"] == "failed"
        assert "intake failed" in bad["error"] and "refused by the test" in bad["error"]
        assert bad["name"] == "poison"
        assert (await state(ok_id))["status"] == "queued"
        await nc.close()
