"""Property tests of the matcher (hypothesis): whatever the fleet and the demands, a round never
over-allocates a GPU index, never picks a stale/offline/unhealthy GPU, honours every constraint
and picks the best fit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import placement
from scheduler.dispatch import capacity_of
from scheduler.models import ProviderView

MODELS = ["NVIDIA H100 80GB", "NVIDIA A100-SXM4-40GB", "RTX 4090", "Tesla T4"]
PATTERNS = [None, "*H100*", "*A100*", "RTX*", "*"]
CAPS = ["7.5", "8.0", "8.6", "8.9", "9.0", None]

gpu = st.builds(
    lambda name, mem, healthy, cc: (name, mem, healthy, cc),
    st.sampled_from(MODELS),
    st.sampled_from([16384, 24564, 40960, 81920]),
    st.booleans(),
    st.sampled_from(CAPS),
)


@st.composite
def fleet(draw: st.DrawFn) -> list[placement.Capacity]:
    caps = []
    for i in range(draw(st.integers(1, 6))):
        gpus = draw(st.lists(gpu, max_size=8))
        caps.append(
            placement.Capacity(
                provider_id=f"p{i}",
                price_per_hour=draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
                max_tasks=draw(st.integers(1, 8)),
                gpus=[
                    placement.GpuSlot(j, n, m, healthy=h, compute_capability=c)
                    for j, (n, m, h, c) in enumerate(gpus)
                ],
                labels=draw(st.sampled_from([{}, {"region": "eu"}, {"region": "us"}])),
            )
        )
    return caps


demand = st.builds(
    placement.Demand,
    gpu_count=st.integers(0, 4),
    gpu_model=st.sampled_from(PATTERNS),
    min_vram_mb=st.sampled_from([0, 20000, 40000, 80000]),
    max_price_per_hour=st.sampled_from([None, 1.0, 2.0]),
    labels=st.sampled_from([{}, {"region": "eu"}]),
    min_compute_capability=st.sampled_from([None, "8.0", "8.9"]),
)


def _satisfies(g: placement.GpuSlot, d: placement.Demand) -> bool:
    if d.gpu_model and not fnmatchcase(g.name.lower(), d.gpu_model.lower()):
        return False
    if d.min_compute_capability:
        have = placement.capability(g.compute_capability)
        if have is None or have < placement.capability(d.min_compute_capability):
            return False
    return g.healthy and g.memory_total_mb >= d.min_vram_mb


@settings(max_examples=300, deadline=None)
@given(fleet(), st.lists(demand, min_size=1, max_size=30))
def test_a_round_never_over_allocates_and_honours_every_constraint(
    caps: list[placement.Capacity], demands: list[placement.Demand]
) -> None:
    now = datetime.now(UTC)
    by_id = {c.provider_id: c for c in caps}
    taken: dict[str, set[int]] = {c.provider_id: set() for c in caps}
    tasks: dict[str, int] = dict.fromkeys(by_id, 0)
    for d in demands:
        got = placement.choose(d, caps)
        if got is None:
            continue
        cap = by_id[got.provider_id]
        assert len(got.gpu_indices) == len(set(got.gpu_indices)) == d.gpu_count
        assert taken[cap.provider_id].isdisjoint(got.gpu_indices), "an index handed out twice"
        assert tasks[cap.provider_id] < cap.max_tasks, "more tasks than the host takes"
        slots = {g.index: g for g in cap.gpus}
        assert all(_satisfies(slots[i], d) for i in got.gpu_indices)
        if d.max_price_per_hour is not None:
            assert cap.price_per_hour <= d.max_price_per_hour
        assert all(cap.labels.get(k) == v for k, v in d.labels.items())
        taken[cap.provider_id].update(got.gpu_indices)
        tasks[cap.provider_id] += 1
        placement.allocate(cap, got, now)


@settings(max_examples=300, deadline=None)
@given(fleet(), demand)
def test_the_choice_is_the_best_fit_and_nothing_fitting_is_missed(
    caps: list[placement.Capacity], d: placement.Demand
) -> None:
    def option(c: placement.Capacity) -> tuple | None:
        if c.running_tasks >= c.max_tasks:
            return None
        if d.max_price_per_hour is not None and c.price_per_hour > d.max_price_per_hour:
            return None
        if any(c.labels.get(k) != v for k, v in d.labels.items()):
            return None
        free = [g for g in c.gpus if _satisfies(g, d) and g.index not in c.used_indices]
        if len(free) < d.gpu_count:
            return None
        left = len([g for g in c.gpus if g.index not in c.used_indices]) - d.gpu_count
        return (left, c.max_tasks - c.running_tasks - 1, c.price_per_hour)

    options = {c.provider_id: option(c) for c in caps}
    feasible = {pid: o for pid, o in options.items() if o is not None}
    got = placement.choose(d, caps)
    if not feasible:
        assert got is None
        return
    assert got is not None
    assert feasible[got.provider_id] == min(feasible.values())  # least left over, then price


async def _live_ids(views: list[ProviderView]) -> set[str]:
    """The scheduler's own query for live providers, on a fresh in-memory SQLite."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from scheduler.models import SchedulerBase
    from scheduler.repository import ProviderViewRepository

    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(SchedulerBase.metadata.create_all)
        async with async_sessionmaker(engine)() as session:
            session.add_all(views)
            await session.flush()
            return {r.id for r in await ProviderViewRepository(session).live_rows()}
    finally:
        await engine.dispose()


@settings(max_examples=40, deadline=None)
@given(fleet(), st.booleans())
def test_offline_providers_are_never_live(caps: list[placement.Capacity], offline: bool) -> None:
    """The live set the matcher sees excludes providers the registry said are not online.

    A stale heartbeat alone does not: the registry decides liveness (docs/decisions.md).
    """
    import asyncio

    now = datetime.now(UTC)
    views = [
        ProviderView(
            id=c.provider_id,
            status="offline" if offline and i % 2 else "online",
            max_concurrent_tasks=c.max_tasks,
            price_per_hour=c.price_per_hour,
            labels=c.labels,
            gpus=[
                {"index": g.index, "name": g.name, "memory_total_mb": g.memory_total_mb}
                for g in c.gpus
            ],
            last_seen_at=now - timedelta(seconds=60 if i % 3 == 0 else 1),
        )
        for i, c in enumerate(caps)
    ]
    got = asyncio.run(_live_ids(views))
    expect = {v.id for v in views if v.status == "online"}
    assert got == expect
    assert all(capacity_of(v).provider_id == v.id for v in views)
