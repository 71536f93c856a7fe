"""Every service ensures its streams when it starts, all at once (a cluster's processes start
together, on Kubernetes and in ``tests/operate``). On a 3-node JetStream cluster that has only
just elected its meta leader, two processes creating the same stream time out or are told there
are no suitable peers; ``ensure_streams`` rides that out instead of failing the start (the
scheduler of the scale-out cluster once exited 3 on it in CI). Real nats-server cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from localdev.cluster import free_port
from shared.nats import REPLICAS_ENV, STREAMS, ensure_streams
from tests.support.scaleout import NatsNode
from tests.support.wait import eventually

# what the services ensure when they start (api_gateway, registry, billing, scheduler twice)
STARTS: list[list[str] | None] = [["JOBS", "LOGS"], ["EVENTS"], ["USAGE"], None, None]


@pytest.fixture
def fresh_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    monkeypatch.setenv(REPLICAS_ENV, "3")
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    nodes = [NatsNode(i, tmp_path, ports) for i in range(3)]
    for node in nodes:
        node.start()
    try:
        # the moment a launcher would start the services: a meta leader, nothing more
        eventually(
            lambda: all(n.jetstream_ready() for n in nodes) and nodes[0].meta_leader(),
            limit=60,
            interval=0.1,
            what="a JetStream meta leader",
        )
        yield [n.url for n in nodes]
    finally:
        for node in nodes:
            node.stop()


async def test_every_service_ensuring_its_streams_at_once_on_a_new_cluster(
    fresh_cluster: list[str],
) -> None:
    async def start(names: list[str] | None) -> None:
        nc = await nats.connect(servers=fresh_cluster)
        try:
            await ensure_streams(nc.jetstream(), names)
        finally:
            await nc.close()

    await asyncio.gather(*(start(names) for names in STARTS))

    nc = await nats.connect(servers=fresh_cluster)
    try:
        js = nc.jetstream()
        for name in STREAMS:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
            assert info.config.subjects == STREAMS[name].subjects, name
    finally:
        await nc.close()
