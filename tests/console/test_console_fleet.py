"""The fleet and the jobs list with GPU hosts, in headless Chromium against a real cluster.

Its own cluster: the GPU hosts it registers (through the provider API, as a daemon would: this
machine has no GPU) must not take the CPU jobs of the other modules. Writes the README's jobs
and fleet screenshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from localdev.cluster import LocalCluster
from tests.support.accounts import PASSWORD, new_user
from tests.support.cluster import cluster_config, running_cluster
from tests.support.console import Console, fetch_job, gpu_host, named_user, submit, wait_state
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Its own: the fleet page must show exactly its hosts, and they take no one else's jobs."""
    with running_cluster(cluster_config(tmp_path_factory.mktemp("console-fleet"))) as c:
        yield c


def test_screenshots_of_the_jobs_list_and_the_fleet(
    cluster: LocalCluster, console, shot: Callable[..., Path]
) -> None:
    gw = cluster.gateway_url
    user = named_user(gw, "maria")
    done = [
        submit(gw, user, "tokenizer-build", "echo building vocab; sleep 1", tags=["nlp"]),
        submit(gw, user, "eval-suite", "echo evaluating; exit 3", tags=["eval"]),
        submit(gw, user, "data-prep", "echo cleaning rows; sleep 2", tags=["etl"]),
    ]
    for job_id in done:
        wait_state(gw, user, job_id, {"completed", "failed"})
    cancelled = submit(gw, user, "sweep-lr-3e-5", "sleep 120", tags=["sweep"])
    wait_state(gw, user, cancelled, {"running"})
    httpx.post(f"{gw}/api/v1/jobs/{cancelled}/cancel", headers=user["headers"])
    wait_state(gw, user, cancelled, {"cancelled"})
    running = submit(gw, user, "resnet50-train", "sleep 300", tags=["vision", "nightly"])
    wait_state(gw, user, running, {"running"})

    # two GPU hosts join; a GPU job is placed on each, a bigger one waits for room
    a100 = gpu_host(gw, "gpu-node-a100", "NVIDIA A100-SXM4-80GB", 81920, 4, 1.89, busy=2)
    h100 = gpu_host(gw, "gpu-node-h100", "NVIDIA H100 80GB HBM3", 81559, 8, 2.99, busy=4)
    placed = submit(
        gw,
        user,
        "bert-large-pretrain",
        "python3 pretrain.py",
        resources={"gpu_count": 2, "gpu_model": "NVIDIA A100*"},
        tags=["nlp"],
    )
    job = wait_state(gw, user, placed, {"dispatched"})
    assert job["provider_id"] == a100["provider_id"]
    inference = submit(
        gw,
        user,
        "llama-70b-inference",
        "python3 serve.py",
        resources={"gpu_count": 4, "gpu_model": "NVIDIA H100*"},
        tags=["llm"],
        priority=7,
    )
    job = wait_state(gw, user, inference, {"dispatched"})
    assert job["provider_id"] == h100["provider_id"]
    queued = submit(
        gw,
        user,
        "mixtral-finetune",
        "python3 train.py",
        resources={"gpu_count": 8, "gpu_model": "NVIDIA H100*"},
        tags=["llm"],
        priority=8,
    )
    eventually(
        lambda: fetch_job(gw, user, queued).get("waiting_reason"),
        interval=0.3,
        what="a waiting reason for the big job",
    )

    c: Console = console()
    page = c.sign_in(user["username"], PASSWORD)
    expect(page.locator("tr[data-job-id]")).to_have_count(8)
    waiting = page.locator(f'tr[data-job-id="{queued}"]')
    expect(waiting.locator(".badge")).to_have_attribute("data-state", "queued")
    expect(waiting).to_contain_text("8\u00d7 NVIDIA H100*")
    shot(page, "jobs", full_page=True)

    # filter by state and by tag, from the form
    page.get_by_label("State").select_option("running")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tr[data-job-id]")).to_have_count(1)
    expect(page.locator(f'tr[data-job-id="{running}"]')).to_be_visible()
    page.get_by_role("link", name="Clear").click()
    page.get_by_role("link", name="llm").first.click()
    expect(page.locator("tr[data-job-id]")).to_have_count(2)

    # the fleet: the real local daemon plus the two GPU hosts, the GPU job on two A100s
    c.open("#/fleet")
    expect(page.locator("section.provider")).to_have_count(3)
    host = page.locator(f'section[data-provider-id="{a100["provider_id"]}"]')
    expect(host.locator(".pill.busy")).to_have_count(2)
    expect(host.get_by_role("link", name="bert-large-pretrain")).to_have_count(2)
    other = page.locator(f'section[data-provider-id="{h100["provider_id"]}"]')
    expect(other.get_by_role("link", name="llama-70b-inference")).to_have_count(4)
    shot(page, "fleet", full_page=True)
    for job_id in (placed, inference, queued, running):
        httpx.post(f"{gw}/api/v1/jobs/{job_id}/cancel", headers=user["headers"])
    a100["stop"].set()
    h100["stop"].set()


def test_a_provider_drains_and_restores_its_host_from_the_fleet_page(
    cluster: LocalCluster, console
) -> None:
    gw = cluster.gateway_url
    owner = new_user(gw, "provider")
    host = gpu_host(gw, "drain-me", "NVIDIA L4", 23034, 1, 0.5, owner=owner)
    c: Console = console()
    page = c.sign_in(owner["username"], PASSWORD)
    c.open("#/fleet")
    card = page.locator(f'section[data-provider-id="{host["provider_id"]}"]')
    others = page.locator(f'section.provider:not([data-provider-id="{host["provider_id"]}"])')
    expect(card.locator(".pill.st-online")).to_be_visible()
    # only one's own hosts offer the buttons (an admin's would offer them on every host)
    expect(others.first).to_be_visible()
    expect(others.get_by_role("button", name="Drain")).to_have_count(0)
    card.get_by_role("button", name="Drain").click()
    expect(card.locator(".pill.st-draining")).to_be_visible()
    seen = httpx.get(f"{gw}/api/v1/providers/{host['provider_id']}", headers=owner["headers"])
    assert seen.json()["status"] == "draining"
    card.get_by_role("button", name="Put online").click()
    expect(card.locator(".pill.st-online")).to_be_visible()
    host["stop"].set()
