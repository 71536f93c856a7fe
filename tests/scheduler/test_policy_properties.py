"""Property tests (hypothesis) of the scheduling policies: fair share, quotas, preemption and
gang placement, alone and combined in rounds: nothing is ever over-allocated, a gang is placed
whole or not at all, no quota is exceeded, preemption frees exactly what is needed at least
cost, and an unhealthy GPU or cordoned host never gets work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import combinations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from scheduler import fairshare, gang, placement, preemption, quotas
from shared.contracts import GangRank

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MODELS = ["H100", "A100", "T4"]


@st.composite
def fleet(draw: st.DrawFn, max_hosts: int = 6) -> list[placement.Capacity]:
    caps = []
    for i in range(draw(st.integers(1, max_hosts))):
        n = draw(st.integers(0, 8))
        gpus = [
            placement.GpuSlot(
                j,
                draw(st.sampled_from(MODELS)),
                draw(st.sampled_from([16384, 81920])),
                healthy=draw(st.booleans()) or draw(st.booleans()),
            )
            for j in range(n)
        ]
        caps.append(
            placement.Capacity(
                provider_id=f"p{i}",
                price_per_hour=draw(st.sampled_from([1.0, 2.0])),
                max_tasks=draw(st.integers(1, 8)),
                gpus=gpus,
            )
        )
    return caps


demand = st.builds(
    placement.Demand,
    gpu_count=st.integers(0, 4),
    gpu_model=st.sampled_from([None, "H100", "A100"]),
    min_vram_mb=st.sampled_from([0, 40000]),
)


def _snapshot(caps: list[placement.Capacity]) -> list[tuple[int, frozenset[int]]]:
    return [(c.running_tasks, frozenset(c.used_indices)) for c in caps]


def _fits(cap: placement.Capacity, d: placement.Demand, idx: list[int]) -> bool:
    by = {g.index: g for g in cap.gpus}
    return (
        all(i in by and by[i].healthy and placement._gpu_fits(by[i], d) for i in idx)
        and len(idx) == d.gpu_count
    )


# --- gang -------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(fleet(), demand, st.integers(1, 4))
def test_gang_is_placed_whole_or_not_at_all(
    caps: list[placement.Capacity], d: placement.Demand, nodes: int
) -> None:
    before = _snapshot(caps)
    got = gang.place(placement.Matcher(caps), d, nodes)
    assert _snapshot(caps) == before  # no partial hold, success or not
    by_id = {c.provider_id: c for c in caps}
    if got is None:
        # fewer than N distinct hosts could take a rank right now
        able = [
            c
            for c in caps
            if c.running_tasks < c.max_tasks and placement.choose(d, [c]) is not None
        ]
        assert len(able) < nodes
        return
    assert len(got) == nodes
    assert len({p.provider_id for p in got}) == nodes  # N distinct providers
    for p in got:
        cap = by_id[p.provider_id]
        assert _fits(cap, d, p.gpu_indices)
        assert not set(p.gpu_indices) & cap.used_indices


def test_rank_env_has_what_torchrun_needs() -> None:
    env = gang.rank_env(GangRank(rank=1, world_size=2, master_addr="10.0.0.5"))
    assert env["DANTE_RANK"] == "1" and env["DANTE_WORLD_SIZE"] == "2"
    assert env["MASTER_ADDR"] == "10.0.0.5" and env["MASTER_PORT"] == "29500"
    assert env["NODE_RANK"] == "1" and env["NNODES"] == "2"
    assert gang.gang_outcome(["completed", "failed"]) == "requeue"
    assert gang.gang_outcome(["completed", "completed"]) == "completed"
    assert gang.gang_outcome(["running", "completed"]) is None


# --- quotas -----------------------------------------------------------------------------------

quota = st.builds(
    quotas.Quota,
    max_gpus=st.one_of(st.none(), st.integers(0, 8)),
    max_gpu_hours=st.one_of(st.none(), st.sampled_from([0.5, 1.0, 4.0])),
)


@settings(max_examples=200, deadline=None)
@given(
    quota,
    st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from([None, 600, 3600])), min_size=1, max_size=20
    ),
)
def test_admitted_jobs_never_exceed_a_quota(
    q: quotas.Quota, asks: list[tuple[int, int | None]]
) -> None:
    use = quotas.OwnerUse()
    admitted: list[quotas.Ask] = []
    for gpus, timeout in asks:
        ask = quotas.Ask(gpus, timeout)
        reason = quotas.over_quota(q, use, ask)
        if reason is None:
            quotas.take(use, ask)
            admitted.append(ask)
        else:
            assert reason.startswith("waiting: over quota")
    if q.max_gpus is not None:
        assert sum(a.gpus for a in admitted) <= q.max_gpus
    if q.max_gpu_hours is not None:
        bounded = [a for a in admitted if a.gpus and a.timeout_seconds is not None]
        assert sum(a.max_gpu_seconds or 0 for a in bounded) <= q.max_gpu_hours * 3600
    assert quotas.over_quota(None, use, quotas.Ask(64)) is None


# --- preemption -------------------------------------------------------------------------------


@st.composite
def busy_fleet(draw: st.DrawFn) -> tuple[list[placement.Capacity], list[preemption.Running]]:
    caps = draw(fleet(max_hosts=3))
    running: list[preemption.Running] = []
    n = 0
    for cap in caps:
        free = [g.index for g in cap.gpus]
        while free and cap.running_tasks < cap.max_tasks and draw(st.booleans()):
            k = draw(st.integers(1, min(3, len(free))))
            idx, free = free[:k], free[k:]
            started = draw(st.one_of(st.none(), st.integers(0, 7200)))
            running.append(
                preemption.Running(
                    job_id=f"j{n}",
                    owner_id=draw(st.sampled_from(["alice", "bob"])),
                    priority=draw(st.integers(0, 9)),
                    provider_id=cap.provider_id,
                    gpu_indices=tuple(idx),
                    started_at=None if started is None else NOW - timedelta(seconds=started),
                )
            )
            n += 1
            cap.running_tasks += 1
            cap.used_indices.update(idx)
    return caps, running


@settings(max_examples=200, deadline=None)
@given(
    busy_fleet(),
    demand,
    st.sampled_from(preemption.POLICIES),
    st.integers(0, 10),
    st.sampled_from([0, 600]),
)
def test_preemption_frees_what_is_needed_at_least_cost(
    fleet_and_jobs: tuple[list[placement.Capacity], list[preemption.Running]],
    d: placement.Demand,
    policy: preemption.Policy,
    prio: int,
    min_run: int,
) -> None:
    caps, running = fleet_and_jobs
    who = preemption.Preemptor("alice", prio, d)
    before = _snapshot(caps)
    got = preemption.plan(who, caps, running, policy=policy, now=NOW, min_run_seconds=min_run)
    assert _snapshot(caps) == before

    def works(cap: placement.Capacity, vs: tuple[preemption.Running, ...]) -> bool:
        freed = placement.Capacity(
            cap.provider_id,
            cap.price_per_hour,
            cap.max_tasks,
            cap.gpus,
            running_tasks=cap.running_tasks - len(vs),
            used_indices=cap.used_indices - {i for v in vs for i in v.gpu_indices},
        )
        return placement.choose(d, [freed]) is not None

    # the brute-force optimum over every allowed victim set on every host
    allowed = [r for r in running if preemption.eligible(r, who, policy, NOW, min_run)]
    best = None
    for cap in caps:
        mine = [r for r in allowed if r.provider_id == cap.provider_id]
        for size in range(len(mine) + 1):
            for vs in combinations(mine, size):
                if works(cap, vs):
                    c = preemption.cost_of(vs, NOW)
                    best = c if best is None or c < best else best
    if got is None:
        assert best is None or policy == "off"
        return
    assert policy != "off"
    assert got.victims or placement.choose(d, caps) is not None  # none needed: fits now
    assert got.cost == best  # least cost by the documented measure
    cap = next(c for c in caps if c.provider_id == got.placement.provider_id)
    victims = got.victims
    assert all(v in allowed and v.provider_id == cap.provider_id for v in victims)
    assert all(v.priority < prio for v in victims)
    if policy == "same-owner":
        assert all(v.owner_id == "alice" for v in victims)
    assert all((NOW - v.started_at).total_seconds() >= min_run for v in victims if v.started_at)
    assert works(cap, victims)
    for v in victims:  # exactly what is needed: without any one victim it does not fit
        assert not works(cap, tuple(x for x in victims if x is not v))
    # the placement uses only GPUs that are free once the victims are gone, and that fit
    freed_used = cap.used_indices - {i for v in victims for i in v.gpu_indices}
    assert not set(got.placement.gpu_indices) & freed_used
    assert _fits(cap, d, got.placement.gpu_indices)


# --- combined rounds --------------------------------------------------------------------------


@st.composite
def jobs(draw: st.DrawFn) -> list[tuple[str, int, placement.Demand, int]]:
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["alice", "bob", "carol"]),
                st.integers(0, 10),
                demand,
                st.integers(1, 3),
            ),
            max_size=12,
        )
    )


@settings(max_examples=100, deadline=None)
@given(fleet(), jobs(), st.dictionaries(st.sampled_from(["alice", "bob"]), quota))
def test_a_round_with_gangs_and_quotas_never_over_allocates(
    caps: list[placement.Capacity],
    queue: list[tuple[str, int, placement.Demand, int]],
    owner_quotas: dict[str, quotas.Quota],
) -> None:
    """The round dispatch.py runs, policies included: order by effective priority, admit by
    quota, place whole gangs, allocate. No GPU index is ever handed out twice, no unhealthy GPU
    is used, every gang is whole, and no owner exceeds their concurrent-GPU quota."""
    cfg = fairshare.FairShareConfig(shares={"carol": 2.0})
    items = [
        fairshare.Ranked(str(i), owner, prio, NOW - timedelta(seconds=i))
        for i, (owner, prio, _, _) in enumerate(queue)
    ]
    ordered = fairshare.order(items, {"alice": 100.0}, NOW, cfg)
    use = {o: quotas.OwnerUse() for o in ("alice", "bob", "carol")}
    matcher = placement.Matcher(caps)
    handed: dict[str, list[int]] = {c.provider_id: [] for c in caps}
    by_id = {c.provider_id: c for c in caps}
    for item, _, _ in ordered:
        owner, _, d, nodes = queue[int(item.key)]
        ask = quotas.Ask(d.gpu_count * nodes)
        if quotas.over_quota(owner_quotas.get(owner), use[owner], ask):
            continue
        got = gang.place(matcher, d, nodes)
        if got is None:
            continue
        assert len({p.provider_id for p in got}) == nodes
        quotas.take(use[owner], ask)
        for p in got:
            assert _fits(by_id[p.provider_id], d, p.gpu_indices)
            placement.allocate(by_id[p.provider_id], p, NOW)
            handed[p.provider_id] += p.gpu_indices
    for pid, idx in handed.items():
        assert len(idx) == len(set(idx))  # never twice
        assert by_id[pid].running_tasks <= by_id[pid].max_tasks
    for owner, q in owner_quotas.items():
        if q.max_gpus is not None:
            assert use[owner].gpus_in_use <= q.max_gpus


# --- fair share -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0, 1e6), min_size=1),
    st.integers(0, 10),
    st.floats(0, 1e6),
)
def test_fairshare_factor_and_priority_are_monotone(
    usage: dict[str, float], prio: int, age: float
) -> None:
    cfg = fairshare.FairShareConfig()
    f = fairshare.fairshare_factors(usage, set(usage), cfg)
    assert all(0.0 <= v <= 1.0 for v in f.values())
    # with equal shares, more usage never means a higher factor
    for x in usage:
        for y in usage:
            if usage[x] > usage[y]:
                assert f[x] <= f[y]
    e = fairshare.effective_priority(prio, age, 0.5, cfg)
    assert fairshare.effective_priority(min(prio + 1, 10), age, 0.5, cfg) >= e
    assert fairshare.effective_priority(prio, age + 60, 0.5, cfg) >= e
    assert fairshare.effective_priority(prio, age, 0.6, cfg) > e


def test_fairshare_reference_values() -> None:
    """Slurm's classic factor: unused → 1, exactly its share → 0.5, twice its share → 0.25."""
    cfg = fairshare.FairShareConfig(shares={"a": 1, "b": 1, "c": 2})
    f = fairshare.fairshare_factors({"a": 25.0, "b": 50.0, "c": 25.0}, {"a", "b", "c"}, cfg)
    assert abs(f["a"] - 0.5) < 1e-9  # 25% used of a 25% share
    assert abs(f["b"] - 0.25) < 1e-9  # 50% used of a 25% share
    assert abs(f["c"] - 2**-0.5) < 1e-9  # 25% used of a 50% share
    assert fairshare.fairshare_factors({}, {"a"}, cfg)["a"] == 1.0
    assert fairshare.decay(100.0, 7 * 86400, 7 * 86400) == 50.0


