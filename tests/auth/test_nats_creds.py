"""Per-provider NATS users against a real nats-server in operator mode: a daemon's user consumes
its own tasks and reports, and the server itself refuses everything else."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig

from auth_service.nats_creds import NatsIssuer
from shared.nats import PullConsumer
from shared.nats_auth import decode_jwt
from tests.support.nats_auth import Connect, daemon_user
from tests.support.wait import eventually_async

REFUSED = (NatsError, TimeoutError, asyncio.TimeoutError)


def violations(errors: list[Exception]) -> str:
    return " ".join(str(e) for e in errors).lower()


async def test_a_daemon_consumes_its_own_tasks_and_publishes_status_and_logs(
    services: nats.NATS, connect_as: Connect, issuer: NatsIssuer
) -> None:
    pid = str(uuid.uuid4())
    await services.jetstream().publish(f"tasks.dispatch.{pid}", b'{"n": 1}')
    errors: list[Exception] = []
    nc = await connect_as(daemon_user(issuer, pid), errors)
    js = nc.jetstream()
    got: list[bytes] = []

    async def handle(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(msg.data)

    stop = asyncio.Event()
    consumer = PullConsumer(js, "TASKS", f"daemon-{pid}", f"tasks.dispatch.{pid}", handle)
    consumer.idle_poll = 0.5
    run = asyncio.create_task(consumer.run(stop))
    await eventually_async(lambda: got == [b'{"n": 1}'])
    stop.set()
    await run
    await js.publish("jobs.status.job-1", b"{}", timeout=5)
    await js.publish("jobs.logs.job-1", b"{}", timeout=5)
    status = await services.jetstream().stream_info("STATUS")
    assert status.state.messages >= 1
    left = await services.jetstream().consumer_info("TASKS", f"daemon-{pid}")
    assert left.num_ack_pending == 0 and left.num_pending == 0  # acked, so gone
    assert errors == []


async def test_the_server_refuses_another_providers_tasks(
    services: nats.NATS, connect_as: Connect, issuer: NatsIssuer
) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    await services.jetstream().publish(f"tasks.dispatch.{other}", b"secret")
    errors: list[Exception] = []
    nc = await connect_as(daemon_user(issuer, mine), errors)
    js = nc.jetstream(timeout=2)  # a refused request is dropped by the server: no answer

    # The other provider's consumer, under its own name.
    with pytest.raises(REFUSED):
        await js.pull_subscribe(
            f"tasks.dispatch.{other}", durable=f"daemon-{other}", stream="TASKS"
        )
    # Its own consumer name with the other provider's filter.
    with pytest.raises(REFUSED):
        await js.add_consumer(
            "TASKS",
            ConsumerConfig(
                name=f"daemon-{mine}",
                durable_name=f"daemon-{mine}",
                filter_subject=f"tasks.dispatch.{other}",
            ),
        )
    # A plain subscription to the subject, or to every inbox (where fetched tasks arrive).
    await nc.subscribe(f"tasks.dispatch.{other}")
    await nc.subscribe("_INBOX.>")
    # Creating streams, or dispatching to someone else.
    with pytest.raises(REFUSED):
        await js.add_stream(name="STEAL", subjects=["tasks.>"])
    await nc.publish(f"tasks.dispatch.{other}", b"forged")
    await nc.flush()
    await eventually_async(lambda: f'publish to "tasks.dispatch.{other}"' in violations(errors))
    seen = violations(errors)
    assert f'subscription to "tasks.dispatch.{other}"' in seen
    assert 'subscription to "_inbox.>"' in seen
    assert f'publish to "$js.api.consumer.info.tasks.daemon-{other}"' in seen
    assert f'publish to "$js.api.consumer.create.tasks.daemon-{mine}.tasks.dispatch.{other}"' in (
        seen
    )
    assert f'publish to "tasks.dispatch.{other}"' in seen
    # Nothing was taken from the other provider: its task is still there, undelivered.
    info = await services.jetstream().stream_info(
        "TASKS", subjects_filter=f"tasks.dispatch.{other}"
    )
    assert (info.state.subjects or {}).get(f"tasks.dispatch.{other}") == 1


async def test_no_credentials_no_connection(connect_as: Connect) -> None:
    with pytest.raises(REFUSED):
        await connect_as(None, [])


def test_the_issued_jwt_is_bound_to_the_key_and_expires(issuer: NatsIssuer) -> None:
    creds = daemon_user(issuer, "p-1")
    claims = decode_jwt(creds.jwt)
    assert claims["sub"] == creds.key.public_key
    assert claims["nats"]["issuer_account"] == issuer.account
    assert claims["exp"] - claims["iat"] == 600
    assert creds.inbox_prefix == "_INBOX.p-1"
