"""Real servers and a real browser for tests: :mod:`dashboard.testing` plus the pytest side.

Browser tests skip when chromium/chromedriver are missing, unless ``AINERD_REQUIRE_BROWSER=1``
(set by ``.ci/run``), in which case they fail: CI must run them.

The fixtures ``server`` and ``driver`` (module scope; tests/conftest.py makes them available to
every test module) are the browser tests' real dashboard server and headless Chromium. A module
chooses what they serve and show by defining ``browser_data`` (a fixture: the data folder,
default ``explorer_data``) and ``WINDOW`` (a module constant: the window size in pixels, default
1400 x 1000). The unchanged ``explorer_data`` folder is served by one server for the whole
session (starting one takes seconds on a loaded CI machine); any other folder gets a server of
its own for the module.
"""
from __future__ import annotations

import contextlib
import os

import pytest

from dashboard import testing as _testing
from dashboard.testing import (CHROMIUM_CANDIDATES, REPO, Server, browser_available, console_errors,  # noqa: F401
                               find_props, free_port, quit_driver, server_env, start_server, wait_for)


# JavaScript to prepend to a script that reads a figure's data: ``arr(v)`` turns a plotly trace
# array (a list, a typed array, or plotly's base64 spec {dtype, bdata, shape}; rows of them) into
# plain nested arrays (null stays null)
PLOTLY_ARRAYS_JS = """
const TYPES = {f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
               u2: Uint16Array, i1: Int8Array, u1: Uint8Array};
const decode = v => {  // plotly's base64 typed arrays {dtype, bdata, shape}
  const bin = atob(v.bdata), buf = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
  const flat = Array.from(new TYPES[v.dtype](buf.buffer));
  if (!v.shape) return flat;
  const [rows, cols] = String(v.shape).split(',').map(Number), out = [];
  for (let r = 0; r < rows; r++) out.push(flat.slice(r * cols, (r + 1) * cols));
  return out;
};
const arr = v => v == null ? null : (v.bdata !== undefined ? decode(v)
    : Array.from(v, r => (r != null && typeof r === 'object') ? (r.bdata !== undefined ? decode(r) : Array.from(r)) : r));
"""


# seconds a browser test waits for a background job's answer (re-clustering, the upload search):
# the job's worker process can take minutes to start on a loaded 2-core CI machine (a 45 s wait
# failed there)
BACKGROUND_JOB_TIMEOUT = 240.0


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
def browser(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver (see :func:`make_driver`), quit on exit."""
    driver = make_driver(width, height)
    try:
        yield driver
    finally:
        quit_driver(driver)


def wait_for_figure(driver, script: str, selector: str, pred=None, timeout: float = 30.0, what: str | None = None):
    """Run the JavaScript ``script`` (which reads the figure under the CSS ``selector``, its
    ``arguments[0]``, and returns null until it is drawn) until its result is truthy and satisfies
    ``pred``; return that result."""
    def get():
        got = driver.execute_script(script, selector)
        return got if got and (pred is None or pred(got)) else None
    return wait_for(get, timeout, what or f"figure {selector}")


def enabled(driver, css: str, timeout: float = BACKGROUND_JOB_TIMEOUT):
    """The element matching ``css`` once it is enabled. A background job's controls are disabled
    while the job runs, also its run when the page loads (minutes on a loaded CI machine while
    the job's worker starts): a click or an upload sent to them then is lost."""
    return wait_for(lambda: (lambda e: e if e.is_enabled() else None)(driver.find_element("css selector", css)),
                    timeout, what=f"{css} enabled")


def open_page(driver, url: str, ready: str = "#page-content > *") -> None:
    """Load ``url`` and wait until the dashboard's router has rendered the page (an element
    matching the CSS selector ``ready`` exists)."""
    driver.get(url)
    wait_for(lambda: driver.find_elements("css selector", ready), what=f"page {url}")


@contextlib.contextmanager
def running_server(data_dir, instance_dir, **env_extra: str):
    """A dashboard server on ``data_dir`` for a browser test (skips the test without a browser,
    before starting anything), stopped on exit."""
    require_browser()
    srv = start_server(data_dir, instance_dir, **env_extra)
    try:
        yield srv
    finally:
        srv.stop()


WINDOW = (1400, 1000)  # default browser window (width, height) in pixels; a module may set its own


@pytest.fixture(scope="module")
def browser_data(explorer_data):
    """The folder the module's ``server`` serves; a module overrides this fixture to serve others."""
    return explorer_data


@pytest.fixture(scope="session")
def explorer_server(explorer_data, tmp_path_factory):
    """One server on the (read-only) ``explorer_data`` folder, shared by every module that serves it."""
    with running_server(explorer_data, tmp_path_factory.mktemp("instance-explorer-data")) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(request, browser_data, explorer_data, tmp_path_factory):
    """The module's dashboard server: the shared one for ``explorer_data``, else its own."""
    if browser_data == explorer_data:
        yield request.getfixturevalue("explorer_server")
        return
    with running_server(browser_data, tmp_path_factory.mktemp("instance")) as srv:
        yield srv


@pytest.fixture(scope="module")
def driver(request, server):
    """The module's headless Chromium, of the module's ``WINDOW`` size."""
    with browser(*getattr(request.module, "WINDOW", WINDOW)) as d:
        yield d
