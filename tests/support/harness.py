"""A test harness standing in for the gateway and for provider daemons, over real NATS.

It registers simulated providers with the real registry (HTTP, provider tokens), submits jobs
as the gateway does (``jobs.submitted``), and answers each provider's tasks on NATS as a daemon
would (running, then completed), checking that no GPU index is handed out twice at once.
No GPU exists here, so the daemon side is simulated; everything it talks to is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import nats
import sqlalchemy as sa
from nats.aio.msg import Msg

from shared.contracts import (
    JobState,
    JobSubmitted,
    ProviderEvent,
    TaskCancel,
    TaskDispatch,
    TaskStatus,
)
from shared.db import make_engine, utcnow
from shared.nats import publish
from tests.support.processes import service_process, wait_process_ready


@dataclass
class SimProvider:
    id: str
    owner_id: str
    gpus: int
    max_tasks: int
    price: float
    busy: set[int] = field(default_factory=set)
    running: int = 0


@dataclass
class Harness:
    nats_url: str
    mint_token: Callable[..., str]
    providers: dict[str, SimProvider] = field(default_factory=dict)
    dispatches: Counter[str] = field(default_factory=Counter)  # job_id → tasks received
    completed: Counter[str] = field(default_factory=Counter)  # job_id → completions reported
    violations: list[str] = field(default_factory=list)
    run_seconds: tuple[float, float] = (0.01, 0.05)
    auto_answer: bool = True  # False: only record tasks (a daemon that never starts them)
    tasks: list[TaskDispatch] = field(default_factory=list)
    cancels: list[tuple[str, int]] = field(default_factory=list)  # (job_id, attempt)

    async def __aenter__(self) -> Harness:
        self.nc = await nats.connect(self.nats_url)
        self.js = self.nc.jetstream()
        self.sub = await self.nc.subscribe("tasks.dispatch.*", cb=self._on_task)
        self._tasks: set[asyncio.Task[None]] = set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await self.nc.drain()

    async def register(self, registry: httpx.AsyncClient, n: int, gpus: int = 4) -> None:
        for i in range(n):
            owner, pid = str(uuid.uuid4()), str(uuid.uuid4())
            token = self.mint_token("provider", owner, provider_id=pid)
            body = {
                "name": f"sim-{i}",
                "max_concurrent_tasks": gpus,
                "price_per_hour": 1.0 + i % 3,
                "gpus": [
                    {"index": g, "name": "NVIDIA A100-SXM4-40GB", "memory_total_mb": 40960}
                    for g in range(gpus)
                ],
            }
            r = await registry.post(
                "/api/v1/providers", json=body, headers={"authorization": f"Bearer {token}"}
            )
            assert r.status_code in (200, 201), r.text
            self.providers[pid] = SimProvider(pid, owner, gpus, gpus, body["price_per_hour"])

    async def submit(
        self,
        owner: str,
        gpu_count: int,
        name: str = "sim",
        job_type: Literal["script", "container"] = "script",
        **spec_: object,
    ) -> str:
        job_id = str(uuid.uuid4())
        spec = {"resources": {"gpu_count": gpu_count}, "max_retries": 3, **spec_}
        default = {"docker_image": "alpine:3"} if job_type == "container" else None
        spec.setdefault("params", default or {"script_content": "true"})
        msg = JobSubmitted(
            job_id=job_id,
            owner_id=owner,
            type=job_type,
            name=name,
            spec=spec,
            submitted_at=utcnow(),
        )
        await publish(self.js, "jobs.submitted", msg, msg_id=job_id)
        return job_id

    async def _on_task(self, msg: Msg) -> None:
        if b'"kind":"cancel"' in msg.data:
            cancel = TaskCancel.model_validate_json(msg.data)
            self.cancels.append((cancel.job_id, cancel.attempt))
            return
        task = TaskDispatch.model_validate_json(msg.data)
        self.dispatches[task.job_id] += 1
        self.tasks.append(task)
        if not self.auto_answer:
            return
        prov = self.providers.get(task.provider_id)
        if prov is None:
            self.violations.append(f"{task.job_id} sent to unknown provider {task.provider_id}")
            return
        clash = prov.busy & set(task.gpu_indices)
        if clash or prov.running >= prov.max_tasks:
            self.violations.append(f"{task.job_id} on {prov.id}: GPUs {clash} busy or no slot")
        prov.busy |= set(task.gpu_indices)
        prov.running += 1
        t = asyncio.create_task(self._run(prov, task))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _run(self, prov: SimProvider, task: TaskDispatch) -> None:
        await self._report(task, JobState.RUNNING)
        await asyncio.sleep(random.uniform(*self.run_seconds))
        # free the GPUs before saying so, as a daemon does when the process has exited
        prov.busy -= set(task.gpu_indices)
        prov.running -= 1
        self.completed[task.job_id] += 1
        await self._report(task, JobState.COMPLETED, exit_code=0)

    async def announce(self, pid: str, gpus: list[dict], **fields: object) -> None:
        """A registry event for a provider the scheduler should know (no registry needed)."""
        ev = ProviderEvent(
            kind="registered", provider_id=pid, status="online", at=utcnow(), gpus=gpus, **fields
        )  # type: ignore[arg-type]
        await publish(self.js, "providers.events.registered", ev)
        self.providers[pid] = SimProvider(
            pid,
            str(fields.get("owner_id", "")),
            len(gpus),
            int(fields.get("max_concurrent_tasks", 1)),
            0.0,
        )

    async def report(self, task: TaskDispatch, state: JobState, **kw: object) -> None:
        await self._report(task, state, **kw)

    async def _report(self, task: TaskDispatch, state: JobState, **kw: object) -> None:
        st = TaskStatus(
            job_id=task.job_id,
            attempt=task.attempt,
            provider_id=task.provider_id,
            state=state,
            at=utcnow(),
            **kw,  # type: ignore[arg-type]
        )
        subject = f"jobs.status.{task.job_id}"
        for _ in range(20):  # NATS may be briefly busy; a daemon retries its reports too
            with contextlib.suppress(Exception):
                await publish(
                    self.js,
                    subject,
                    st,
                    msg_id=f"{task.job_id}:{task.attempt}:{task.provider_id}:{state}",
                )
                return
            await asyncio.sleep(0.25)


def scheduler_process(
    db_url: str, nats_url: str, log_path: Path, **settings: str
) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[bytes], int]]:
    """``python -m scheduler serve`` as a real process on a free port."""
    return service_process("scheduler", "DANTE_SCHEDULER_", db_url, nats_url, log_path, **settings)


async def wait_healthy(proc: subprocess.Popen[bytes], port: int, limit: float = 60) -> None:
    await wait_process_ready(proc, port, "scheduler", limit)


async def job_rows(db_url: str) -> tuple[dict[str, tuple[str, int]], Counter[str]]:
    """Each job's (state, attempt), and how many times each job was ever dispatched."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            jobs = {
                r[0]: (r[1], r[2])
                for r in await conn.execute(sa.text("SELECT id, state, attempt FROM jobs"))
            }
            placed = Counter(
                r[0]
                for r in await conn.execute(
                    sa.text("SELECT job_id FROM job_events WHERE to_state = 'dispatched'")
                )
            )
    finally:
        await engine.dispose()
    return jobs, placed
