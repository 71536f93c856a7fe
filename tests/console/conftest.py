"""The console against a real local cluster, driven by Debian's headless Chromium
(helpers in ``tests/support/console.py``).

The tests run on the shared ``default_cluster``; ``test_console_fleet.py`` overrides ``cluster``
with one of its own. Screenshots go to ``docs/console/`` only with ``DANTE_SCREENSHOTS=1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from localdev.cluster import LocalCluster
from tests.support.console import CHROMIUM, DESKTOP, Console, screenshot_dir, take_shot


@pytest.fixture(scope="module")
def cluster(default_cluster: LocalCluster) -> LocalCluster:
    """The shared default cluster (every test uses accounts of its own)."""
    return default_cluster


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


@pytest.fixture
def shot(tmp_path: Path) -> Callable[..., Path]:
    """``shot(page, name)``: a non-empty screenshot ``<name>.png``, in ``docs/console/`` with
    ``DANTE_SCREENSHOTS=1`` (the README's pictures), else in the test's ``tmp_path``."""
    folder = screenshot_dir(tmp_path)

    def take(page: Page, name: str, *, full_page: bool = False) -> Path:
        return take_shot(page, folder / f"{name}.png", full_page=full_page)

    return take
