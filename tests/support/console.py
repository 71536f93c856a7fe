"""What the console's browser tests share: a console in headless Chromium (``Console``),
screenshots, the WCAG contrast check, and jobs, accounts and GPU hosts through the public API.

Playwright's own browser download cannot work here (no network but the package registries), so
it drives ``/usr/bin/chromium`` (``make browser`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support.accounts import PASSWORD, new_user
from tests.support.wait import eventually

CHROMIUM = os.environ.get("DANTE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Generous bounds on waits for a condition (a busy 2-core machine); never a timing assertion.
expect.set_options(timeout=45_000)


class Console:
    """One browser context (its own cookies) on the console, collecting page errors."""

    def __init__(self, browser: Browser, gw: str, viewport: dict[str, int] = DESKTOP) -> None:
        self.gw = gw
        self.context: BrowserContext = browser.new_context(
            viewport=viewport, accept_downloads=True, color_scheme="light"
        )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "console",
            lambda m: (
                m.type == "error"
                and "Failed to load resource" not in m.text
                # a CSP violation is reported on the console: it must fail the test
                and self.errors.append(m.text)
            ),
        )

    def open(self, fragment: str = "") -> Page:
        self.page.goto(f"{self.gw}/{fragment}")
        return self.page

    def sign_in(self, username: str, password: str) -> Page:
        page = self.open("#/signin")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#whoami")).to_contain_text(username)
        return page

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


def take_shot(page: Page, path: Path, *, full_page: bool = False) -> Path:
    """A screenshot of the real app at ``path`` (no toast passing by in the picture)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate(
        "(t => { t.style.transition = 'none'; t.className = 'toast'; })"
        "(document.getElementById('toast'))"
    )
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 0, path
    return path


def screenshot_dir(tmp_path: Path) -> Path:
    """``docs/console`` (the README's pictures) with ``DANTE_SCREENSHOTS=1``, else ``tmp_path``,
    so an ordinary run leaves the developer's tree clean."""
    return SCREENSHOTS if os.environ.get("DANTE_SCREENSHOTS") == "1" else tmp_path


def state_of(page: Page) -> str:
    return page.locator(".page-head .badge").get_attribute("data-state") or ""


JOB_URL = re.compile(r"#/jobs/([0-9a-f-]{36})$")


# WCAG 2 contrast of every visible text against the first opaque background behind it.
CONTRAST_JS = """() => {
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.checkVisibility()) continue;
    const style = getComputedStyle(el);
    if (parseFloat(style.opacity) < 1) continue;  // fading toasts, disabled buttons
    const fg = rgb(style.color).slice(0, 3);
    const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const large = parseFloat(style.fontSize) >= 24
      || (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
    const text = el.textContent.trim().slice(0, 30);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName}.${el.className} "${text}" ${ratio}`);
  }
  return bad;
}"""


def low_contrast(page: Page) -> list[str]:
    return page.evaluate(CONTRAST_JS)


def submit(gw: str, user: dict[str, Any], name: str, script: str, **spec: Any) -> str:
    body = {"type": "script", "name": name, "params": {"script_content": script}, **spec}
    r = httpx.post(f"{gw}/api/v1/jobs", json=body, headers=user["headers"])
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def named_user(gw: str, prefix: str) -> dict[str, Any]:
    """Like ``new_user``, with a readable name (it shows in the screenshots)."""
    name = f"{prefix}.{uuid.uuid4().hex[:4]}"
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    assert httpx.post(f"{gw}/api/v1/auth/register", json=body).status_code == 201
    login = httpx.post(f"{gw}/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    token = login.json()["access_token"]
    return {"username": name, "headers": {"authorization": f"Bearer {token}"}}


def fetch_job(gw: str, user: dict[str, Any], job_id: str) -> dict:
    r = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
    return r.json() if r.status_code == 200 else {}


def wait_state(gw: str, user: dict[str, Any], job_id: str, states: set[str]) -> dict:
    def reached() -> dict:
        job = fetch_job(gw, user, job_id)
        assert job.get("status") in states, f"job {job_id} not in {states}: {job}"
        return job

    return eventually(reached, limit=90, interval=0.2)


def gpu_host(
    gw: str,
    name: str,
    model: str,
    vram_mb: int,
    count: int,
    price: float,
    owner: dict[str, Any] | None = None,
    busy: int = 0,
) -> dict:
    """A GPU host registered through the public API, as a daemon on it would (there is no
    NVIDIA GPU on this machine): inventory, then a heartbeat with per-GPU metrics."""
    provider = owner or new_user(gw, "provider")
    key = httpx.post(
        f"{gw}/api/v1/auth/api-keys", json={"name": name}, headers=provider["headers"]
    ).json()
    token = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": key["api_key"]}).json()
    auth = {"authorization": f"Bearer {token['access_token']}"}
    gpus = [
        {
            "index": i,
            "uuid": f"GPU-{uuid.uuid4()}",
            "name": model,
            "memory_total_mb": vram_mb,
            "compute_capability": "9.0",
        }
        for i in range(count)
    ]
    body = {
        "name": name,
        "hostname": f"{name}.dc1.example",
        "cpu_count": 64,
        "memory_mb": 512 * 1024,
        "max_concurrent_tasks": count,
        "price_per_hour": price,
        "driver_version": "550.90.07",
        "cuda_version": "12.4",
        "gpus": gpus,
    }
    r = httpx.post(f"{gw}/api/v1/providers", json=body, headers=auth)
    assert r.status_code in (200, 201), r.text
    # the first ``busy`` GPUs look loaded (the test places that many there), the rest idle
    metrics = [
        {
            "index": i,
            "utilization_pct": [97, 91, 88, 94][i % 4] if i < busy else [0, 2, 0, 1][i % 4],
            "memory_used_mb": vram_mb * ([0.91, 0.84, 0.87, 0.9][i % 4] if i < busy else 0.01),
            "temperature_c": [78, 74, 76, 79][i % 4] if i < busy else [34, 36, 33, 35][i % 4],
            "power_draw_w": 380.0 if i < busy else 62.0,
        }
        for i in range(count)
    ]
    url = f"{gw}/api/v1/providers/{key['provider_id']}/heartbeat"
    beat = httpx.post(url, json={"gpus": metrics, "running_tasks": 0}, headers=auth)
    assert beat.status_code == 200, beat.text
    stop = threading.Event()

    def keep_beating() -> None:  # as its daemon would, so the host stays live while we look
        while not stop.wait(2.0):
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, json={"gpus": metrics, "running_tasks": 0}, headers=auth)

    threading.Thread(target=keep_beating, daemon=True).start()
    return {"provider_id": key["provider_id"], "auth": auth, "stop": stop}
