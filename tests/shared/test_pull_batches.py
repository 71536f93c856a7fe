"""``PullConsumer`` with a batch handler (issue 12): a fetched batch is applied at once and then
acked; a batch that fails is handled one message at a time, so a bad message is settled alone
and every good one is still applied exactly once. Real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
import structlog

from shared.nats import Poison, PullConsumer, ensure_streams
from tests.support.wait import eventually_async


async def _run(js: Any, subject: str, datas: list[bytes]) -> tuple[list[list[bytes]], list[bytes]]:
    """Publish ``datas`` on ``subject``, then consume them; (batches applied, singles handled)."""
    for i, data in enumerate(datas):
        await js.publish(subject, data, headers={"Nats-Msg-Id": f"{subject}-{i}"})
    batches: list[list[bytes]] = []
    singles: list[bytes] = []

    async def on_batch(msgs: list[Any]) -> None:
        got = [m.data for m in msgs]
        if b"bad" in got:
            raise ValueError("a bad message in the batch")
        batches.append(got)

    async def on_one(msg: Any) -> None:
        if msg.data == b"bad":
            raise Poison("bad")
        singles.append(msg.data)

    durable = f"t-{uuid.uuid4().hex[:8]}"
    consumer = PullConsumer(
        js, "STATUS", durable, subject, on_one, idle_poll=0.2, batch_handler=on_batch
    )
    good = sorted(d for d in datas if d != b"bad")
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually_async(lambda: sorted(singles + [d for b in batches for d in b]) == good)

    # everything settled: nothing pending, nothing waiting for an ack (the bad one termed)
    async def settled() -> bool:
        info = await js.consumer_info("STATUS", durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually_async(settled, what="every message acked or termed")
    stop.set()
    await task
    return batches, singles


async def test_a_fetched_batch_is_applied_at_once_and_a_bad_batch_falls_back_to_one_by_one(
    own_nats: str,
) -> None:
    nc = await nats.connect(own_nats)
    js = nc.jetstream()
    await ensure_streams(js, ["STATUS"])
    # the first message is taken alone (an idle consumer long-polls for one), the rest at once
    batches, singles = await _run(js, f"jobs.status.{uuid.uuid4().hex}", [b"g1", b"g2", b"g3"])
    assert singles == [b"g1"] and batches == [[b"g2", b"g3"]]
    with structlog.testing.capture_logs() as logs:
        batches, singles = await _run(
            js, f"jobs.status.{uuid.uuid4().hex}", [b"g4", b"g5", b"bad", b"g6"]
        )
    assert batches == []  # the batch with the bad message was not applied as a batch
    assert sorted(singles) == [b"g4", b"g5", b"g6"]  # each good one exactly once
    events = [e["event"] for e in logs]
    assert "consumer.batch_fallback" in events and "consumer.poison" in events
    await nc.close()