@settings(max_examples=100, deadline=None)
@given(
    busy_fleet(),
    jobs(),
    st.dictionaries(st.sampled_from(["alice", "bob"]), quota),
    st.sampled_from(preemption.POLICIES),
)
def test_rounds_with_preemption_gangs_and_quotas_hand_out_each_gpu_once(
    fleet_and_jobs: tuple[list[placement.Capacity], list[preemption.Running]],
    queue: list[tuple[str, int, placement.Demand, int]],
    owner_quotas: dict[str, quotas.Quota],
    policy: preemption.Policy,
) -> None:
    """A busy fleet, then a round as dispatch.py runs it with every policy on: whoever holds a
    GPU index at any moment holds it alone, evicted victims give back exactly their GPUs, the
    capacity's accounting matches the holders, and no owner passes their GPU quota."""
    caps, running = fleet_and_jobs
    by_id = {c.provider_id: c for c in caps}
    holders: dict[tuple[str, int], str] = {
        (r.provider_id, i): r.job_id for r in running for i in r.gpu_indices
    }
    tasks = {c.provider_id: c.running_tasks for c in caps}
    use = {o: quotas.OwnerUse() for o in ("alice", "bob", "carol")}
    for r in running:
        use.setdefault(r.owner_id, quotas.OwnerUse()).gpus_in_use += len(r.gpu_indices)
    matcher = placement.Matcher(caps)
    placed: set[tuple[str, int]] = set()
    # owners the generated fleet already put over a GPU quota (admission cannot undo that)
    started_over = {
        o
        for o, q in owner_quotas.items()
        if q.max_gpus is not None and use[o].gpus_in_use > q.max_gpus
    }

    def hold(pid: str, idx: list[int], who: str) -> None:
        for i in idx:
            assert (pid, i) not in holders, f"GPU {pid}/{i} handed to {who} while held"
            holders[(pid, i)] = who
            placed.add((pid, i))
        tasks[pid] += 1

    ranked = [
        fairshare.Ranked(str(n), owner, prio, NOW - timedelta(seconds=n))
        for n, (owner, prio, _, _) in enumerate(queue)
    ]
    for item, _, _ in fairshare.order(ranked, {"alice": 50.0}, NOW, fairshare.FairShareConfig()):
        owner, prio, d, nodes = queue[int(item.key)]
        ask = quotas.Ask(d.gpu_count * nodes)
        if quotas.over_quota(owner_quotas.get(owner), use[owner], ask):
            continue
        who = f"q{item.key}"
        if nodes > 1:
            got = gang.place(matcher, d, nodes)
            if got is None:
                continue
            for p in got:
                hold(p.provider_id, p.gpu_indices, who)
                placement.allocate(by_id[p.provider_id], p, NOW)
        else:
            choice = matcher.choose(d)
            if choice is None:
                plan = preemption.plan(
                    preemption.Preemptor(owner, prio, d),
                    caps,
                    running,
                    policy=policy,
                    now=NOW,
                    min_run_seconds=0,
                )
                if plan is None or not plan.victims:
                    continue
                cap = by_id[plan.placement.provider_id]
                event("a job preempted others")
                for v in plan.victims:  # evict: exactly the victim's GPUs come back
                    mine = {k for k, w in holders.items() if w == v.job_id}
                    assert mine == {(v.provider_id, i) for i in v.gpu_indices}
                    for k in mine:
                        del holders[k]
                    tasks[v.provider_id] -= 1
                    cap.running_tasks -= 1
                    cap.used_indices.difference_update(v.gpu_indices)
                    running.remove(v)
                    use[v.owner_id].gpus_in_use -= len(v.gpu_indices)
                choice = plan.placement
            hold(choice.provider_id, choice.gpu_indices, who)
            placement.allocate(by_id[choice.provider_id], choice, NOW)
        quotas.take(use[owner], ask)
    for c in caps:
        held = {i for (pid, i), _ in holders.items() if pid == c.provider_id}
        assert c.used_indices == held
        assert c.running_tasks == tasks[c.provider_id] <= c.max_tasks
    healthy = {(c.provider_id, g.index) for c in caps for g in c.gpus if g.healthy}
    assert placed <= healthy  # nothing new on an unhealthy GPU
    for owner, q in owner_quotas.items():
        if q.max_gpus is not None and owner not in started_over:
            assert use[owner].gpus_in_use <= q.max_gpus
