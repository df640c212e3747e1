"""Real servers and a real browser, for the tests and the benchmarks (needs the ``test`` extra:
``pip install -e '.[test]'``; the server helpers run from a source checkout).

- :func:`start_server` runs the dashboard in a subprocess (``python -m dashboard`` or the
  gunicorn command of the Dockerfile) on a free port and waits for ``/healthz``.
- :func:`make_driver` starts headless Debian Chromium through chromedriver (Selenium), with
  the browser console log enabled so tests can fail on console errors.
- :func:`wait_for`, :func:`console_errors`, :func:`find_props`, :func:`find_component`: polling
  and inspection helpers.
- :func:`signed_in_client`: a Flask test client already signed in as a role (no login form).

``tests/browser_support.py`` adds the pytest side (skip, or fail under ``AINERD_REQUIRE_BROWSER=1``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from ainerd_core.processes import free_port, log_tail, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
BROWSER_MISSING = "headless Chromium tests need chromium and chromedriver (apt-get install chromium chromium-driver)"


class Server:
    """A dashboard server process; ``url`` is its base address (no trailing slash)."""

    def __init__(self, cmd: list[str], env: dict, port: int, log: Path):
        self.cmd, self.env, self.port, self.log_path = cmd, env, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Server":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_ready(self.proc, lambda: requests.get(self.url + "/healthz", timeout=2).status_code == 200,
                         name="server", ready_means="answer /healthz", timeout=timeout, log=self.log,
                         stop=self.stop, interval=0.3)
        return self

    def log(self) -> str:
        return log_tail(self.log_path, 5000)

    def kill(self, sig=signal.SIGKILL) -> None:
        """Kill the whole process group (gunicorn master and workers) at once."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        if getattr(self, "_log", None):
            self._log.close()


def server_env(data_dir: Path, instance_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINERD_")}
    env.update(AINERD_DATA_DIR=str(data_dir), AINERD_INSTANCE_DIR=str(instance_dir),
               PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_server(data_dir: Path, instance_dir: Path, *, gunicorn_workers: int | None = None,
                 log: Path | None = None, **env_extra: str) -> Server:
    """Start ``python -m dashboard`` (or gunicorn with N workers) on a free port."""
    port = free_port()
    env = server_env(data_dir, instance_dir, **env_extra)
    if gunicorn_workers:
        cmd = [str(Path(sys.executable).parent / "gunicorn"), "--config", str(REPO / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", "--workers", str(gunicorn_workers), "dashboard.app:server"]
    else:
        cmd = [sys.executable, "-m", "dashboard", "--port", str(port)]
    log = log or Path(tempfile.mkstemp(prefix="ainerd-server-", suffix=".log")[1])
    return Server(cmd, env, port, log).start()


def browser_available() -> tuple[str | None, str | None]:
    chromium = next((c for c in CHROMIUM_CANDIDATES if os.path.exists(c)), None) or shutil.which("chromium")
    return chromium, shutil.which("chromedriver")


def make_driver(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver with the console log enabled."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_available()
    if not (chromium and chromedriver):
        raise RuntimeError(BROWSER_MISSING)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="ainerd-chromium-")
    # no GPU here, so no WebGL: point clouds under 5,000 points are SVG (figures.common.scatter_trace)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    driver.set_page_load_timeout(60)
    driver._ainerd_profile = profile
    return driver


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE since the last call (favicon 404s excluded)."""
    return [e["message"] for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and "favicon" not in e.get("message", "")]


def quit_driver(driver) -> None:
    with contextlib.suppress(Exception):
        driver.quit()
    shutil.rmtree(getattr(driver, "_ainerd_profile", ""), ignore_errors=True)


def wait_for(fn, timeout: float = 45.0, what: str = "condition", *, interval: float = 0.1):
    """Poll ``fn`` until it returns something truthy (exceptions count as 'not yet': the DOM is
    still rendering); raise AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - the page is still rendering
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def find_props(node, cid):
    """The props of the component with id ``cid`` in a Dash layout JSON tree, or None."""
    if isinstance(node, dict):
        if node.get("props", {}).get("id") == cid:
            return node["props"]
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for v in children:
        got = find_props(v, cid)
        if got is not None:
            return got
    return None


def find_component(node, cid):
    """The component with id ``cid`` in a Dash component tree (the Python objects a layout
    function returns, not their JSON), or None."""
    if getattr(node, "id", None) == cid:
        return node
    children = getattr(node, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if child is not None and not isinstance(child, (str, int, float)):
            got = find_component(child, cid)
            if got is not None:
                return got
    return None


def signed_in_client(app, config, role: str):
    """A test client of the Flask ``app`` whose session is signed in as ``role`` ('admin' or
    'viewer'), as after a successful login with ``config``'s password."""
    from dashboard import auth

    client = app.test_client()
    with client.session_transaction() as session:
        session.update(auth.session_values(config, role))
    return client
