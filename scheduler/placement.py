"""Matching a job's demand to a provider's free GPUs. Pure functions, no I/O."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from fnmatch import fnmatchcase
from heapq import heapify, heappop, heappush, heapreplace
from typing import Any


@dataclass(frozen=True)
class Demand:
    gpu_count: int = 0
    gpu_model: str | None = None
    min_vram_mb: int = 0
    max_price_per_hour: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    min_compute_capability: str | None = None
    cpu: float | None = None  # CPUs held on the host while the attempt runs
    memory_mb: int | None = None  # host memory held while the attempt runs
    container: bool = False  # needs a Docker engine on the host


@dataclass(frozen=True)
class GpuSlot:
    index: int
    name: str
    memory_total_mb: int
    healthy: bool = True
    compute_capability: str | None = None


def capability(value: str | None) -> tuple[int, ...] | None:
    """``"8.9"`` → ``(8, 9)``, compared numerically (``"10.0"`` beats ``"9.0"``)."""
    if not value:
        return None
    try:
        return tuple(int(p) for p in value.split("."))
    except ValueError:
        return None


@dataclass
class Capacity:
    """What one live provider has, and what is already taken on it."""

    provider_id: str
    price_per_hour: float
    max_tasks: int
    gpus: list[GpuSlot]
    labels: dict[str, str] = field(default_factory=dict)
    running_tasks: int = 0
    used_indices: set[int] = field(default_factory=set)  # only indices of ``gpus``
    last_placed_at: datetime | None = None
    cpu_count: float = 0  # the host's CPUs and memory as its daemon reported them (0: unknown)
    memory_mb: int = 0
    docker: bool = False  # a Docker engine answers there: container jobs can run
    used_cpu: float = 0.0  # held by active attempts that asked for CPUs / memory
    used_memory_mb: int = 0
    # matchers that filed this host by its free GPUs: told by ``allocate`` / ``release``
    watchers: list[Matcher] = field(default_factory=list, repr=False, compare=False)

    def for_round(self, last_placed_at: datetime | None) -> Capacity:
        """A copy with nothing taken yet, for one placement round: the host's static parts
        (price, slots, labels, GPUs: never mutated) shared, what a round takes new. Half the
        cost of the dataclass's ``__init__``, paid for every live host in every round."""
        fresh = object.__new__(Capacity)
        state = self.__dict__.copy()
        state.update(
            running_tasks=0,
            used_indices=set(),
            last_placed_at=last_placed_at,
            used_cpu=0.0,
            used_memory_mb=0,
            watchers=[],
        )
        fresh.__dict__ = state
        return fresh


@dataclass(frozen=True)
class Placement:
    provider_id: str
    gpu_indices: list[int]


def _gpu_fits(gpu: GpuSlot, demand: Demand) -> bool:
    if demand.gpu_model and not fnmatchcase(gpu.name.lower(), demand.gpu_model.lower()):
        return False
    if demand.min_compute_capability:
        have, need = capability(gpu.compute_capability), capability(demand.min_compute_capability)
        if have is None or need is None or have < need:
            return False  # an unknown capability cannot be promised
    return gpu.memory_total_mb >= demand.min_vram_mb


def _host_fits(cap: Capacity, demand: Demand) -> bool:
    """The host's CPUs, memory and Docker engine, as totals (an unreported total cannot be
    promised)."""
    if demand.container and not cap.docker:
        return False
    if demand.cpu and cap.cpu_count < demand.cpu:
        return False
    return not (demand.memory_mb and cap.memory_mb < demand.memory_mb)


def _host_free(cap: Capacity, demand: Demand) -> bool:
    """The host's CPUs and memory not held by its active attempts cover the demand."""
    if demand.cpu and cap.used_cpu + demand.cpu > cap.cpu_count:
        return False
    return not (demand.memory_mb and cap.used_memory_mb + demand.memory_mb > cap.memory_mb)


def _static_fit(cap: Capacity, demand: Demand) -> list[GpuSlot] | None:
    """GPUs of this provider that could ever serve the demand, or None if the host never can."""
    if demand.max_price_per_hour is not None and cap.price_per_hour > demand.max_price_per_hour:
        return None
    if any(cap.labels.get(k) != v for k, v in demand.labels.items()):
        return None
    if not _host_fits(cap, demand):
        return None
    fitting = [g for g in cap.gpus if _gpu_fits(g, demand)]
    if len(fitting) < demand.gpu_count:
        return None
    return fitting


def shape_of(demand: Demand) -> tuple:
    """What decides which hosts could ever serve a demand: equal shapes, equal candidates."""
    return (
        demand.gpu_count,
        demand.gpu_model,
        demand.min_vram_mb,
        demand.min_compute_capability,
        demand.max_price_per_hour,
        tuple(sorted(demand.labels.items())),
        demand.cpu,
        demand.memory_mb,
        demand.container,
    )


