"""Fair share vs FIFO on one synthetic trace, through the scheduler's own policy code.

Replays a seeded, bursty trace of three users (shares 1:1:2) on ``--providers`` hosts of
``--gpus`` GPUs each. Every placement round does what ``scheduler/dispatch.py`` does, with the
same modules: the round's candidates (the first ``--batch`` queued jobs by priority/FIFO, plus
each waiting owner's first ``--per-owner`` under fair share), ordered by
``scheduler.fairshare.order`` (or plain FIFO / priority-then-FIFO), placed with
``scheduler.placement.Matcher.choose`` and ``allocate``; usage is decayed and brought in as
``scheduler.policy_store`` does. Only the clock, the database and NATS are simulated: rounds
every ``--round-seconds`` of simulated time, and a job ends after its drawn duration.

Reports, per policy: each user's share of the used GPU-hours in contended hours (every user
had work waiting) against the target, the mean absolute gap per hour, p50/p99 wait by priority
class, and utilisation (busy GPU-seconds / capacity over the submission window).

    python bench/fairness.py                    # the figures in docs/scheduler.md
    python bench/fairness.py --hours 12 --json  # machine-readable
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler import fairshare, placement  # noqa: E402

cli = typer.Typer(add_completion=False)
USERS = {"alice": 1.0, "bob": 1.0, "carol": 2.0}
PRIORITIES = [(1, 0.3), (5, 0.5), (9, 0.2)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class SimJob:
    id: str
    owner: str
    priority: int
    gpus: int
    duration: float
    submitted: float
    placed: float | None = None
    where: placement.Placement | None = None

    def fifo_key(self) -> tuple[float, str]:
        return (self.submitted, self.id)

    def prio_key(self) -> tuple[int, float, str]:
        return (-self.priority, self.submitted, self.id)


def trace(hours: float, gpus_total: int, load: float, seed: int) -> list[SimJob]:
    """Bursts per user: alice floods (big bursts), bob bursts rarely, carol (share 2) steadily.
    Job sizes 1/1/2/4 GPUs, durations lognormal (median ~2.5 h). Mean offered load ``load`` x
    the fleet, split alice 45 %, bob 25 %, carol 30 %: at load 2 every user asks for more than
    their share (alice 0.9 of the fleet against 0.25, carol 0.6 against 0.5)."""
    rng = random.Random(seed)
    mean_gpus = (1 + 1 + 2 + 4) / 4
    mu, sigma = math.log(2.5 * 3600), 0.6
    mean_dur = math.exp(mu + sigma**2 / 2)
    jobs_per_s = load * gpus_total / (mean_gpus * mean_dur)
    split = {"alice": (0.45, 40 * 60), "bob": (0.25, 3 * 3600), "carol": (0.3, 15 * 60)}
    out: list[SimJob] = []
    for owner, (frac, gap) in split.items():
        t = rng.uniform(0, gap)
        burst = frac * jobs_per_s * gap  # jobs per burst, so the rate averages out
        while t < hours * 3600:
            n = max(1, int(rng.gauss(burst, burst * 0.3)))
            for _ in range(n):
                prio = rng.choices([p for p, _ in PRIORITIES], [w for _, w in PRIORITIES])[0]
                out.append(
                    SimJob(
                        id=f"{owner}-{len(out)}",
                        owner=owner,
                        priority=prio,
                        gpus=rng.choice([1, 1, 2, 4]),
                        duration=rng.lognormvariate(mu, sigma),
                        submitted=t + rng.uniform(0, 60),
                    )
                )
            t += rng.expovariate(1 / gap)
    out.sort(key=lambda j: j.submitted)
    return out


@dataclass
class Fleet:
    caps: list[placement.Capacity]
    gpus: int
    free_hist: list[int] = field(default_factory=list)  # hosts with exactly k GPUs free

    @classmethod
    def build(cls, providers: int, gpus: int) -> Fleet:
        caps = [
            placement.Capacity(
                provider_id=f"p{i:04d}",
                price_per_hour=1.0 + i % 3,
                max_tasks=gpus,
                gpus=[placement.GpuSlot(g, "NVIDIA A100-SXM4-40GB", 40960) for g in range(gpus)],
            )
            for i in range(providers)
        ]
        hist = [0] * (gpus + 1)
        hist[gpus] = providers
        return cls(caps, gpus, hist)

    def max_free(self) -> int:
        for k in range(self.gpus, -1, -1):
            if self.free_hist[k]:
                return k
        return 0

    def _free(self, cap: placement.Capacity) -> int:
        return len(cap.gpus) - len(cap.used_indices)

    def take(self, cap: placement.Capacity, p: placement.Placement, at: datetime) -> None:
        self.free_hist[self._free(cap)] -= 1
        placement.allocate(cap, p, at)
        self.free_hist[self._free(cap)] += 1

    def release(self, cap: placement.Capacity, p: placement.Placement) -> None:
        self.free_hist[self._free(cap)] -= 1
        cap.running_tasks -= 1
        cap.used_indices.difference_update(p.gpu_indices)
        self.free_hist[self._free(cap)] += 1


def simulate(
    jobs: list[SimJob],
    *,
    policy: str,
    providers: int,
    gpus: int,
    hours: float,
    round_seconds: float,
    batch: int,
    per_owner: int,
    half_life: float,
) -> dict:
    fleet = Fleet.build(providers, gpus)
    by_id = {c.provider_id: c for c in fleet.caps}
    matcher = placement.Matcher(fleet.caps)
    cfg = fairshare.FairShareConfig(half_life_seconds=half_life, shares=USERS)
    queue: list[tuple] = []  # sorted by the policy's base order
    per_owner_q: dict[str, list[tuple]] = {u: [] for u in USERS}
    ending: list[tuple[float, str]] = []  # (end time, job id)
    live: dict[str, SimJob] = {}
    decayed = {u: 0.0 for u in USERS}
    decayed_at = 0.0
    run_gpus = {u: 0 for u in USERS}
    run_start_sum = {u: 0.0 for u in USERS}  # sum of gpus x start time of running jobs
    horizon = hours * 3600
    bucket = 3600.0
    used = [dict.fromkeys(USERS, 0.0) for _ in range(int(hours) + 1)]
    contended = [True] * (int(hours) + 1)
    busy_gpu_s = 0.0
    nxt = 0
    now = 0.0
    key = (lambda j: j.fifo_key()) if policy == "fifo" else (lambda j: j.prio_key())
    while now < horizon or queue:
        if now > horizon * 3:
            break  # a backlog that never drains: stop, the window's figures are complete
        # arrivals up to now
        while nxt < len(jobs) and jobs[nxt].submitted <= now:
            j = jobs[nxt]
            item = (*key(j), j.id)
            bisect.insort(queue, item)
            bisect.insort(per_owner_q[j.owner], (*j.prio_key(), j.id))
            live[j.id] = j
            nxt += 1
        # completions up to now
        while ending and ending[0][0] <= now:
            end, jid = heapq.heappop(ending)
            j = live.pop(jid)
            assert j.where is not None and j.placed is not None
            fleet.release(by_id[j.where.provider_id], j.where)
            gpu_s = j.gpus * (end - j.placed)
            decayed[j.owner] = fairshare.decay(decayed[j.owner], end - decayed_at, half_life)
            for u in USERS:
                if u != j.owner:
                    decayed[u] = fairshare.decay(decayed[u], end - decayed_at, half_life)
            decayed[j.owner] += gpu_s
            decayed_at = end
            run_gpus[j.owner] -= j.gpus
            run_start_sum[j.owner] -= j.gpus * j.placed
        # the round
        at = T0 + timedelta(seconds=now)
        if queue and fleet.max_free() > 0:
            cands = [live[item[-1]] for item in queue[:batch]]
            if policy == "fairshare":
                have = {j.id for j in cands}
                for u in USERS:
                    cands += [live[i[-1]] for i in per_owner_q[u][:per_owner] if i[-1] not in have]
                usage = {
                    u: fairshare.decay(decayed[u], now - decayed_at, half_life)
                    + run_gpus[u] * now
                    - run_start_sum[u]
                    for u in USERS
                }
                ranked = [
                    fairshare.Ranked(j.id, j.owner, j.priority, T0 + timedelta(seconds=j.submitted))
                    for j in cands
                ]
                cands = [live[r.key] for r, _, _ in fairshare.order(ranked, usage, at, cfg)]
            for j in cands:
                if fleet.max_free() < j.gpus:
                    if fleet.max_free() == 0:
                        break
                    continue  # a smaller job may still backfill
                choice = matcher.choose(placement.Demand(gpu_count=j.gpus))
                if choice is None:
                    continue
                fleet.take(by_id[choice.provider_id], choice, at)
                j.placed, j.where = now, choice
                queue.remove((*key(j), j.id))
                per_owner_q[j.owner].remove((*j.prio_key(), j.id))
                heapq.heappush(ending, (now + j.duration, j.id))
                run_gpus[j.owner] += j.gpus
                run_start_sum[j.owner] += j.gpus * now
        # account the step
        step = round_seconds
        h = int(now // bucket)
        if now < horizon:
            waiting = {live[i[-1]].owner for i in queue}
            if waiting != set(USERS):
                contended[h] = False
            for u in USERS:
                used[h][u] += run_gpus[u] * step
            busy_gpu_s += sum(run_gpus.values()) * step
        now += step
    return report(jobs, used, contended, busy_gpu_s, providers * gpus, horizon)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(
    jobs: list[SimJob],
    used: list[dict[str, float]],
    contended: list[bool],
    busy: float,
    gpus_total: int,
    horizon: float,
) -> dict:
    total_share = sum(USERS.values())
    target = {u: s / total_share for u, s in USERS.items()}
    hours = [h for h in range(len(used)) if contended[h] and sum(used[h].values()) > 0]
    share = {u: 0.0 for u in USERS}
    gaps = []
    for h in hours:
        tot = sum(used[h].values())
        for u in USERS:
            share[u] += used[h][u]
        gaps.append(sum(abs(used[h][u] / tot - target[u]) for u in USERS) / len(USERS))
    tot = sum(share.values()) or 1.0
    waits: dict[int, list[float]] = {}
    by_user: dict[str, list[float]] = {u: [] for u in USERS}
    unplaced = 0
    for j in jobs:
        if j.placed is None:
            unplaced += 1
            continue
        waits.setdefault(j.priority, []).append((j.placed - j.submitted) / 60)
        by_user[j.owner].append((j.placed - j.submitted) / 60)
    return {
        "contended_hours": len(hours),
        "share": {u: round(share[u] / tot, 3) for u in USERS},
        "target": {u: round(target[u], 3) for u in USERS},
        "mean_abs_gap_per_hour": round(statistics.fmean(gaps), 3) if gaps else None,
        "wait_minutes": {
            p: {"p50": round(pct(w, 0.5), 1), "p99": round(pct(w, 0.99), 1), "n": len(w)}
            for p, w in sorted(waits.items())
        },
        "wait_p50_by_user": {u: round(pct(w, 0.5), 1) for u, w in by_user.items()},
        "unplaced": unplaced,
        "utilisation": round(busy / (gpus_total * horizon), 3),
    }


@cli.command()
def main(
    providers: int = 1000,
    gpus: int = 4,
    hours: float = 36.0,
    load: float = 2.0,
    seed: int = 17,
    round_seconds: float = 60.0,
    batch: int = 200,
    per_owner: int = 20,
    half_life_hours: float = 12.0,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    jobs = trace(hours, providers * gpus, load, seed)
    results = {}
    for policy in ("fifo", "priority", "fairshare"):
        started = time.perf_counter()
        results[policy] = simulate(
            [SimJob(**{**j.__dict__}) for j in jobs],
            policy=policy,
            providers=providers,
            gpus=gpus,
            hours=hours,
            round_seconds=round_seconds,
            batch=batch,
            per_owner=per_owner,
            half_life=half_life_hours * 3600,
        )
        results[policy]["sim_seconds"] = round(time.perf_counter() - started, 1)
    if as_json:
        print(json.dumps({"jobs": len(jobs), "results": results}, indent=2))
        return
    print(f"{len(jobs)} jobs, {providers} providers x {gpus} GPUs, {hours:g} h, load {load:g}")
    for policy, r in results.items():
        print(f"\n== {policy} ({r['sim_seconds']} s to simulate)")
        print(f"  contended hours {r['contended_hours']}, utilisation {r['utilisation']:.1%}")
        for u in USERS:
            print(
                f"  {u:6s} share {r['share'][u]:.3f}  target {r['target'][u]:.3f}"
                f"  wait p50 {r['wait_p50_by_user'][u]} min"
            )
        print(f"  mean |share - target| per contended hour: {r['mean_abs_gap_per_hour']}")
        for p, w in r["wait_minutes"].items():
            print(f"  priority {p}: wait p50 {w['p50']} min, p99 {w['p99']} min (n={w['n']})")
        print(f"  never placed in the run: {r['unplaced']}")


if __name__ == "__main__":
    cli()
