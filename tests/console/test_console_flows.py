"""What a person does in the console, in headless Chromium against a real local cluster.

The README's screenshots are taken here from the running app (into docs/console/*.png only with
DANTE_SCREENSHOTS=1, else into the test's tmp_path).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from localdev.cluster import LocalCluster
from tests.support.accounts import PASSWORD, new_user
from tests.support.console import (
    JOB_URL,
    PHONE,
    Console,
    fetch_job,
    low_contrast,
    submit,
    wait_state,
)

pytestmark = pytest.mark.e2e

TRAIN = """echo "loading dataset shard 1/1 (2,048 samples)"
for epoch in 1 2 3 4 5 6 7 8 9 10; do
  loss=$(python3 -c "print(round(2.5 / $epoch, 3))")
  echo "epoch $epoch/10  loss=$loss  lr=3e-4"
  sleep 1
done
mkdir -p "$DANTE_OUTPUTS_DIR/results"
echo '{"final_loss": 0.25, "epochs": 10}' > "$DANTE_OUTPUTS_DIR/results/metrics.json"
echo "saved results/metrics.json"
"""


def _no_reload_marker(page: Page) -> None:
    page.evaluate("window.__sameDocument = true")


def _same_document(page: Page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def test_sign_up_submit_watch_live_download_and_sign_out(
    cluster: LocalCluster, console, shot: Callable[..., Path]
) -> None:
    c: Console = console()
    page = c.open()
    name = f"ada.{uuid.uuid4().hex[:4]}"

    # sign up, then sign in
    page.get_by_role("link", name="Create one").click()
    page.get_by_label("Username").fill(name)
    page.get_by_label("Email").fill(f"{name}@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("Account created. Sign in to continue.")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#whoami")).to_contain_text(f"{name} · requester")
    expect(page.get_by_text("No jobs yet")).to_be_visible()  # the empty state says what to do

    # the token is in memory only: nothing in localStorage or sessionStorage, and the refresh
    # cookie is invisible to script
    storage = page.evaluate("[localStorage.length, sessionStorage.length, document.cookie]")
    assert storage[0] == 0 and storage[1] == 0 and "dante_refresh" not in storage[2]

    # submit from the form
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Name").fill("resnet-finetune")
    page.get_by_label("Script source").fill(TRAIN)
    page.get_by_label("Tags").fill("demo, resnet")
    page.get_by_label("Outputs").fill("results/metrics.json")
    page.get_by_label("Retries").fill("1")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(JOB_URL)
    job_id = JOB_URL.search(page.url).group(1)
    expect(page.locator("#job-title")).to_have_text("resnet-finetune")
    _no_reload_marker(page)

    # log lines appear live, while the job still runs
    log = page.locator("#log")
    expect(log).to_contain_text("epoch 2/10")
    assert state_is_live(page), "the log was only shown after the job ended"
    expect(log).to_contain_text("epoch 5/10")
    if state_is_live(page):  # a busy machine may lag; the picture must show a live log
        shot(page, "job-live-logs")

    # its state changes to completed without a reload, and the whole log is there
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "completed")
    expect(log).to_have_attribute("data-complete", "true")
    assert _same_document(page)
    lines = log.inner_text().splitlines()
    assert lines[0] == "loading dataset shard 1/1 (2,048 samples)"
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch")] == [
        f"{i}/10" for i in range(1, 11)
    ]
    assert lines[-1] == "saved results/metrics.json"
    expect(page.locator("#timeline li")).to_have_count(4)
    expect(page.locator("#timeline")).to_contain_text("running → completed")

    # download its output
    button = page.locator('#artifacts button[data-key="results/metrics.json"]')
    with page.expect_download() as info:
        button.click()
    download = info.value
    assert download.suggested_filename == "metrics.json"
    assert json.loads(Path(download.path()).read_text()) == {"final_loss": 0.25, "epochs": 10}

    # the log downloads too
    with page.expect_download() as info:
        page.locator("#log-download").click()
    assert Path(info.value.path()).read_text().splitlines() == lines

    # its spec shows what ran; "Rerun" fills the form with it, and the rerun runs the same
    expect(page.locator("#spec-script")).to_have_text(TRAIN)
    page.get_by_role("button", name="Rerun…").click()
    expect(page.get_by_role("heading", name="Rerun a job")).to_be_visible()
    expect(page.get_by_label("Script source")).to_have_value(TRAIN)
    expect(page.get_by_label("Outputs")).to_have_value("results/metrics.json")
    expect(page.get_by_label("Tags")).to_have_value("demo, resnet")
    expect(page.get_by_label("Retries")).to_have_value("1")
    page.get_by_label("Name").fill("resnet-finetune-2")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#job-title")).to_have_text("resnet-finetune-2")
    rerun_id = JOB_URL.search(page.url).group(1)
    assert rerun_id != job_id
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "completed")
    expect(page.locator("#log")).to_contain_text("saved results/metrics.json")

    # the list shows it, completed; a reload keeps the session (refresh cookie, silently)
    page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".badge")).to_have_attribute("data-state", "completed")
    page.reload()
    expect(page.locator("#whoami")).to_contain_text(name)

    # sign out: back to sign-in, and a reload does not sign back in (the cookie is revoked)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin-form")).to_be_visible()
    page.reload()
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#topbar")).to_be_hidden()


def state_is_live(page: Page) -> bool:
    return page.locator(".page-head .badge").get_attribute("data-state") not in (
        "completed",
        "failed",
        "cancelled",
        "timed_out",
    )


def test_one_job_shows_what_it_runs_but_never_environment_values(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    job_id = submit(
        gw,
        user,
        "with-secrets",
        "echo $HF_TOKEN | wc -c",
        env={"HF_TOKEN": "hf_secret_value_123"},
        timeout_seconds=600,
    )
    job = wait_state(gw, user, job_id, {"completed"})
    detail = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
    assert detail.json()["params"]["script_content"] == "echo $HF_TOKEN | wc -c"
    assert detail.json()["env_names"] == ["HF_TOKEN"] and job["timeout_seconds"] == 600
    assert "hf_secret_value_123" not in detail.text
    container = {
        "type": "container",
        "name": "c",
        "params": {"docker_image": "alpine:3", "docker_env_vars": {"API_KEY": "s3cr3t-value"}},
    }
    r = httpx.post(f"{gw}/api/v1/jobs", json=container, headers=user["headers"])
    cid = r.json()["job_id"]
    shown = wait_state(gw, user, cid, {"queued", "dispatched", "running", "failed", "completed"})
    assert shown["params"]["docker_env_vars"] == {"API_KEY": ""}
    listing = httpx.get(f"{gw}/api/v1/jobs", headers=user["headers"])
    assert "s3cr3t-value" not in listing.text and "hf_secret_value_123" not in listing.text
    assert all("params" not in j for j in listing.json()["jobs"])  # not repeated in listings


def test_a_second_user_cannot_see_the_first_usersjob(cluster: LocalCluster, console) -> None:
    gw = cluster.gateway_url
    owner, other = new_user(gw), new_user(gw)
    job_id = submit(gw, owner, "private-experiment", "echo secret-output")
    wait_state(gw, owner, job_id, {"completed"})
    c: Console = console()
    page = c.sign_in(other["username"], PASSWORD)
    expect(page.get_by_text("No jobs yet")).to_be_visible()
    assert page.locator(f'tr[data-job-id="{job_id}"]').count() == 0
    c.open(f"#/jobs/{job_id}")  # straight to its URL
    expect(page.get_by_role("heading", name="Job not found")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("private-experiment")
    expect(page.locator("body")).not_to_contain_text("secret-output")


def test_admin_disables_a_user_whose_open_console_is_signed_out(
    cluster: LocalCluster, console
) -> None:
    gw = cluster.gateway_url
    victim = new_user(gw)
    theirs: Console = console()
    page = theirs.sign_in(victim["username"], PASSWORD)
    expect(page.get_by_text("No jobs yet")).to_be_visible()  # an open jobs page, polling

    admin: Console = console()
    admin_page = admin.sign_in("admin", "dante-dev-admin")
    admin_page.get_by_role("link", name="Admin").click()
    # the shared cluster may hold more users than one page lists: find this one
    admin_page.get_by_label("Search users").fill(victim["username"])
    admin_page.get_by_role("button", name="Search").click()
    row = admin_page.locator(f'tr[data-username="{victim["username"]}"]')
    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".pill")).to_have_text("disabled")

    # Their next call is refused, the silent refresh too: the console shows sign-in and why.
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#signed-out-reason")).to_contain_text("account was disabled")
    expect(page.locator("#topbar")).to_be_hidden()
    page.reload()  # and the refresh cookie cannot bring the session back
    expect(page.locator("#signin-form")).to_be_visible()


def test_storage_upload_with_progress_download_and_delete(
    cluster: LocalCluster, console, tmp_path
) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    c: Console = console()
    page = c.sign_in(user["username"], PASSWORD)
    page.get_by_role("link", name="Storage").click()
    expect(page.get_by_text("Nothing here yet")).to_be_visible()
    data = tmp_path / "train.csv"
    data.write_bytes(b"x,y\n" + b"1,2\n" * 200_000)  # 800 KB: progress events fire
    page.get_by_label("Folder", exact=True).fill("datasets")
    page.get_by_label("Files").set_input_files(str(data))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status").filter(has_text="Uploaded 1 file")).to_be_visible()
    assert page.locator("#upload-progress").evaluate("p => p.value") == 1
    row = page.locator('tr[data-key="datasets/train.csv"]')
    expect(row).to_contain_text("781 KiB")
    # it is really in the user's storage, as the API sees it
    listed = httpx.get(f"{gw}/api/v1/storage/objects", headers=user["headers"]).json()
    assert [o["key"] for o in listed["objects"]] == ["datasets/train.csv"]
    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    assert Path(info.value.path()).read_bytes() == data.read_bytes()
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Nothing here yet")).to_be_visible()
    listed = httpx.get(f"{gw}/api/v1/storage/objects", headers=user["headers"]).json()
    assert listed["objects"] == []


def test_keyboard_labels_and_phone_width(cluster: LocalCluster, console) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    submit(gw, user, "phone-check", "echo ok", tags=["mobile"])
    c: Console = console(PHONE)
    page = c.open()
    # keyboard only: the username field has focus, Tab moves to the password, Enter submits
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(user["username"])
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("tr[data-job-id]")).to_have_count(1)
    # the skip link moves focus to the content and leaves the route alone
    page.locator(".skip").focus()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    assert page.url.endswith("#/jobs")
    for fragment in ("#/jobs", "#/submit", "#/fleet", "#/usage", "#/storage"):
        c.open(fragment)
        page.locator("main h1").wait_for()
        # nothing wider than the phone: no sideways scrolling of the page itself
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (fragment, width)
        # every form control has a label (for=, wrapping label, or aria-label)
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input, select, textarea')]
                .filter(el => el.type !== 'hidden')
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map(el => el.name || el.id)"""
        )
        assert unlabelled == [], (fragment, unlabelled)
    # the navigation is reachable by keyboard and marks the current page
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Fleet").focus()
    page.keyboard.press("Enter")
    expect(nav.get_by_role("link", name="Fleet")).to_have_attribute("aria-current", "page")