class StaticFits:
    """Which of a host's GPUs could ever serve each demand shape (``_static_fit``, healthy
    ones), kept between rounds: a placement round builds fresh capacities each time, but
    their hardware (GPU list, labels, price, CPUs, memory, Docker) is the same objects and
    values while the host's row does not change (``dispatch.HardwareCache``). Recomputing it
    for 1,000 hosts x each shape every round was ~10 % of a burst's placement CPU (issue 12).
    An entry is used only while the host's GPU list and labels are the very objects it was
    computed from and its price, CPUs, memory and Docker are equal."""

    MAX_SHAPES = 256

    def __init__(self) -> None:
        self._by_shape: dict[tuple, dict[str, tuple[Any, ...]]] = {}

    def healthy_fit(self, cap: Capacity, demand: Demand, shape: tuple) -> list[GpuSlot] | None:
        per = self._by_shape.get(shape)
        if per is None:
            if len(self._by_shape) >= self.MAX_SHAPES:
                self._by_shape.clear()
            per = self._by_shape[shape] = {}
        stamp = (cap.price_per_hour, cap.cpu_count, cap.memory_mb, cap.docker)
        got = per.get(cap.provider_id)
        if got is not None and got[0] is cap.gpus and got[1] is cap.labels and got[2] == stamp:
            return got[3]
        fitting = _static_fit(cap, demand)
        healthy = None if fitting is None else [g for g in fitting if g.healthy]
        per[cap.provider_id] = (cap.gpus, cap.labels, stamp, healthy)
        return healthy

    def forget(self, provider_ids: Iterable[str]) -> None:
        for per in self._by_shape.values():
            for pid in provider_ids:
                per.pop(pid, None)


def _key(cap: Capacity) -> tuple:
    """A host's score within its free-GPU bucket (the rest of ``Matcher.choose``'s order)."""
    lru = cap.last_placed_at.timestamp() if cap.last_placed_at else 0.0
    return (cap.max_tasks - cap.running_tasks - 1, cap.price_per_hour, lru, cap.provider_id)


class _Bucket:
    """The hosts with one number of free GPUs: by id, and a heap of their scores."""

    __slots__ = ("heap", "members")

    def __init__(self) -> None:
        self.heap: list[tuple] = []
        self.members: dict[str, tuple[Capacity, list[GpuSlot]]] = {}

    def add(self, cap: Capacity, healthy: list[GpuSlot]) -> None:
        self.members[cap.provider_id] = (cap, healthy)
        self.heap.append(_key(cap))


class _Misfiled(Exception):
    """A host's used GPUs changed without :func:`allocate` / :func:`release`."""


