"""The hosted deployment as the Docker image runs it, without Docker: the Dockerfile's CMD
(gunicorn with gunicorn.conf.py) with 3 workers and AINERD_HOSTED=1.

Checks /healthz, viewer and admin logins (sessions valid in every worker), refusal without
credentials, security headers, 413, token-free access log, the refusal to start without a
secret key or admin password, and one background job with progress in headless Chromium.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from browser_support import REPO, Server, console_errors, enabled, free_port, server_env
from dashboard_fixtures import build_explorer_data

pytestmark = pytest.mark.slow

SECRET = "0123456789abcdef" * 4
ADMIN_PW = "hosting-admin-password"
VIEWER_PW = "hosting-viewer-password"
TOKEN = "ExpertTokenThatMustNotBeLogged42"


def dockerfile_cmd() -> list[str]:
    """The Dockerfile's CMD (exec form), with gunicorn taken from this virtual environment."""
    text = (REPO / "Dockerfile").read_text()
    cmds = re.findall(r"^CMD\s+(\[.*\])\s*$", text, flags=re.M)
    assert len(cmds) == 1, "the Dockerfile needs exactly one exec-form CMD"
    cmd = json.loads(cmds[0])
    assert cmd[0] == "gunicorn" and "dashboard.app:server" in cmd
    return [str(Path(sys.executable).parent / "gunicorn"), *cmd[1:]]