def test_the_list_updates_live_and_a_job_is_cancelled_from_its_page(
    cluster: LocalCluster, console
) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    first = submit(gw, user, "long-one", "sleep 120")
    wait_state(gw, user, first, {"running"})
    c: Console = console()
    page = c.sign_in(user["username"], PASSWORD)
    _no_reload_marker(page)
    badge = page.locator(f'tr[data-job-id="{first}"] .badge')
    expect(badge).to_have_attribute("data-state", "running")
    # a job submitted elsewhere (the CLI, curl) appears in the open list by itself
    second = submit(gw, user, "from-curl", "sleep 120")
    expect(page.locator(f'tr[data-job-id="{second}"]')).to_be_visible()
    # cancel from the job page, confirming the dialog
    page.get_by_role("link", name="long-one").click()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel").click()
    # the request's answer first (an error would show its own text here)
    expect(page.locator("#toast")).to_have_text("Cancellation requested.")
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    assert fetch_job(gw, user, first)["status"] == "cancelled"
    # and the other one, cancelled elsewhere, turns cancelled in the open list
    page.get_by_role("link", name="Jobs", exact=True).click()
    httpx.post(f"{gw}/api/v1/jobs/{second}/cancel", headers=user["headers"])
    second_badge = page.locator(f'tr[data-job-id="{second}"] .badge')
    expect(second_badge).to_have_attribute("data-state", "cancelled")
    assert _same_document(page)


