"""Background callbacks through Celery and a real Redis (AINERD_BACKGROUND=celery).

Starts ``redis-server`` on a free port and a real worker (``celery -A dashboard.celery_worker
worker``), then

- submits a job exactly the way Dash's background-callback machinery does (cache key, the
  manager's registered job function, ``call_job_fn``, polling progress and result), and
- drives the /clusters re-cluster job in headless Chromium against the Dockerfile's gunicorn
  command, the job running in the Celery worker.

Skips when ``redis-server`` is missing, unless ``AINERD_REQUIRE_REDIS=1`` (set by .ci/run).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ainerd_core.processes import log_tail, wait_until_ready
from browser_support import REPO, Server, free_port, server_env

pytestmark = pytest.mark.slow

SECRET = "fedcba9876543210" * 4
VIEWER_PW = "celery-viewer-password"
ADMIN_PW = "celery-admin-password"
SELFTEST_ID = "ainerd-celery-selftest"


def selftest_job(set_progress, n):
    """A background 'callback': reports progress n times, returns where it ran."""
    import os as _os
    import time as _time

    for i in range(1, n + 1):
        set_progress([i, f"{i}/{n}"])
        _time.sleep(0.3)
    return {"sum": sum(range(n + 1)), "pid": _os.getpid()}


def _register_selftest() -> str:
    """Register ``selftest_job`` with Dash's background-callback registry (every manager, in this
    process and, through ``--include test_celery``, in the worker): the key is a hash of the
    source and id, the same in both processes."""
    from dash.background_callback.managers import BaseBackgroundCallbackManager as Base

    key = Base.hash_function(selftest_job, SELFTEST_ID)
    if all(k != key for k, *_ in Base.functions):
        Base.register_func(selftest_job, True, SELFTEST_ID)
    return key


SELFTEST_KEY = _register_selftest()


def _wait_log(path: Path, needle: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{text[-4000:]}")
        time.sleep(0.3)
    raise RuntimeError(f"{needle!r} not seen within {timeout} s:\n{path.read_text(errors='replace')[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if not exe:
        message = "the Celery tests need redis-server (apt-get install redis-server)"
        if os.environ.get("AINERD_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = folder / "redis.log"
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), "--logfile", str(log)], start_new_session=True)
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    try:
        wait_until_ready(proc, client.ping, name="redis-server", ready_means="answer PING", timeout=20,
                         log=lambda: log_tail(log, 2000),
                         stop=lambda: _stop(proc), interval=0.1)
    except RuntimeError as exc:
        pytest.fail(f"redis-server did not start: {exc}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from test_hosting import hosting_data_dir

    return hosting_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def celery_env(redis_url, data_dir, tmp_path_factory):
    instance = tmp_path_factory.mktemp("celery-instance")
    return server_env(data_dir, instance, AINERD_BACKGROUND="celery", AINERD_REDIS_URL=redis_url,
                      AINERD_SECRET_KEY=SECRET, AINERD_VIEWER_PASSWORD=VIEWER_PW, AINERD_ADMIN_PASSWORD=ADMIN_PW,
                      PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))


@pytest.fixture(scope="module")
def worker(celery_env, tmp_path_factory):
    log = tmp_path_factory.mktemp("celery-worker") / "worker.log"
    cmd = [str(Path(sys.executable).parent / "celery"), "-A", "dashboard.celery_worker", "worker",
           "--pool", "solo", "--loglevel", "INFO", "--include", "test_celery",
           "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", f"ainerd-test-{os.getpid()}@%h"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=celery_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_log(log, "ready.", proc, timeout=120)
        yield proc, log
    finally:
        _stop(proc)


def test_worker_refuses_without_celery_mode(data_dir, tmp_path):
    env = server_env(data_dir, tmp_path, AINERD_BACKGROUND="diskcache")
    proc = subprocess.run([sys.executable, "-c", "import dashboard.celery_worker"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "AINERD_BACKGROUND=celery" in proc.stderr


def test_job_submitted_like_dash_runs_in_worker(celery_env, worker):
    """What dash._callback._setup_background_callback and the polling requests do."""
    from dash import CeleryManager

    from dashboard import background
    from dashboard.config import Config

    config = Config.from_env(celery_env)
    manager = background.make_background_manager(config)
    assert isinstance(manager, CeleryManager)
    job_fn = manager.func_registry[SELFTEST_KEY]
    args = [4]
    cache_key = manager.build_cache_key(selftest_job, args, [], None)
    context = {"args": {}, "inputs_list": [{"id": "n", "property": "value", "value": 4}], "states_list": [],
               "outputs_list": [], "triggered_inputs": [{"prop_id": "n.value", "value": 4}],
               "ignore_register_page": True, "path": "/", "remote": "127.0.0.1", "origin": ""}
    job = manager.call_job_fn(cache_key, job_fn, args, context)
    progress, deadline = [], time.time() + 60
    while not manager.result_ready(cache_key):
        assert time.time() < deadline, worker[1].read_text()[-3000:]
        value = manager.get_progress(cache_key)
        if value:
            progress.append(value)
        time.sleep(0.1)
    result = manager.get_result(cache_key, job)
    assert result["sum"] == 10
    assert result["pid"] == worker[0].pid and result["pid"] != os.getpid()
    assert progress and progress[-1][0] in (3, 4), progress
    assert all(p[1] == f"{p[0]}/4" for p in progress)
    assert f"background_callback_{SELFTEST_KEY}" in worker[1].read_text()


@pytest.mark.browser
def test_recluster_job_through_celery_in_chromium(celery_env, worker):
    from test_hosting import dockerfile_cmd, run_recluster_in_browser

    port = free_port()
    env = dict(celery_env, AINERD_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2")
    log = Path(env["AINERD_INSTANCE_DIR"]).parent / f"web-{port}.log"
    server = Server(dockerfile_cmd(), env, port, log).start(timeout=120)
    try:
        before = worker[1].read_text(errors="replace").count("succeeded in")
        run_recluster_in_browser(server.url, VIEWER_PW)
        after = worker[1].read_text(errors="replace").count("succeeded in")
        assert after > before, "the re-cluster job did not run in the Celery worker"
    finally:
        server.stop()


def test_login_failures_counted_in_redis(redis_url, tmp_path):
    """With AINERD_BACKGROUND=celery the login rate limit is shared through Redis (all hosts)."""
    import re

    from dashboard.app import create_app
    from dashboard.config import Config

    config = Config(data_dir=tmp_path, instance_dir=tmp_path / "instance", secret_key=SECRET,
                    admin_password=ADMIN_PW, background="celery", redis_url=redis_url,
                    login_max_failures=2, login_window_s=30).validated()
    clients = [create_app(config).test_client() for _ in range(2)]  # two replicas

    def attempt(c, password):
        token = re.search(r"name='csrf_token' value='([^']+)'", c.get("/login").text).group(1)
        return c.post("/login", data=dict(role="admin", password=password, csrf_token=token),
                      environ_base={"REMOTE_ADDR": "198.51.100.9"}).status_code

    assert attempt(clients[0], "wrong") == 401
    assert attempt(clients[1], "wrong") == 401
    assert attempt(clients[0], ADMIN_PW) == 429
    import redis

    from dashboard.auth import LoginRateLimiter

    # this client's counter (other tests on the same Redis leave theirs, with their own windows)
    key = LoginRateLimiter._key("198.51.100.9")
    r = redis.Redis.from_url(redis_url)
    assert int(r.get(key)) == 3 and 0 < r.ttl(key) <= 30
