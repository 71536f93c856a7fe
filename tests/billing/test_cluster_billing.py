"""Billing end to end on the local cluster (real processes, real sockets, through the gateway).

A requester with no credit submits, the job waits with "insufficient balance", an admin grants
credit, the job runs, and the books move by exactly run time x price x GPUs to the minor unit,
split between the provider and the platform fee; the month's invoice lists the job and its PDF
shows the total.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import new_user
from tests.support.cluster import cluster_config, running_cluster
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

PRICE_PER_HOUR = 3600  # one currency unit a second: 1 minor unit per 10 ms of run time
FEE_BP = 1500  # 15 %
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def expected_charge(started_at: str, finished_at: str, price_per_hour: int, units: int) -> int:
    """The documented rule, computed independently: half up to the minor unit (cent)."""
    run = datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)
    run_us = (run.days * 86_400 + run.seconds) * 1_000_000 + run.microseconds
    num = run_us * price_per_hour * 100 * units  # minor units x microseconds per hour
    den = 3_600_000_000
    return (2 * num + den) // (2 * den)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Its own: billing holds on, a known price and platform fee (the amounts asserted)."""
    config = cluster_config(
        tmp_path_factory.mktemp("billing-cluster"),
        billing_holds=True,
        extra_env={
            "DANTE_DAEMON_PRICE_PER_HOUR": str(PRICE_PER_HOUR),
            "DANTE_BILLING_PLATFORM_FEE_BP": str(FEE_BP),
        },
    )
    with running_cluster(config) as c:
        yield c


