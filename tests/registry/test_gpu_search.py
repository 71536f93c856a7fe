"""The provider search's GPU filters (issue 12): tested on the provider's own row
(``gpu_names``, ``gpu_max_vram_mb``) where that is exact, on the GPU rows otherwise; either
way the answer is "has one GPU whose name matches the glob (``*`` any run, case-insensitive,
every other character literal) and whose memory is at least ``min_vram``". Compared with that
rule written out in Python, for globs that take each path; the summary follows a
re-registration and is filled in by the migration for providers stored before it. Real
registry app, real migrations, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from provider_registry.main import MIGRATIONS
from shared.db import UTCDateTime, ensure_sqlite_dir, make_engine, run_migrations, utcnow
from tests.support.asgi import served
from tests.support.registry import provider, registry_app

VERSION_TABLE = "alembic_version_registry"
BEFORE_SUMMARY = "0005c7d8e9f0"

HOSTS: list[list[tuple[str, int]]] = [
    [("NVIDIA H100 80GB HBM3", 81920)] * 2,
    [("nvidia h100 pcie", 40960), ("NVIDIA A100-SXM4-80GB", 81920)],  # H100 small, A100 big
    [("NVIDIA A100-SXM4-40GB", 40960)],
    [("RTX 4090", 24564), ("rtx 4090", 24564)],  # one model in two spellings
    [("GPU_50%\\x", 1000), ("x%\\", 1000)],  # LIKE's wildcards and its escape, as plain characters
    [("GPUx50Ax", 2000)],  # what "_" and "%" would match were they wildcards
    [("Äx100", 3000)],  # beyond ASCII
    [],  # no GPU
]

QUERIES: list[tuple[str | None, int | None]] = [
    ("*H100*", None),
    ("*h100*", None),
    ("nvidia h100*", None),
    ("*80GB", None),
    ("rtx 4090", None),
    ("RTX", None),  # a whole name only
    ("*", None),  # any GPU, but one
    ("**H100**", None),
    ("*A*100*", None),  # a star inside: the GPU rows decide
    ("NVIDIA*80GB*", None),
    ("*H100*SXM*", None),
    ("*A100*PCIE*", None),  # both pieces in one host's names, in no one name
    ("GPU_50%\\x", None),
    ("*_50%*", None),
    ("*\\*", None),
    ("*%\\", None),  # a trailing backslash: LIKE's escape character, were it not escaped
    ("GPU?50*", None),
    ("äx100", None),
    ("*Ä*", None),
    (None, 50000),
    (None, 81920),
    (None, 81921),
    ("*H100*", 50000),  # one GPU must meet both: not host 2 (its big GPU is an A100)
    ("*A100*", 50000),
    ("*", 2500),
]


def matches(gpus: list[tuple[str, int]], gpu_model: str | None, min_vram: int | None) -> bool:
    """The rule, without SQL."""
    glob = None
    if gpu_model:
        glob = re.compile(".*".join(map(re.escape, gpu_model.lower().split("*"))), re.S)
    return any(
        (glob is None or glob.fullmatch(name.lower()) is not None) and mem >= (min_vram or 0)
        for name, mem in gpus
    )


def expect(ids: list[str], gpu_model: str | None, min_vram: int | None) -> list[str]:
    """Which of HOSTS (registered as ``ids``) the rule selects, in order."""
    return [pid for pid, gpus in zip(ids, HOSTS, strict=True) if matches(gpus, gpu_model, min_vram)]


def body(gpus: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "name": "host",
        "gpus": [{"index": i, "name": n, "memory_total_mb": m} for i, (n, m) in enumerate(gpus)],
    }


async def search(client: Any, headers: dict[str, str], **query: Any) -> list[str]:
    params = {k: v for k, v in query.items() if v is not None}
    r = await client.get("/api/v1/providers", params={**params, "count": "true"}, headers=headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == len(page["providers"])
    return [p["id"] for p in page["providers"]]


async def test_gpu_filters_match_the_rule(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any
) -> None:
    app = registry_app(db_url, nats_url, local_jwks)
    async with served(app, "http://registry") as client:
        ids: list[str] = []
        for gpus in HOSTS:
            pid, daemon = provider(mint_token)
            r = await client.post("/api/v1/providers", json=body(gpus), headers=daemon)
            assert r.status_code == 201, r.text
            ids.append(pid)
        for gpu_model, min_vram in QUERIES:
            expected = expect(ids, gpu_model, min_vram)
            got = await search(client, daemon, gpu_model=gpu_model, min_vram=min_vram)
            assert got == expected, (gpu_model, min_vram)
        # a few that the rule must not be vacuous on
        assert await search(client, daemon, gpu_model="*H100*") == ids[:2]
        assert await search(client, daemon, gpu_model="*H100*", min_vram=50000) == ids[:1]
        assert await search(client, daemon, gpu_model="*A100*PCIE*") == []
        assert await search(client, daemon, gpu_model="GPU_50%\\x") == [ids[4]]
        assert await search(client, daemon, gpu_model="*") == ids[:7]


async def test_the_summary_follows_a_reregistration(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any
) -> None:
    app = registry_app(db_url, nats_url, local_jwks)
    async with served(app, "http://registry") as client:
        pid, daemon = provider(mint_token)
        r = await client.post("/api/v1/providers", json=body(HOSTS[0]), headers=daemon)
        assert r.status_code == 201, r.text
        assert await search(client, daemon, gpu_model="*H100*", min_vram=81920) == [pid]
        r = await client.post("/api/v1/providers", json=body(HOSTS[2]), headers=daemon)
        assert r.status_code == 200, r.text
        assert await search(client, daemon, gpu_model="*H100*") == []
        assert await search(client, daemon, min_vram=81920) == []
        assert await search(client, daemon, gpu_model="*a100*", min_vram=40960) == [pid]
        r = await client.post("/api/v1/providers", json=body([]), headers=daemon)
        assert r.status_code == 200, r.text
        assert await search(client, daemon, gpu_model="*") == []
        assert await search(client, daemon) == [pid]


def _upgrade(url: str, revision: str) -> None:
    ensure_sqlite_dir(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    cfg.attributes["version_table"] = VERSION_TABLE
    command.upgrade(cfg, revision)


async def stored_before_summary(db_url: str) -> list[str]:
    """A registry database at the revision before the GPU summary, with HOSTS in it."""
    await asyncio.to_thread(_upgrade, db_url, BEFORE_SUMMARY)
    provider_row = sa.text(
        "INSERT INTO providers (id, owner_id, name, hostname, status, cpu_count, memory_mb,"
        " docker, max_concurrent_tasks, price_per_hour, labels, registered_at, updated_at)"
        " VALUES (:id, :owner, 'h', '', 'online', 0, 0, false, 1, 1.0, '{}', :at, :at)"
    ).bindparams(sa.bindparam("at", type_=UTCDateTime))
    gpu_row = sa.text(
        'INSERT INTO gpus (provider_id, "index", uuid, name, memory_total_mb, healthy, metrics)'
        " VALUES (:p, :i, '', :n, :m, true, '{}')"
    )
    ids = []
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        for gpus in HOSTS:
            pid = str(uuid.uuid4())
            ids.append(pid)
            await conn.execute(
                provider_row, {"id": pid, "owner": str(uuid.uuid4()), "at": utcnow()}
            )
            for i, (name, mem) in enumerate(gpus):
                await conn.execute(gpu_row, {"p": pid, "i": i, "n": name, "m": mem})
    await engine.dispose()
    return ids


async def test_the_migration_summarises_stored_providers(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any
) -> None:
    ids = await stored_before_summary(db_url)
    await run_migrations(MIGRATIONS, db_url, VERSION_TABLE)
    engine = make_engine(db_url)
    async with engine.connect() as conn:
        rows = {
            r.id: (r.gpu_names, r.gpu_max_vram_mb)
            for r in await conn.execute(
                sa.text("SELECT id, gpu_names, gpu_max_vram_mb FROM providers")
            )
        }
    await engine.dispose()
    assert rows[ids[0]] == ("\nnvidia h100 80gb hbm3\n", 81920)
    assert rows[ids[3]] == ("\nrtx 4090\n", 24564)
    assert rows[ids[7]] == ("", 0)
    app = registry_app(db_url, nats_url, local_jwks)
    _, daemon = provider(mint_token)
    async with served(app, "http://registry") as client:
        for gpu_model, min_vram in QUERIES:
            expected = expect(ids, gpu_model, min_vram)
            got = await search(client, daemon, gpu_model=gpu_model, min_vram=min_vram)
            assert sorted(got) == sorted(expected), (gpu_model, min_vram)
