"""The scheduler side of job I/O, against the real storage service (local-disk backend,
in-process): inputs/outputs/log presigned at dispatch, a missing input fails the job, storage
down keeps an I/O job queued (and says why) while a job without I/O still runs, artifacts kept.

The presigner's token here is an admin's (minted with the test keyring): accepting the
``service`` role is the storage service's to test; the lead's end-to-end test runs the real
client-credentials flow through localdev.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.storage_io import HttpPresigner
from shared.contracts import JobState, log_key
from tests.support.asgi import served
from tests.support.harness import Harness
from tests.support.scheduler import RTX, auth, events, job_in
from tests.support.wait import eventually_async

PUBLIC = "http://gateway.example"


class MintedTokens:
    def __init__(self, mint: Callable[..., str]) -> None:
        self.mint = mint
        self.invalidated = 0

    async def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.mint('admin', 'service-stand-in')}"}

    def invalidate(self) -> None:
        self.invalidated += 1


@pytest.fixture
async def storage(
    tmp_path: Path, own_nats: str, local_jwks: Callable[[], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    from storage_service.main import create_app
    from storage_service.settings import StorageSettings

    settings = StorageSettings(
        root_dir=tmp_path / "objects", public_url=PUBLIC, nats_url=own_nats, port=0
    )
    app = create_app(settings, jwks=local_jwks)
    async with served(app, "http://storage") as client:
        yield client


def presigner(client: httpx.AsyncClient, mint: Callable[..., str], base: str) -> HttpPresigner:
    async def resolve() -> str:
        return base

    return HttpPresigner(resolve, client, MintedTokens(mint), expires_in=600)


async def test_dispatch_carries_presigned_io_and_artifacts_are_kept(
    scheduler_factory: Any, storage: httpx.AsyncClient, own_nats: str, mint_token: Any
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    put = await storage.put("/api/v1/storage/objects/data/in.txt", content=b"hi", headers=me)
    assert put.status_code == 201, put.text
    io = presigner(storage, mint_token, "http://storage")
    async with (
        scheduler_factory(presigner=io) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-io", RTX, max_concurrent_tasks=2)
        job_id = await h.submit(owner, 1, inputs=["data/in.txt"], outputs=["out/r.txt"])
        await job_in(client, me, job_id, "dispatched")
        task = await eventually_async(lambda: _task(h, job_id))
        assert [o.key for o in task.inputs] == ["data/in.txt"]
        assert [o.key for o in task.outputs] == ["out/r.txt"]
        assert task.log_upload is not None and task.log_upload.key == log_key(job_id, 1)
        urls = [o.url for o in [*task.inputs, *task.outputs, task.log_upload]]
        assert all(u.startswith(PUBLIC + "/api/v1/storage/presigned/") for u in urls)
        # the input URL really serves the owner's object, with no token
        got = await storage.get(task.inputs[0].url.removeprefix(PUBLIC))
        assert got.status_code == 200 and got.content == b"hi"

        await h.report(task, JobState.RUNNING)
        await h.report(
            task,
            JobState.COMPLETED,
            exit_code=0,
            artifacts=[log_key(job_id, 1), "out/r.txt", "not/declared.bin"],
        )
        done = await job_in(client, me, job_id, "completed")
        assert done["artifacts"] == [
            {"key": log_key(job_id, 1), "kind": "log"},
            {"key": "out/r.txt", "kind": "output"},
        ]

        missing = await h.submit(owner, 1, inputs=["data/nope.txt"])
        failed = await job_in(client, me, missing, "failed")
        assert "input does not exist" in failed["error"]


async def test_storage_down_holds_io_jobs_and_lets_others_run(
    scheduler_factory: Any, own_nats: str, mint_token: Any
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with httpx.AsyncClient() as http:
        dead = presigner(http, mint_token, "http://127.0.0.1:9")  # discard port: refused
        async with (
            scheduler_factory(presigner=dead) as (_, client),
            Harness(own_nats, mint_token, auto_answer=False) as h,
        ):
            await h.announce("p-io", RTX, max_concurrent_tasks=2)
            io_job = await h.submit(owner, 1, outputs=["out/r.txt"])
            plain = await h.submit(owner, 1)
            await job_in(client, me, plain, "dispatched")
            task = await eventually_async(lambda: _task(h, plain))
            assert task.log_upload is None and task.inputs == [] and task.outputs == []

            async def said() -> list[dict] | None:
                evs = await events(client, me, io_job)
                return [e for e in evs if "storage unavailable" in e["cause"]] or None

            why = await eventually_async(said)
            assert why[0]["to"] == "queued"
            job = (await client.get(f"/api/v1/jobs/{io_job}", headers=me)).json()
            assert job["status"] == "queued" and job["provider_id"] is None


async def _task(h: Harness, job_id: str) -> Any:
    return next((t for t in h.tasks if t.job_id == job_id), None)
