"""gunicorn settings of the dashboard (the Dockerfile's CMD and tests/test_hosting.py use it).

    gunicorn --config gunicorn.conf.py dashboard.app:server

| variable | default | meaning |
|---|---|---|
| AINERD_BIND | 127.0.0.1:$PORT (0.0.0.0:8050 in the image) | address to listen on |
| PORT | 8050 | port when AINERD_BIND is unset |
| WEB_CONCURRENCY | 3 | worker processes (each builds its own app: preload is off) |
| GUNICORN_THREADS | 4 | threads per worker (gthread worker) |
| GUNICORN_TIMEOUT | 120 | seconds a request may take before its worker is restarted |
| FORWARDED_ALLOW_IPS | 127.0.0.1,::1 | proxies whose X-Forwarded-Proto gunicorn believes (set to the reverse proxy's address) |

The master checks the configuration before forking (hosted mode without AINERD_SECRET_KEY or
AINERD_ADMIN_PASSWORD exits with status 2 and one line ``error: ...``). In local mode without
AINERD_SECRET_KEY the master draws one random key and hands it to all workers through the
environment, so sessions and Dash's signed background-job handles work whichever worker answers.
The access log carries no expert token, cookie or Authorization header
(``dashboard.security.RedactingGunicornLogger``).
"""
import os
import secrets
import sys

# importable because gunicorn puts its working directory (--chdir, default: where it was started,
# the checkout or /app in the image) on sys.path before it reads this file; or pip-installed
from dashboard.config import Config, ConfigError  # standard library only

try:
    _config = Config.from_env()
except (ConfigError, ValueError) as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)
if not os.environ.get("AINERD_SECRET_KEY"):
    # local mode only (hosted mode refused above): one key for all workers of this master
    os.environ["AINERD_SECRET_KEY"] = secrets.token_hex(32)

bind = [os.environ.get("AINERD_BIND") or f"127.0.0.1:{os.environ.get('PORT', '8050')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
preload_app = False  # every worker imports and builds its own app (nothing shared by fork)
control_socket_disable = True  # no gunicornc socket in $HOME (shared by every instance of the user)
max_requests = 2000
max_requests_jitter = 200
limit_request_line = 8190
limit_request_fields = 100
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
logger_class = "dashboard.security.RedactingGunicornLogger"
# no cookies, no Authorization, no referrer (it may hold an expert link); paths are redacted
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def post_worker_init(worker):
    """Finish Dash's one-time set-up before this worker takes requests.

    Each Dash app completes its set-up (``_setup_server``: registering the component-suite paths
    it may serve) on the first request of the process, and marks itself done *before* it is
    done: with several threads, the concurrent first requests of a browser could be answered
    with 500 "the path requested is not valid". One request here, on one thread, runs it for
    every mounted Dash app (their set-up hooks run on any request, /healthz included).
    """
    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "test_client"):
        return
    try:
        app.test_client().get("/healthz")
    except Exception:  # report, and let the worker answer (and show) the error itself
        worker.log.exception("warm-up request failed")
