"""Real servers and a real browser for tests: :mod:`dashboard.testing` plus the pytest side.

Browser tests skip when chromium/chromedriver are missing, unless ``AINERD_REQUIRE_BROWSER=1``
(set by ``.ci/run``), in which case they fail: CI must run them.
"""
from __future__ import annotations

import contextlib
import os

import pytest

from dashboard import testing as _testing
from dashboard.testing import (CHROMIUM_CANDIDATES, REPO, Server, browser_available, console_errors,  # noqa: F401
                               find_props, free_port, quit_driver, server_env, start_server, wait_for)


def require_browser():
    chromium, driver = browser_available()
    if chromium and driver:
        return chromium, driver
    if os.environ.get("AINERD_REQUIRE_BROWSER") == "1":
        pytest.fail(_testing.BROWSER_MISSING)
    pytest.skip(_testing.BROWSER_MISSING)


def make_driver(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver with the console log enabled (skips the test without one)."""
    require_browser()
    return _testing.make_driver(width, height)


@contextlib.contextmanager
def browser():
    driver = make_driver()
    try:
        yield driver
    finally:
        quit_driver(driver)