class Matcher:
    """``choose`` for a whole placement round over one set of capacities.

    Which GPUs of a host could *ever* serve a demand depends only on the demand's shape
    (model, VRAM, capability, price cap, labels), and a round's jobs share few shapes; so that
    part is computed once per shape per round, and each job only checks what is free now.

    Best fit means least capacity left over first, so each shape's candidates are kept in
    buckets by their number of free GPUs (all of a host's GPUs, as the score counts them):
    a demand of n GPUs walks the buckets from n free upward and stops at the first bucket
    with a host that fits, choosing there by the rest of the score. Its cost no longer grows
    with the number of hosts (issue 12: with 1,000 hosts the scan of every candidate per job
    was ~9 % of a burst's CPU). Whatever changes a host's used GPUs once a matcher filed it
    goes through :func:`allocate` / :func:`release`, which tell the matcher (``watchers``),
    so its bucket stays true; a host found in the wrong bucket all the same makes the
    matcher file every host again before it answers.
    """

    def __init__(self, capacities: list[Capacity], fits: StaticFits | None = None) -> None:
        self.capacities = capacities
        self.fits = fits  # kept between rounds by the caller, or None
        self._static: dict[tuple, list[tuple[Capacity, list[GpuSlot]]]] = {}
        # shape -> free GPUs -> provider id -> (capacity, its healthy fitting GPUs)
        self._buckets: dict[tuple, dict[int, _Bucket]] = {}
        self._keys: dict[tuple, list[int]] = {}  # each shape's bucket keys, ascending
        self._pools: dict[tuple, tuple[Demand, tuple]] = {}  # shape -> its index's
        self._free: dict[str, int] = {}  # the bucket each host is filed under

    def candidates(self, demand: Demand) -> list[tuple[Capacity, list[GpuSlot]]]:
        key = shape_of(demand)
        found = self._static.get(key)
        if found is None:
            found = []
            if self.fits is not None:
                for cap in self.capacities:
                    healthy = self.fits.healthy_fit(cap, demand, key)
                    if healthy is not None:
                        found.append((cap, healthy))
            else:
                for cap in self.capacities:
                    fitting = _static_fit(cap, demand)
                    if fitting is not None:
                        found.append((cap, [g for g in fitting if g.healthy]))
            self._static[key] = found
        return found

    @staticmethod
    def _free_of(cap: Capacity) -> int:
        return len(cap.gpus) - len(cap.used_indices)  # used ⊆ this host's indices

    def _index(self, demand: Demand) -> tuple[dict[int, _Bucket], list[int]]:
        # One index for shapes that differ only in their GPU count: a host with fewer fitting
        # GPUs than a demand needs is no candidate for it, and in the index it never passes
        # the scan for free ones either (free ⊆ healthy ⊆ fitting), so the choice is the same.
        shape = shape_of(demand)
        found = self._pools.get(shape)
        if found is None:
            pool = replace(demand, gpu_count=0) if demand.gpu_count else demand
            found = self._pools[shape] = (pool, shape_of(pool))
        pool, key = found
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = {}
            for cap, healthy in self.candidates(pool):
                free = self._free.get(cap.provider_id)
                if free is None:
                    free = self._free[cap.provider_id] = self._free_of(cap)
                    cap.watchers.append(self)
                buckets.setdefault(free, _Bucket()).add(cap, healthy)
            for bucket in buckets.values():
                heapify(bucket.heap)
            self._buckets[key] = buckets
            self._keys[key] = sorted(buckets)
        return buckets, self._keys[key]

    def moved(self, cap: Capacity) -> None:
        """The host's used GPUs or task slots changed: file it under its number of free GPUs
        with its score now (a stale, better score left in a heap is corrected when met)."""
        pid = cap.provider_id
        old = self._free.get(pid)
        if old is None:
            return
        new = self._free[pid] = self._free_of(cap)
        for key, buckets in self._buckets.items():
            bucket = buckets.get(old)
            entry = bucket.members.pop(pid, None) if bucket is not None else None
            if entry is None:
                continue
            target = buckets.get(new)
            if target is None:
                target = buckets[new] = _Bucket()
                insort(self._keys[key], new)
            target.add(*entry)
            heappush(target.heap, target.heap.pop())  # add() appended it

    def close(self) -> None:
        """Stop watching the hosts (a matcher used once, not for a whole round)."""
        for cap in self.capacities:
            if self in cap.watchers:
                cap.watchers.remove(self)

    def _refile(self) -> None:
        """File every host again (one was found in the wrong bucket)."""
        self.close()
        self._buckets.clear()
        self._keys.clear()
        self._free.clear()

    def choose(self, demand: Demand) -> Placement | None:
        """The best fit: least capacity left over, then fewest task slots left, then price,
        then least recently used, then provider id."""
        try:
            return self._choose(demand)
        except _Misfiled:
            self._refile()
            return self._choose(demand)

    def _choose(self, demand: Demand) -> Placement | None:
        buckets, keys = self._index(demand)
        need = demand.gpu_count
        host_bound = bool(demand.cpu or demand.memory_mb)
        for free_total in keys[bisect_left(keys, need) :]:
            bucket = buckets[free_total]
            if not bucket.members:
                continue
            # within a bucket the score is (task slots left, price, last placed, id): the
            # first host in that order that can take the demand now is the best fit
            heap, members = bucket.heap, bucket.members
            popped: list[tuple] = []
            pick: tuple[Capacity, list[GpuSlot]] | None = None
            try:
                while heap:
                    top = heap[0]
                    entry = members.get(top[-1])
                    if entry is None or (popped and top == popped[-1]):
                        heappop(heap)  # moved to another bucket, or a repeat
                        continue
                    cap, healthy = entry
                    if len(cap.gpus) - len(cap.used_indices) != free_total:
                        raise _Misfiled(cap.provider_id)
                    now_key = _key(cap)
                    if now_key != top:
                        heapreplace(heap, now_key)  # its score moved: file it where it is now
                        continue
                    popped.append(heappop(heap))
                    if cap.running_tasks >= cap.max_tasks:
                        continue
                    if host_bound and not _host_free(cap, demand):
                        continue
                    used = cap.used_indices
                    free = [g for g in healthy if g.index not in used] if need else []
                    if len(free) >= need:
                        pick = (cap, free)
                        break
            finally:
                for k in popped:
                    heappush(heap, k)
            if pick is not None:
                cap, free = pick
                # Smallest adequate GPUs first, so the big ones stay free for jobs that need them.
                chosen = sorted(free, key=lambda g: (g.memory_total_mb, g.index))[:need]
                return Placement(cap.provider_id, sorted(g.index for g in chosen))
        return None


