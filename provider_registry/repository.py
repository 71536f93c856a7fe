from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from provider_registry.models import GPU_NAMES_SEP, Gpu, Provider

GPUS = cast(sa.Table, Gpu.__table__)


def _json_as_text(columns: Iterable[sa.ColumnElement[Any]]) -> list[sa.ColumnElement[Any]]:
    """The columns, a JSON one read as its text under its own name (see :func:`_dicts`)."""
    return [sa.cast(c, sa.Text).label(c.key) if isinstance(c.type, sa.JSON) else c for c in columns]


def _gpus_of_pg() -> sa.Select[Any]:
    """``unnest(:ids) AS page(id) JOIN LATERAL (the GPUs of page.id ORDER BY index)``: one
    statement for any number of ids (SQLAlchemy caches it; a VALUES list is compiled anew for
    each page). The ORDER BY inside also keeps PostgreSQL from flattening it into a join."""
    page = (
        sa.func.unnest(sa.bindparam("ids", type_=ARRAY(sa.String)))
        .table_valued("id")
        .render_derived(name="page")
    )
    each = (
        sa.select(GPUS)
        .where(GPUS.c.provider_id == page.c.id)
        .order_by(GPUS.c.index)
        .lateral("each_gpu")
    )
    return (
        sa.select(*_json_as_text(each.c))
        .select_from(page.join(each, sa.true()))
        .order_by(each.c.provider_id, each.c.index)
    )


_GPUS_OF_PG = _gpus_of_pg()
SHOWN = [c for c in Provider.__table__.columns if c.key not in ("gpu_names", "gpu_max_vram_mb")]
"""A provider's columns as the API shows them (the GPU summary is the search's alone)."""
JSON_SHOWN = tuple(c.key for c in SHOWN if isinstance(c.type, sa.JSON))
JSON_GPU = tuple(c.key for c in GPUS.c if isinstance(c.type, sa.JSON))


class ProviderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, provider_id: str, *, for_update: bool = False) -> Provider | None:
        stmt = sa.select(Provider).where(Provider.id == provider_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add(self, provider: Provider) -> None:
        self.session.add(provider)
        await self.session.flush()

    async def delete(self, provider: Provider) -> None:
        await self.session.delete(provider)
        await self.session.flush()

    async def search(
        self,
        *,
        status: str | None = None,
        gpu_model: str | None = None,
        min_vram_mb: int | None = None,
        owner_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: tuple[datetime, str] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page in (registered_at, id) order, read along an index (keyset: ``after`` is the
        last row of the previous page), and whether more match: ``limit + 1`` rows are read, no
        count over every match (issue 12). Rows, not ORM objects (a page of 50 hosts x 8 GPUs
        spent most of its time building and tracking objects only read once); the page's GPUs
        come in one more query (:meth:`_gpus_of`). A GPU filter is tested on the provider's
        own row where it can be (:func:`gpu_filter`)."""
        stmt = self._matching(status, gpu_model, min_vram_mb, owner_id)
        if after is not None:
            at, provider_id = after
            stmt = stmt.where(
                sa.or_(
                    Provider.registered_at > at,
                    sa.and_(Provider.registered_at == at, Provider.id > provider_id),
                )
            )
        stmt = stmt.order_by(Provider.registered_at, Provider.id).limit(limit + 1).offset(offset)
        stmt = stmt.with_only_columns(*_json_as_text(SHOWN))
        rows = await _dicts(self.session, stmt, JSON_SHOWN)
        more = len(rows) > limit
        page = rows[:limit]
        by_id: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in page}
        if by_id:
            for g in await _dicts(self.session, self._gpus_of(list(by_id)), JSON_GPU):
                by_id[g["provider_id"]].append(g)
        for r in page:
            r["gpus"] = by_id[r["id"]]
        return page, more

    def _gpus_of(self, provider_ids: list[str]) -> sa.Select[Any]:
        """The GPUs of these providers, each provider's in index order. On PostgreSQL as a
        LATERAL lookup per provider: without statistics (a fresh table, or autovacuum off, as
        on the test server) ``provider_id IN (...50 ids)`` was planned as a scan of every GPU
        (80,000 rows at 10,000 providers: ~12 ms); the lookup stays on the primary key."""
        if self.session.get_bind().dialect.name == "postgresql":
            return _GPUS_OF_PG.params(ids=provider_ids)
        return (
            sa.select(*_json_as_text(GPUS.c))
            .where(GPUS.c.provider_id.in_(provider_ids))
            .order_by(GPUS.c.provider_id, GPUS.c.index)
        )

    async def count(
        self,
        *,
        status: str | None = None,
        gpu_model: str | None = None,
        min_vram_mb: int | None = None,
        owner_id: str | None = None,
    ) -> int:
        """How many providers match: a cost in the number of matches (asked for explicitly;
        without a GPU filter it is a count along an index)."""
        stmt = self._matching(status, gpu_model, min_vram_mb, owner_id)
        total = sa.select(sa.func.count()).select_from(
            stmt.with_only_columns(Provider.id).subquery()
        )
        return int((await self.session.execute(total)).scalar_one())

    @staticmethod
    def _matching(
        status: str | None, gpu_model: str | None, min_vram_mb: int | None, owner_id: str | None
    ) -> sa.Select[Provider]:
        stmt = sa.select(Provider)
        if status:
            stmt = stmt.where(Provider.status == status)
        if owner_id:
            stmt = stmt.where(Provider.owner_id == owner_id)
        return stmt.where(*gpu_filter(gpu_model, min_vram_mb))

    async def stale_online(self, before: datetime, limit: int = 500) -> list[Provider]:
        """Online providers whose last heartbeat is older than ``before``, locked for update.

        SKIP LOCKED lets several registry replicas sweep at once without fighting.
        """
        stmt = (
            sa.select(Provider)
            .where(Provider.status == "online", Provider.last_heartbeat_at < before)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())


async def _dicts(
    session: AsyncSession, stmt: sa.Select[Any], json_keys: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Rows as dicts, the keys read once (``Row._mapping`` builds a key view per row); the
    ``json_keys`` columns, read as text, decoded with one ``json.loads`` over all rows instead
    of one per value (a page's 400 GPU rows spent ~1 ms in per-value decoding)."""
    result = await session.execute(stmt)
    keys = list(result.keys())
    rows = [dict(zip(keys, row, strict=True)) for row in result]
    for key in json_keys:
        texts = ("null" if r[key] is None else r[key] for r in rows)
        for r, value in zip(rows, json.loads("[" + ",".join(texts) + "]"), strict=True):
            r[key] = value
    return rows


def _like_escaped(text: str) -> str:
    """``text`` as a LIKE pattern (ESCAPE '\\') that matches it literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def gpu_filter(gpu_model: str | None, min_vram_mb: int | None) -> list[sa.ColumnElement[bool]]:
    """The conditions for "has a GPU whose name matches the glob ``gpu_model`` (``*`` any run
    of characters, case-insensitive) and whose memory is at least ``min_vram_mb``".

    Tested on the provider's own row where that is exact (issue 12): ``gpu_names`` holds each
    GPU name lower-cased between newlines, which no name contains, so a glob with at most one
    run of characters between its stars (``H100``, ``H100*``, ``*80GB``, ``*H100*``) matches a
    name exactly when ``gpu_names`` contains it framed as such; and ``gpu_max_vram_mb`` answers
    a memory floor alone. A search then reads its page along the provider index alone, each
    row tested as it comes. Otherwise (stars inside the text, such as ``A*100``, or a model
    and a memory floor together: one GPU must meet both) the same conditions on the row only
    narrow the candidates, and the GPU rows decide, probed per remaining provider through
    their primary key (a scalar subquery: PostgreSQL does not turn it into a join, which
    without statistics it had planned as a join against a scan of every GPU)."""
    conds: list[sa.ColumnElement[bool]] = []
    exact = True
    if gpu_model:
        lowered = gpu_model.lower()
        parts = lowered.split("*")
        pieces = [p for p in parts if p]
        head = "" if lowered.startswith("*") else GPU_NAMES_SEP
        tail = "" if lowered.endswith("*") else GPU_NAMES_SEP
        framed = "%" + head + "%".join(_like_escaped(p) for p in pieces) + tail + "%"
        conds.append(Provider.gpu_names != "")
        conds.append(Provider.gpu_names.like(framed, escape="\\"))
        exact = len(pieces) <= 1 and GPU_NAMES_SEP not in lowered
    if min_vram_mb:
        conds.append(Provider.gpu_max_vram_mb >= min_vram_mb)
        exact = exact and not gpu_model
    if exact:
        return conds
    gpu = sa.select(sa.literal(1)).where(Gpu.provider_id == Provider.id)
    if gpu_model:
        pattern = "%".join(_like_escaped(p) for p in gpu_model.lower().split("*"))
        gpu = gpu.where(sa.func.lower(Gpu.name).like(pattern, escape="\\"))
    if min_vram_mb:
        gpu = gpu.where(Gpu.memory_total_mb >= min_vram_mb)
    conds.append(gpu.limit(1).scalar_subquery().is_not(None))
    return conds