def dockerfile_env() -> dict:
    """ENV settings of the image (AINERD_* and WEB_CONCURRENCY)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    env = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, flags=re.M):
        for item in shlex.split(line):
            if "=" in item:
                key, value = item.split("=", 1)
                env[key] = value
    return {k: v for k, v in env.items() if k.startswith("AINERD_") or k == "WEB_CONCURRENCY"}


def client() -> requests.Session:
    """A requests session that sends the hosted (Secure) session cookie over this test's plain
    HTTP (in production TLS ends at the reverse proxy): every cookie a response sets is also
    kept as a non-Secure copy."""
    s = requests.Session()

    def keep(response, *args, **kwargs):
        for cookie in response.cookies:
            s.cookies.set(cookie.name, cookie.value)

    s.hooks["response"].append(keep)
    return s


def login(session: requests.Session, base: str, role: str, password: str, next_url: str = "/"):
    page = session.get(base + "/login", timeout=30)
    token = re.search(r"name='csrf_token' value='([^']+)'", page.text).group(1)
    r = session.post(base + "/login", data=dict(role=role, password=password, csrf_token=token, next=next_url),
                     allow_redirects=False, timeout=30)
    return r


def hosting_data_dir(tmp_path_factory) -> Path:
    """A small precomputed dataset ``demo`` (a copy of the cached explorer fixture's), shared by
    the hosting and Celery tests of one session."""
    folder = tmp_path_factory.getbasetemp() / "hosting-data"
    if not (folder / "demo.h5").exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(build_explorer_data() / "demo.h5", folder / "demo.h5")
    return folder


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    explorer_data = hosting_data_dir(tmp_path_factory)
    env_image = dockerfile_env()
    assert env_image.get("AINERD_HOSTED") == "1", "the image must default to hosted mode"
    port = free_port()
    instance = tmp_path_factory.mktemp("hosted-instance")
    env = server_env(explorer_data, instance, **{**env_image, "AINERD_DATA_DIR": str(explorer_data),
                                                  "AINERD_INSTANCE_DIR": str(instance),
                                                  "AINERD_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "3",
                                                  "AINERD_SECRET_KEY": SECRET, "AINERD_ADMIN_PASSWORD": ADMIN_PW,
                                                  "AINERD_VIEWER_PASSWORD": VIEWER_PW,
                                                  "AINERD_MAX_UPLOAD_MB": "1"})
    server = Server(dockerfile_cmd(), env, port, instance / "server.log").start(timeout=120)
    try:
        yield server
    finally:
        server.stop()


def test_healthz_and_workers(hosted):
    r = requests.get(hosted.url + "/healthz", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    import psutil

    workers = psutil.Process(hosted.proc.pid).children()
    assert len(workers) == 3, hosted.log()


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/clusters"), ("GET", "/_dash-layout"),
                                          ("GET", "/_dash-dependencies"), ("POST", "/_dash-update-component"),
                                          ("GET", "/admin/"), ("GET", "/admin/_dash-layout"),
                                          ("POST", "/admin/_dash-update-component")])
def test_refused_without_credentials(hosted, method, path):
    assert_refused_without_credentials(hosted.url, method, path)


def assert_refused_without_credentials(base: str, method: str, path: str) -> None:
    """An anonymous request gets 401 (JSON clients) and a page visit is sent to the login form."""
    r = requests.request(method, base + path, json={} if method == "POST" else None,
                         headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
    assert r.status_code == 401, (path, r.status_code)
    r = requests.get(base + "/", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")


def test_viewer_login_in_every_worker(hosted):
    s = client()
    r = login(s, hosted.url, "viewer", VIEWER_PW, "/clusters")
    assert r.status_code == 303 and r.headers["Location"] == "/clusters"
    # a new connection per request: the 3 workers take turns accepting them, each must accept
    # the session (signed with the shared AINERD_SECRET_KEY)
    for _ in range(15):
        r = s.get(hosted.url + "/_dash-layout", headers={"Connection": "close"}, timeout=30)
        assert r.status_code == 200
    assert s.get(hosted.url + "/admin/_dash-layout", timeout=30).status_code == 403


def test_admin_login(hosted):
    s = client()
    assert login(s, hosted.url, "admin", "wrong", "/admin/").status_code == 401
    r = login(s, hosted.url, "admin", ADMIN_PW, "/admin/")
    assert r.status_code == 303 and r.headers["Location"] == "/admin/"
    assert s.get(hosted.url + "/admin/", timeout=30).status_code == 200
    assert s.get(hosted.url + "/_dash-layout", timeout=30).status_code == 200


def test_security_headers(hosted):
    for path in ("/login", "/healthz", "/"):
        r = requests.get(hosted.url + path, allow_redirects=False, timeout=10)
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert requests.get(hosted.url + "/login", timeout=10).headers["Cache-Control"] == "no-store"
    set_cookie = requests.get(hosted.url + "/login", timeout=10).headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie


def test_oversized_upload_413(hosted):
    s = client()
    login(s, hosted.url, "admin", ADMIN_PW)
    r = s.post(hosted.url + "/_dash-update-component", data=b"x" * (2 * 1024 * 1024),
               headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413
    assert "at most 1 MiB" in r.json()["error"]


def test_access_log_has_no_tokens(hosted):
    requests.get(f"{hosted.url}/evaluate/{TOKEN}/?token={TOKEN}", timeout=10)
    s = client()
    login(s, hosted.url, "viewer", VIEWER_PW)
    cookie = next(iter(s.cookies)).value
    s.get(hosted.url + "/healthz", timeout=10)
    time.sleep(0.5)
    log = hosted.log_path.read_text(errors="replace")
    assert "/evaluate/[redacted]" in log
    assert TOKEN not in log and cookie not in log and VIEWER_PW not in log


@pytest.mark.parametrize("missing", ["AINERD_SECRET_KEY", "AINERD_ADMIN_PASSWORD"])
def test_hosted_refuses_to_start_without_secrets(tmp_path, missing):
    values = {"AINERD_SECRET_KEY": SECRET, "AINERD_ADMIN_PASSWORD": ADMIN_PW}
    values.pop(missing)
    env = server_env(tmp_path, tmp_path / "instance", **{**dockerfile_env(),
                                                          "AINERD_BIND": f"127.0.0.1:{free_port()}", **values})
    proc = subprocess.run(dockerfile_cmd(), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and missing in lines[0], lines


def test_local_mode_master_hands_one_key_to_its_workers(tmp_path):
    """Without AINERD_SECRET_KEY (local mode) gunicorn.conf.py, run once in the master, puts one
    random key into the environment every worker inherits (sessions work in every worker)."""
    env = server_env(tmp_path, tmp_path / "instance")
    code = ("import os, runpy; ns = runpy.run_path('gunicorn.conf.py'); "
            "print(len(os.environ['AINERD_SECRET_KEY']), ns['workers'], ns['preload_app'], ns['bind'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["64", "3", "False"]
    assert "127.0.0.1:8050" in proc.stdout


@pytest.mark.browser
def test_recluster_job_with_progress_in_chromium(hosted):
    run_recluster_in_browser(hosted.url, VIEWER_PW)


def run_recluster_in_browser(base: str, viewer_password: str, dataset: str = "demo") -> None:
    """Log in as viewer in headless Chromium, run the /clusters re-cluster job, watch its progress."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from browser_support import browser

    if not any("recluster-run" in p.read_text() for p in (REPO / "dashboard").rglob("*.py")):
        pytest.skip("the /clusters re-cluster job (recluster-run) has not landed yet")
    with browser() as driver:
        wait = WebDriverWait(driver, 90)
        driver.get(f"{base}/clusters?dataset={dataset}")
        wait.until(lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "password-viewer").send_keys(viewer_password)
        driver.find_element(By.ID, "submit-viewer").click()
        wait.until(lambda d: d.find_elements(By.ID, "recluster-run"))
        assert "/clusters" in driver.current_url
        k_input = driver.find_element(By.ID, "recluster-k")
        k_input.clear()
        k_input.send_keys("4")
        run = enabled(driver, "#recluster-run")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", run)
        time.sleep(0.3)
        driver.execute_script("arguments[0].click();", run)
        seen = set()

        def finished(d):
            bars = d.find_elements(By.CSS_SELECTOR, "#recluster-progress .progress-bar, #recluster-progress[role=progressbar]")
            if bars:
                seen.add((bars[0].get_attribute("aria-valuenow"), bars[0].text.strip()))
            result = d.find_elements(By.ID, "recluster-result")
            return result and result[0].text.strip()

        text = WebDriverWait(driver, 240).until(finished)  # a background job: generous on a busy 2-core CI machine
        assert "k = 4" in text, text  # "k-means, k = 4: sizes ..."
        wait.until(lambda d: finished(d) and ("100", "done") in seen)
        assert any(v not in (None, "0") for v, _ in seen), seen
        errors = console_errors(driver)
        assert not errors, errors


@pytest.mark.browser
def test_every_page_runs_under_the_csp(hosted):
    """No console errors (CSP violations are console errors) on any explorer page or /admin/."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from browser_support import browser

    with browser() as driver:
        wait = WebDriverWait(driver, 90)
        driver.get(f"{hosted.url}/login?next=/")
        driver.find_element(By.ID, "password-admin").send_keys(ADMIN_PW)
        driver.find_element(By.ID, "submit-admin").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "a[id^=nav-]"))
        pages = sorted({a.get_attribute("href").split("?")[0]
                        for a in driver.find_elements(By.CSS_SELECTOR, "a[id^=nav-]")})
        assert len(pages) >= 2, pages
        failures = {}
        for url in [*pages, f"{hosted.url}/admin/"]:
            driver.get(f"{url}?dataset=demo")
            wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#react-entry-point *"))
            time.sleep(2.5)  # let the page's callbacks and figures render
            errors = console_errors(driver)
            if errors:
                failures[url] = errors
        assert not failures, failures