def choose(demand: Demand, capacities: list[Capacity]) -> Placement | None:
    """The best fit among live providers for one demand (see :class:`Matcher`)."""
    matcher = Matcher(capacities)
    try:
        return matcher.choose(demand)
    finally:
        matcher.close()


def ever_fits(demand: Demand, capacities: list[Capacity]) -> bool:
    """Could any known provider serve this demand if it were idle?"""
    return any(_static_fit(cap, demand) is not None for cap in capacities)


def allocate(cap: Capacity, placement: Placement, at: datetime) -> None:
    """Account a placement on the capacity, so the next choice in this round sees it."""
    cap.running_tasks += 1
    cap.used_indices.update(placement.gpu_indices)
    cap.last_placed_at = at
    for m in cap.watchers:
        m.moved(cap)


def release(cap: Capacity, gpu_indices: Iterable[int]) -> None:
    """An attempt on the host stopped this round (preempted): its task slot and GPUs free."""
    cap.running_tasks -= 1
    cap.used_indices.difference_update(gpu_indices)
    for m in cap.watchers:
        m.moved(cap)


def hold_host(cap: Capacity, demand: Demand) -> None:
    """Account the demand's CPUs and memory on the host it was placed on (with ``allocate``)."""
    cap.used_cpu += demand.cpu or 0.0
    cap.used_memory_mb += demand.memory_mb or 0


def describe(demand: Demand) -> str:
    """The demand in words, for a waiting job's events."""
    parts = [f"{demand.gpu_count} GPU(s)" if demand.gpu_count else "a task slot"]
    if demand.gpu_model:
        parts.append(f"model {demand.gpu_model}")
    if demand.min_vram_mb:
        parts.append(f">= {demand.min_vram_mb} MB")
    if demand.min_compute_capability:
        parts.append(f"compute >= {demand.min_compute_capability}")
    if demand.max_price_per_hour is not None:
        parts.append(f"price <= {demand.max_price_per_hour}/h")
    if demand.labels:
        parts.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(demand.labels.items())))
    if demand.cpu:
        parts.append(f"{demand.cpu:g} CPUs")
    if demand.memory_mb:
        parts.append(f"{demand.memory_mb} MB memory")
    if demand.container:
        parts.append("a Docker engine")
    return ", ".join(parts)


def never_fits_reason(demand: Demand, known: list[Capacity]) -> str:
    """Why no known provider can ever serve the demand: each resource no provider offers, with
    the most any of them has; or, if each is offered somewhere, that no one host has all."""
    unmet: list[str] = []
    if demand.gpu_count:
        gpu_only = Demand(
            gpu_count=demand.gpu_count,
            gpu_model=demand.gpu_model,
            min_vram_mb=demand.min_vram_mb,
            min_compute_capability=demand.min_compute_capability,
        )
        if not any(_static_fit(c, gpu_only) for c in known):
            most = max((sum(_gpu_fits(g, gpu_only) for g in c.gpus) for c in known), default=0)
            what = describe(gpu_only)
            unmet.append(f"{what} (largest: {most} such GPU(s) on one provider)")
    if demand.cpu and not any(c.cpu_count >= demand.cpu for c in known):
        most_cpu = max((c.cpu_count for c in known), default=0)
        unmet.append(f"{demand.cpu:g} CPUs (largest: {most_cpu:g})")
    if demand.memory_mb and not any(c.memory_mb >= demand.memory_mb for c in known):
        most_mem = max((c.memory_mb for c in known), default=0)
        unmet.append(f"{demand.memory_mb} MB memory (largest: {most_mem} MB)")
    if demand.container and not any(c.docker for c in known):
        unmet.append("container jobs (no provider has a Docker engine that answers)")
    price = demand.max_price_per_hour
    if price is not None and not any(c.price_per_hour <= price for c in known):
        cheapest = min((c.price_per_hour for c in known), default=0.0)
        unmet.append(f"a price <= {price}/h (cheapest: {cheapest}/h)")
    if demand.labels and not any(
        all(c.labels.get(k) == v for k, v in demand.labels.items()) for c in known
    ):
        unmet.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(demand.labels.items())))
    if unmet:
        return "no provider offers " + "; ".join(unmet)
    return f"no single provider offers all of: {describe(demand)}"


def wait_reason(demand: Demand, live: list[Capacity]) -> str:
    """Why ``choose`` found nothing: no live provider, none that matches, or all busy."""
    if not live:
        return "waiting: no live provider"
    matching = [c for c in live if _static_fit(c, demand) is not None]
    if not matching:
        return f"waiting: no live provider offers {describe(demand)}"
    return f"waiting: {len(matching)} matching live provider(s), none free now ({describe(demand)})"
