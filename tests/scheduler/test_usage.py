"""Usage is metered when a job ends and read back per requester, per provider and in total."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.harness import Harness
from tests.support.scheduler import RTX, auth, job_in


async def test_usage_is_metered_and_scoped_by_role(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner, stranger, provider_user = (str(uuid.uuid4()) for _ in range(3))
    me = auth(mint_token, owner)
    async with (
        scheduler_factory() as (_, client),
        Harness(own_nats, mint_token, run_seconds=(0.3, 0.3)) as h,
    ):
        await h.announce(
            "p-paid", RTX, price_per_hour=3.6, max_concurrent_tasks=2, owner_id=provider_user
        )
        two = await h.submit(owner, 2)
        done = await job_in(client, me, two, "completed")
        never_ran = await h.submit(owner, 4)  # bigger than any host: fails, costs nothing
        await job_in(client, me, never_ran, "failed")

        mine = (await client.get("/api/v1/usage", headers=me)).json()
        assert mine["scope"] == "requester"
        assert mine["totals"]["jobs"] == 1
        [rec] = mine["records"]
        assert rec["job_id"] == two and rec["state"] == "completed" and rec["gpu_count"] == 2
        assert rec["gpu_model"] == "RTX 4090" and rec["price_per_hour"] == 3.6
        assert rec["seconds"] > 0 and rec["gpu_seconds"] == pytest.approx(2 * rec["seconds"])
        # 3.6 per GPU-hour is 0.001 per GPU-second
        assert rec["cost"] == pytest.approx(rec["gpu_seconds"] * 0.001, abs=1e-6)
        assert mine["by_gpu_model"][0]["gpu_model"] == "RTX 4090"
        assert done["provider_id"] == "p-paid"

        other = (await client.get("/api/v1/usage", headers=auth(mint_token, stranger))).json()
        assert other["totals"]["jobs"] == 0 and other["records"] == []

        for headers in (
            auth(mint_token, provider_user, "provider"),  # the provider's account (password)
            auth(mint_token, str(uuid.uuid4()), "provider", provider_id="p-paid"),  # its API key
        ):
            earned = (await client.get("/api/v1/usage", headers=headers)).json()
            assert earned["scope"] == "provider" and "p-paid" in earned["provider_ids"]
            assert earned["totals"]["cost"] == pytest.approx(rec["cost"])

        admin = (
            await client.get("/api/v1/usage", headers=auth(mint_token, "root", "admin"))
        ).json()
        assert admin["scope"] == "all" and admin["totals"]["jobs"] == 1
        later = await client.get(
            "/api/v1/usage", params={"since": rec["ended_at"][:10] + "T23:59:59"}, headers=me
        )
        assert later.json()["totals"]["jobs"] == 0
