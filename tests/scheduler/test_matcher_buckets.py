"""The matcher's free-GPU buckets (issue 12) choose exactly what the scan of every candidate
host chose before them, for every input: random fleets and demands from a fixed seed, each
choice allocated (or a host's attempt released, as preemption does) before the next."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from scheduler import gang, placement
from scheduler.placement import Capacity, Demand, GpuSlot, Placement

MODELS = [("NVIDIA H100 80GB", 81920), ("NVIDIA A100-SXM4-40GB", 40960), ("RTX 4090", 24564)]
T0 = datetime(2026, 11, 30, tzinfo=UTC)


def reference_choose(demand: Demand, capacities: list[Capacity]) -> Placement | None:
    """``Matcher.choose`` as it was before the buckets: every candidate host scanned."""
    best: tuple | None = None
    best_pick: tuple[Capacity, list[GpuSlot]] | None = None
    need = demand.gpu_count
    for cap in capacities:
        fitting = placement._static_fit(cap, demand)
        if fitting is None:
            continue
        healthy = [g for g in fitting if g.healthy]
        if cap.running_tasks >= cap.max_tasks:
            continue
        if (demand.cpu or demand.memory_mb) and not placement._host_free(cap, demand):
            continue
        used = cap.used_indices
        free_after = len(cap.gpus) - len(used) - need
        if free_after < 0 or (best is not None and free_after > best[0]):
            continue
        lru = cap.last_placed_at.timestamp() if cap.last_placed_at else 0.0
        score = (
            free_after,
            cap.max_tasks - cap.running_tasks - 1,
            cap.price_per_hour,
            lru,
            cap.provider_id,
        )
        if best is not None and score >= best:
            continue
        free = [g for g in healthy if g.index not in used] if need else []
        if len(free) < need:
            continue
        best, best_pick = score, (cap, free)
    if best_pick is None:
        return None
    cap, free = best_pick
    chosen = sorted(free, key=lambda g: (g.memory_total_mb, g.index))[:need]
    return Placement(cap.provider_id, sorted(g.index for g in chosen))


def a_fleet(rng: random.Random) -> list[Capacity]:
    caps = []
    for i in rng.sample(range(1000), rng.randint(1, 40)):  # ids not in list order
        gpus = []
        for j in range(rng.choice([0, 1, 2, 4, 8, 8, 8])):
            name, mem = rng.choice(MODELS)
            gpus.append(
                GpuSlot(
                    j,
                    name,
                    mem,
                    healthy=rng.random() > 0.1,
                    compute_capability=rng.choice(["8.0", "8.9", "9.0", None]),
                )
            )
        used = {g.index for g in gpus if rng.random() < 0.3}
        caps.append(
            Capacity(
                provider_id=f"p{i:04d}",
                price_per_hour=rng.choice([0.5, 1.0, 1.0, 2.0]),  # ties on purpose
                max_tasks=rng.randint(1, 8),
                gpus=gpus,
                labels=rng.choice([{}, {"region": "eu"}, {"region": "us"}]),
                running_tasks=min(len(used), 8),
                used_indices=used,
                last_placed_at=rng.choice([None, T0, T0 + timedelta(seconds=5)]),
                cpu_count=rng.choice([0, 8, 32]),
                memory_mb=rng.choice([0, 16384, 65536]),
                docker=rng.random() < 0.5,
                used_cpu=rng.choice([0.0, 4.0]),
                used_memory_mb=rng.choice([0, 8192]),
            )
        )
    return caps


def a_demand(rng: random.Random) -> Demand:
    return Demand(
        gpu_count=rng.choice([0, 1, 1, 1, 2, 4, 8]),
        gpu_model=rng.choice([None, None, "*H100*", "*A100*", "RTX*"]),
        min_vram_mb=rng.choice([0, 0, 30000, 80000]),
        max_price_per_hour=rng.choice([None, None, 1.0]),
        labels=rng.choice([{}, {}, {"region": "eu"}]),
        min_compute_capability=rng.choice([None, None, "8.9"]),
        cpu=rng.choice([None, None, 4.0]),
        memory_mb=rng.choice([None, None, 16384]),
        container=rng.random() < 0.2,
    )


def test_buckets_choose_what_the_scan_of_every_host_chose() -> None:
    rng = random.Random(12)
    choices = placed = 0
    fits = placement.StaticFits()  # kept across rounds; provider ids recur with new hardware
    for trial in range(300):
        caps = a_fleet(rng)
        matcher = placement.Matcher(caps, fits if trial % 2 else None)
        shapes = [a_demand(rng) for _ in range(6)]  # a round's jobs share few shapes
        now = T0 + timedelta(seconds=trial)
        for step in range(60):
            if step == 30:  # the next round over the same hosts (static fits found kept)
                matcher.close()
                matcher = placement.Matcher(caps, fits if trial % 2 else None)
            if rng.random() < 0.1:  # a preempted attempt frees its slot and GPUs (or none)
                busy = [c for c in caps if c.running_tasks]
                if busy:
                    cap = rng.choice(busy)
                    gone = rng.sample(
                        sorted(cap.used_indices), rng.randint(0, len(cap.used_indices))
                    )
                    placement.release(cap, gone)
            demand = rng.choice(shapes)
            want = reference_choose(demand, caps)
            got = matcher.choose(demand)
            assert got == want, (trial, step, demand)
            choices += 1
            if got is not None:
                placement.allocate(
                    next(c for c in caps if c.provider_id == got.provider_id), got, now
                )
                placed += 1
    assert placed > 1000 and choices - placed > 1000  # both outcomes were exercised


def test_a_gang_sees_the_same_hosts_with_buckets() -> None:
    """``gang.place`` hides each chosen host from the next rank's choice and restores it."""
    rng = random.Random(17)
    for _ in range(200):
        caps = a_fleet(rng)
        matcher = placement.Matcher(caps)
        demand = a_demand(rng)
        nodes = rng.randint(1, 4)
        got = gang.place(matcher, demand, nodes)
        want: list[Placement] | None = []
        hidden: dict[str, int] = {}
        for _ in range(nodes):
            pick = reference_choose(demand, caps)
            if pick is None:
                want = None
                break
            assert want is not None
            want.append(pick)
            cap = next(c for c in caps if c.provider_id == pick.provider_id)
            hidden[cap.provider_id] = cap.running_tasks
            cap.running_tasks = cap.max_tasks
        for c in caps:
            c.running_tasks = hidden.get(c.provider_id, c.running_tasks)
        assert got == want


