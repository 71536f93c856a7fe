"""The console against a real local cluster, driven by Debian's headless Chromium.

Playwright's own browser download cannot work here (no network but the package registries), so
it drives ``/usr/bin/chromium`` (``make browser`` installs it). One cluster per module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from localdev.cluster import ClusterConfig, LocalCluster

CHROMIUM = os.environ.get("DANTE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Generous bounds on waits for a condition (a busy 2-core machine); never a timing assertion.
expect.set_options(timeout=45_000)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("console-cluster")
    config = ClusterConfig(
        data_dir=data, prefer_default_ports=False, log_dir=data / "logs", heartbeat_interval=1.0
    )
    c = LocalCluster(config)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module, not per session: Playwright's sync API runs an event loop of its own on
    this thread while it is open, and pytest-asyncio's tests elsewhere need the thread free."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    with sync_playwright() as p:
        # --no-sandbox: the tests run as root in CI, where Chromium refuses its sandbox.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


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


@pytest.fixture
def console(browser: Browser, cluster: LocalCluster) -> Iterator[Any]:
    """A factory of consoles; each is closed (and checked for page errors) after the test."""
    made: list[Console] = []

    def make(viewport: dict[str, int] = DESKTOP) -> Console:
        c = Console(browser, cluster.gateway_url, viewport)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def shot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """A screenshot for the README, from the real app (docs/console/<name>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate(  # no toast passing by in the picture
        "(t => { t.style.transition = 'none'; t.className = 'toast'; })"
        "(document.getElementById('toast'))"
    )
    page.screenshot(path=str(path), full_page=full_page)
    return path


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