def admin_headers(gw: str) -> dict[str, str]:
    r = httpx.post(
        f"{gw}/api/v1/auth/login", json={"username": "admin", "password": "dante-dev-admin"}
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


def platform_fees(gw: str, admin: dict[str, str]) -> int:
    r = httpx.get(f"{gw}/api/v1/billing/admin/accounts", params={"kind": "platform"}, headers=admin)
    assert r.status_code == 200, r.text
    return sum(a["balance_minor"] for a in r.json()["accounts"] if a["id"] == "platform:fees")


def test_no_credit_waits_then_runs_and_is_charged_exactly(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    admin = admin_headers(gw)
    user = new_user(gw)
    provider_id = cluster.provider["provider_id"]
    fees_before = platform_fees(gw, admin)
    r = httpx.get(f"{gw}/api/v1/billing/balance", headers=user["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["available_minor"] == 0

    r = httpx.post(
        f"{gw}/api/v1/jobs",
        json={
            "type": "script",
            "name": "billed",
            "params": {"script_content": "sleep 1.5; echo done"},
            "timeout_seconds": 20,
        },
        headers=user["headers"],
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]

    def waiting() -> dict[str, Any] | None:
        resp = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
        if resp.status_code != 200:
            return None
        job = resp.json()
        reason = job.get("waiting_reason") or ""
        return job if "insufficient balance" in reason else None

    job = eventually(waiting, limit=90, interval=0.2, what="the job waits for money")
    assert job["status"] == "queued" and job["started_at"] is None

    # 20 s x 1/s = 20.00 held; grant 50.00, twice with the same reference: credited once.
    grant = {"user_id": user["user_id"], "amount_minor": 5000, "reference": uuid.uuid4().hex}
    r = httpx.post(f"{gw}/api/v1/billing/admin/grants", json=grant, headers=admin)
    assert r.status_code == 201, r.text
    r = httpx.post(f"{gw}/api/v1/billing/admin/grants", json=grant, headers=admin)
    assert r.status_code == 200 and r.json()["credited"] is False
    # credited once; the job may already be placed, its 20.00 moved from the wallet to a hold
    after = r.json()["balance"]
    assert after["balance_minor"] + after["held_minor"] == 5000

    def ended() -> dict[str, Any] | None:
        got = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"]).json()
        return got if got["status"] in TERMINAL else None

    job = eventually(ended, limit=90, interval=0.2, what="the job ends")
    assert job["status"] == "completed", job
    charge = expected_charge(job["started_at"], job["finished_at"], PRICE_PER_HOUR, 1)
    assert charge > 0  # it slept 1.5 s at 1.00/s (the exact figure is the scheduler's view)
    fee = (2 * charge * FEE_BP + 10_000) // 20_000

    month = job["finished_at"][:7]

    def settled() -> bool:
        inv = httpx.get(f"{gw}/api/v1/billing/invoices/{month}", headers=user["headers"]).json()
        return any(x.get("job_id") == job_id for x in inv["lines"])

    eventually(settled, limit=90, interval=0.2, what="the job is settled")
    balance = httpx.get(f"{gw}/api/v1/billing/balance", headers=user["headers"]).json()
    assert balance["held_minor"] == 0
    assert balance["balance_minor"] == 5000 - charge
    assert balance["available_minor"] == 5000 - charge

    r = httpx.get(f"{gw}/api/v1/billing/payouts/{provider_id}/{month}", headers=admin)
    assert r.status_code == 200, r.text
    statement = r.json()
    line = next(x for x in statement["lines"] if x["job_id"] == job_id)
    assert line["gross_minor"] == charge
    assert line["fee_minor"] == fee
    assert line["earned_minor"] == charge - fee
    assert statement["balance_minor"] == charge - fee  # the provider's earnings account
    # the provider's own account sees its statement too (billing learnt the owner from usage)
    login = httpx.post(
        f"{gw}/api/v1/auth/login",
        json={"username": cluster.provider["username"], "password": cluster.provider["password"]},
    )
    provider_user = {"authorization": f"Bearer {login.json()['access_token']}"}
    r = httpx.get(f"{gw}/api/v1/billing/payouts/{provider_id}/{month}", headers=provider_user)
    assert r.status_code == 200 and r.json()["earned_minor"] >= charge - fee, r.text
    assert platform_fees(gw, admin) - fees_before == fee

    r = httpx.get(f"{gw}/api/v1/billing/invoices/{month}", headers=user["headers"])
    assert r.status_code == 200, r.text
    invoice = r.json()
    assert [x["job_id"] for x in invoice["lines"]] == [job_id]
    assert invoice["lines"][0]["amount_minor"] == charge
    assert invoice["total_minor"] == charge  # no tax configured
    r = httpx.get(f"{gw}/api/v1/billing/invoices/{month}.pdf", headers=user["headers"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    text = pdf_text(r.content, cluster)
    total = f"{charge // 100:,}.{charge % 100:02d} USD"
    assert job_id in text
    assert any("TOTAL" in ln and total in ln for ln in text.splitlines()), text

    r = httpx.get(f"{gw}/api/v1/billing/admin/reconciliation", headers=admin)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text

    # The Stripe webhook passes the gateway without a token (the signature is the check;
    # none is configured here, so billing says so rather than the gateway asking for a token).
    r = httpx.post(f"{gw}/api/v1/billing/stripe/webhook", content=b"{}")
    assert r.status_code == 503 and r.json()["error"] == "payments_not_configured", r.text

    # Another user sees neither this invoice nor the admin views.
    other = new_user(gw)
    r = httpx.get(
        f"{gw}/api/v1/billing/invoices/{month}",
        params={"user_id": user["user_id"]},
        headers=other["headers"],
    )
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = httpx.get(f"{gw}/api/v1/billing/admin/accounts", headers=other["headers"])
    assert r.status_code == 403


def pdf_text(pdf: bytes, cluster: LocalCluster) -> str:
    exe = shutil.which("pdftotext")
    assert exe, "pdftotext is needed (poppler-utils; `make install` installs it where it can)"
    path = cluster.data / "invoice.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(
        [exe, "-layout", str(path), "-"], capture_output=True, check=True, timeout=30
    )
    return out.stdout.decode()