def test_a_one_off_choice_leaves_no_watcher_behind() -> None:
    """``placement.choose`` (a matcher used once) does not keep listening to the hosts."""
    caps = a_fleet(random.Random(3))
    placement.choose(Demand(gpu_count=1), caps)
    assert all(not c.watchers for c in caps)


def test_a_round_copy_starts_empty_and_never_touches_the_cached_host() -> None:
    """``Capacity.for_round``: the hardware cache's host, copied for one round with nothing
    taken; what the round takes (and the matchers it tells) stays on the copy."""
    gpus = [GpuSlot(index=i, name="H100", memory_total_mb=81920) for i in range(8)]
    cached = Capacity(
        provider_id="p",
        price_per_hour=2.5,
        max_tasks=8,
        gpus=gpus,
        labels={"zone": "a"},
        cpu_count=64,
        memory_mb=512_000,
        docker=True,
    )
    first = cached.for_round(T0)
    first.used_cpu, first.used_memory_mb = 8.0, 1000
    placement.allocate(first, Placement("p", [0, 1]), T0 + timedelta(seconds=1))
    assert first.running_tasks == 1 and first.used_indices == {0, 1}
    first.watchers.append(placement.Matcher([first]))
    # the cached host is as it was, and the next round's copy starts from it, empty
    assert cached.running_tasks == 0 and cached.used_indices == set() and cached.watchers == []
    again = cached.for_round(T0 + timedelta(seconds=2))
    assert again == Capacity(
        provider_id="p",
        price_per_hour=2.5,
        max_tasks=8,
        gpus=gpus,
        labels={"zone": "a"},
        last_placed_at=T0 + timedelta(seconds=2),
        cpu_count=64,
        memory_mb=512_000,
        docker=True,
    )
    assert again.gpus is cached.gpus and again.used_indices is not first.used_indices