def test_the_jobs_list_pages_through_its_cursor(cluster: LocalCluster, console) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    # 30 jobs no host can ever run: they are stored (and fail at once) without running
    ids = [
        submit(gw, user, f"page-{i:02d}", "true", resources={"gpu_count": 64}) for i in range(30)
    ]
    wait_state(gw, user, ids[-1], {"failed"})
    wait_state(gw, user, ids[0], {"failed"})
    c: Console = console()
    page = c.sign_in(user["username"], PASSWORD)
    rows = page.locator("tr[data-job-id]")
    expect(rows).to_have_count(25)
    expect(rows.first).to_contain_text("page-29")  # newest first
    expect(page.get_by_role("button", name="← Newer")).to_be_disabled()
    page.get_by_role("button", name="Older →").click()
    expect(rows).to_have_count(5)
    expect(rows.last).to_contain_text("page-00")
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(25)
    expect(rows.first).to_contain_text("page-29")


def test_a_provider_creates_and_revokes_a_host_key(cluster: LocalCluster, console) -> None:
    gw = cluster.gateway_url
    provider = new_user(gw, "provider")
    c: Console = console()
    page = c.sign_in(provider["username"], PASSWORD)
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_text("No keys yet")).to_be_visible()
    page.get_by_label("Host name for the key").fill("gpu-node-07")
    page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key-value")
    expect(shown).to_contain_text("DANTE_DAEMON_API_KEY=")
    api_key = shown.inner_text().split("DANTE_DAEMON_API_KEY=")[1].split()[0]
    # the key shown is a real one: a daemon can exchange it for a provider token
    exchanged = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": api_key})
    assert exchanged.status_code == 200, exchanged.text
    row = page.locator("#keys tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("gpu-node-07")
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(row.locator(".pill")).to_have_text("revoked")
    refused = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": api_key})
    assert refused.status_code == 401


def test_text_contrast_meets_wcag_aa_on_every_page(cluster: LocalCluster, console) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    job_id = submit(gw, user, "contrast", "echo one; exit 1", tags=["a11y"])
    wait_state(gw, user, job_id, {"failed"})
    c: Console = console()
    page = c.sign_in(user["username"], PASSWORD)
    checked = {}
    for fragment in ("#/jobs", f"#/jobs/{job_id}", "#/submit", "#/fleet", "#/usage", "#/storage"):
        c.open(fragment)
        page.locator("main h1").wait_for()
        page.wait_for_load_state("networkidle")
        checked[fragment] = low_contrast(page)
    c.open("#/signin")  # signed in: goes to the jobs page; the sign-in page after sign-out
    page.get_by_role("button", name="Sign out").click()
    page.locator("#signin-form").wait_for()
    checked["#/signin"] = low_contrast(page)
    assert all(not bad for bad in checked.values()), checked
