"""Access control of the whole Flask server: roles, the login page and one gate for every route.

Roles
-----
- ``viewer``: may use the explorer (``/`` and everything below it that is not ``/admin``).
  Needs a login only when ``AINERD_VIEWER_PASSWORD`` is set; without it the explorer is open.
- ``admin``: may use ``/admin/`` (and the explorer). Password ``AINERD_ADMIN_PASSWORD``.
  Without an admin password (local mode only: hosted mode refuses to start) the admin pages
  are **off** for everybody, loopback included, and answer 403 with a message saying which
  variable to set. Loopback-only access was rejected: on a shared machine every local user,
  and every web page that makes the browser post to 127.0.0.1, would be admin.

Enforcement (``before_request``, so it covers Dash's internal routes too)
----------------------------------------------------------------------
- exempt: ``/login``, ``/login/style.css``, ``/logout``, ``/healthz`` and the ``/evaluate/``
  prefix (the expert app checks its own token sessions on every route under it);
- ``/admin`` and everything starting with it: admin;
- everything else (``/``, ``/_dash-layout``, ``/_dash-dependencies``, ``/_dash-update-component``,
  ``/_dash-component-suites/...``, ``/_reload-hash``, ``/assets/...``, image routes, downloads,
  unknown paths): viewer or admin when a viewer password is set, otherwise open.

A refused browser navigation (GET/HEAD asking for HTML) is redirected (302) to
``/login?next=<path>``; any other refused request gets JSON with 401 (not logged in) or
403 (logged in without the needed role, or admin pages off).

Sessions are Flask's signed cookies (key ``AINERD_SECRET_KEY``, the same in every worker).
A session stores the role, the login time and a fingerprint of that role's current password,
so changing a password ends its sessions. Sessions last ``AINERD_SESSION_HOURS``.

Failed logins are counted per client address in a store all workers share: the diskcache
folder under ``AINERD_CACHE_DIR`` (all workers of one host or container), or Redis
(``AINERD_REDIS_URL``) when ``AINERD_BACKGROUND=celery`` (all hosts). After
``AINERD_LOGIN_MAX_FAILURES`` failures within ``AINERD_LOGIN_WINDOW_S`` seconds the address
gets 429 until the window has passed since its last failure. Behind a reverse proxy set
``AINERD_TRUSTED_PROXIES`` so that the client address is the proxy's ``X-Forwarded-For``.

The login form carries a per-session CSRF token (and the session cookie is SameSite=Lax).
"""
from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import time
from datetime import timedelta
from urllib.parse import quote, urlsplit

import flask
from flask import current_app, request, session

from .security import install_log_redaction, inline_script_hashes, security_headers

ROLES = ("viewer", "admin")
SESSION_KEY = "ainerd_auth"
CSRF_KEY = "ainerd_csrf"
EXEMPT_PATHS = frozenset({"/login", "/login/style.css", "/logout", "/healthz"})
EXPERT_PREFIX = "/evaluate"
ADMIN_PREFIX = "/admin"
# Dash's own machinery (of any of the mounted apps): never answered with an HTML redirect
_INTERNAL_MARKERS = ("/_dash-", "/_reload-hash", "/_favicon", "/_alive")


# ------------------------------------------------------------------ roles and sessions

def _config(app=None):
    return (app or current_app).extensions["ainerd_config"]


def _password(config, role: str) -> str | None:
    return config.admin_password if role == "admin" else config.viewer_password


def _fingerprint(config, role: str) -> str:
    """Ties a session to the role's current password (a new password ends old sessions)."""
    msg = f"{role}\0{_password(config, role) or ''}".encode()
    return hmac.new(config.secret_key.encode(), msg, hashlib.sha256).hexdigest()[:32]


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings of any length."""
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(), hashlib.sha256(b.encode()).digest())


def session_values(config, role: str) -> dict:
    """The session entries of a login as ``role`` (tests: ``session_transaction().update``)."""
    if role not in ROLES:
        raise ValueError(role)
    return {SESSION_KEY: {"role": role, "at": int(time.time()), "fp": _fingerprint(config, role)}}


def logged_in_role() -> str | None:
    """The role this request's session logged in as ('admin' or 'viewer'), else None."""
    config = _config()
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    role = data.get("role")
    if role not in ROLES or not _password(config, role):
        return None
    if not isinstance(data.get("fp"), str) or not hmac.compare_digest(data["fp"], _fingerprint(config, role)):
        return None
    at = data.get("at")
    if not isinstance(at, int) or time.time() - at > config.session_hours * 3600 or at > time.time() + 60:
        return None
    return role


def current_role() -> str | None:
    """The role this request acts with: 'admin' or 'viewer' when logged in as one, 'viewer' for
    anybody while the explorer is open (no viewer password), otherwise None."""
    role = logged_in_role()
    if role:
        return role
    return "viewer" if not _config().viewer_password else None


def admin_enabled(config=None) -> bool:
    return bool((config or _config()).admin_password)


# ------------------------------------------------------------------ redirects

def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site, else ``default`` (no open redirects)."""
    if not value or len(value) > 2048 or not value.startswith("/") or value.startswith("//"):
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    if parts.path in ("/login", "/logout"):
        return default
    return value


def _wants_html() -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    if request.headers.get("X-Requested-With") or any(m in request.path for m in _INTERNAL_MARKERS):
        return False
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "text/html"


def _refuse(status: int, message: str, need: str):
    config = _config()
    if _wants_html() and status in (401, 403) and (need != "admin" or admin_enabled(config)):
        target = request.full_path if request.query_string else request.path
        return flask.redirect("/login?next=" + quote(safe_next(target), safe="/"), code=302)
    if _wants_html():
        return _page("Not available", f"<p class='error'>{html.escape(message)}</p>", status=status)
    response = flask.jsonify(error=message, login="/login", need=need)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Cookie realm="AI-NERD", form-action="/login"'
    return response


def _enforce():
    """``before_request`` gate of every route (Dash internals included)."""
    config = _config()
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and request.content_length and request.content_length > limit:
        flask.abort(413)
    path = request.path
    if path in EXEMPT_PATHS or path == EXPERT_PREFIX or path.startswith(EXPERT_PREFIX + "/"):
        return None
    role = logged_in_role()
    if path.startswith(ADMIN_PREFIX):
        if not admin_enabled(config):
            return _refuse(403, "The admin pages are off: this server has no AINERD_ADMIN_PASSWORD. "
                                "Set it and restart, then log in at /login.", "admin")
        if role == "admin":
            return None
        if role is None:
            return _refuse(401, "Log in as admin at /login.", "admin")
        return _refuse(403, "This page needs the admin role: log in as admin at /login.", "admin")
    if not config.viewer_password or role in ROLES:
        return None
    return _refuse(401, "Log in at /login to view this dashboard.", "viewer")


# ------------------------------------------------------------------ rate limiting

class LoginRateLimiter:
    """Failed logins per client address, in a store every worker shares (see module doc)."""

    def __init__(self, config):
        self.max_failures = config.login_max_failures
        self.window = max(1, config.login_window_s)
        self._redis = self._cache = None
        if config.background == "celery":
            import redis

            self._redis = redis.Redis.from_url(config.redis_url, socket_timeout=5)
        else:
            import diskcache

            from .background import private_dir

            self._cache = diskcache.Cache(private_dir(config.cache_dir / "login-failures"))

    @staticmethod
    def _key(client: str) -> str:
        return "ainerd-login-fail:" + hashlib.sha256(client.encode()).hexdigest()[:32]

    def blocked(self, client: str) -> bool:
        if self.max_failures <= 0:
            return False
        key = self._key(client)
        count = self._redis.get(key) if self._redis is not None else self._cache.get(key, 0)
        return int(count or 0) >= self.max_failures

    def failed(self, client: str) -> None:
        key = self._key(client)
        if self._redis is not None:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, self.window)
            pipe.execute()
            return
        with self._cache.transact():
            self._cache.set(key, int(self._cache.get(key, 0)) + 1, expire=self.window)


# ------------------------------------------------------------------ pages

_CSS = """
body.ainerd-login{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f4f6f8;
  color:#1d2733;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
.ainerd-login main{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:2rem 2.5rem;
  width:22rem;box-shadow:0 2px 8px rgba(0,0,0,.06)}
.ainerd-login h1{font-size:1.4rem;margin:0 0 1rem}
.ainerd-login h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
.ainerd-login label{display:block;font-size:.9rem;margin:.3rem 0}
.ainerd-login input[type=password]{width:100%;box-sizing:border-box;padding:.45rem;border:1px solid #b8c2cc;
  border-radius:4px;font-size:1rem}
.ainerd-login button{margin-top:.6rem;padding:.45rem 1.1rem;border:0;border-radius:4px;background:#1f6feb;
  color:#fff;font-size:.95rem;cursor:pointer}
.ainerd-login .error{color:#b42318;background:#fef3f2;border:1px solid #fecdca;border-radius:4px;padding:.5rem}
.ainerd-login .note{color:#57606a;font-size:.85rem}
"""


def _page(title: str, body: str, status: int = 200):
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
           f"<title>{html.escape(title)} - AI-NERD</title><link rel='stylesheet' href='/login/style.css'>"
           f"</head><body class='ainerd-login'><main><h1>AI-NERD</h1>{body}</main></body></html>")
    response = flask.make_response(doc, status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


def _csrf_token() -> str:
    token = session.get(CSRF_KEY)
    if not isinstance(token, str) or len(token) < 20:
        token = secrets.token_urlsafe(32)
        session[CSRF_KEY] = token
    return token


def _login_page(error: str | None = None, status: int = 200, next_url: str = "/"):
    config = _config()
    parts = []
    if error:
        parts.append(f"<p class='error' role='alert'>{html.escape(error)}</p>")
    role = logged_in_role()
    if role:
        parts.append(f"<p>Logged in as <b>{role}</b>. <a href='{html.escape(next_url)}'>Continue</a></p>"
                     "<form method='post' action='/logout'>"
                     f"<input type='hidden' name='csrf_token' value='{_csrf_token()}'>"
                     "<button type='submit' id='logout'>Log out</button></form>")
    forms = [("viewer", "Viewer", "View the explorer.")] if config.viewer_password else []
    if admin_enabled(config):
        forms.append(("admin", "Admin", "Studies, uploads and everything a viewer sees."))
    for name, label, note in forms:
        parts.append(
            f"<form method='post' action='/login' id='login-{name}'><h2>{label}</h2>"
            f"<p class='note'>{note}</p>"
            f"<input type='hidden' name='role' value='{name}'>"
            f"<input type='hidden' name='csrf_token' value='{_csrf_token()}'>"
            f"<input type='hidden' name='next' value='{html.escape(next_url)}'>"
            f"<label for='password-{name}'>Password</label>"
            f"<input type='password' id='password-{name}' name='password' autocomplete='current-password' required>"
            f"<button type='submit' id='submit-{name}'>Log in as {name}</button></form>")
    if not forms:
        parts.append("<p>The explorer is open (no AINERD_VIEWER_PASSWORD) and the admin pages are off "
                     "(no AINERD_ADMIN_PASSWORD). <a href='/'>Go to the explorer</a></p>")
    elif not config.viewer_password:
        parts.append("<p class='note'>The explorer is open to everybody: <a href='/'>go to the explorer</a>.</p>")
    return _page("Log in", "".join(parts), status)


def _client() -> str:
    return request.remote_addr or "unknown"


def _login_post(limiter: LoginRateLimiter):
    config = _config()
    next_url = safe_next(request.form.get("next"))
    if limiter.blocked(_client()):
        response = _login_page("Too many failed logins from your address; try again later.", 429, next_url)
        response.headers["Retry-After"] = str(limiter.window)
        return response
    token = request.form.get("csrf_token", "")
    expected = session.get(CSRF_KEY)
    if not isinstance(expected, str) or not token or not _same(token, expected):
        return _login_page("The login form expired; please try again.", 400, next_url)
    role = request.form.get("role", "")
    password = request.form.get("password", "")
    expected_password = _password(config, role) if role in ROLES else None
    if not expected_password:
        return _login_page(f"This server has no {role or 'such'} login.", 400, next_url)
    if not _same(password, expected_password):
        limiter.failed(_client())
        current_app.logger.warning("failed %s login from %s", role, _client())
        return _login_page("Wrong password.", 401, next_url)
    session.pop(SESSION_KEY, None)
    session.update(session_values(config, role))
    session[CSRF_KEY] = secrets.token_urlsafe(32)  # a new token after login
    session.permanent = True
    if role == "viewer" and next_url.startswith(ADMIN_PREFIX):
        next_url = "/"
    return flask.redirect(next_url, code=303)


def _logout():
    if request.method == "POST":
        token = request.form.get("csrf_token", "")
        expected = session.get(CSRF_KEY)
        if not isinstance(expected, str) or not _same(token, expected):
            return _login_page("The logout form expired; please try again.", 400)
    session.pop(SESSION_KEY, None)
    session.pop(CSRF_KEY, None)
    return flask.redirect("/login", code=303)


# ------------------------------------------------------------------ headers and errors

def _is_no_store_path(path: str) -> bool:
    return (path in EXEMPT_PATHS or path == EXPERT_PREFIX or path.startswith(EXPERT_PREFIX + "/")
            or path.startswith(ADMIN_PREFIX))


def _add_headers(response):
    config = _config()
    hashes = ()
    if response.mimetype == "text/html" and not response.is_streamed and not response.direct_passthrough:
        hashes = inline_script_hashes(response.get_data())
    path = request.path
    no_store = (_is_no_store_path(path) or response.status_code in (401, 403, 429)
                or (bool(config.viewer_password) and "Cache-Control" not in response.headers))
    headers = security_headers(script_hashes=hashes, no_store=no_store,
                               hsts=config.hosted and request.is_secure)
    csp = headers.pop("Content-Security-Policy")
    response.headers.setdefault("Content-Security-Policy", csp)
    for name, value in headers.items():
        response.headers[name] = value
    return response


def _too_large(_error):
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    message = (f"Request too large: this server accepts at most {limit / 2**20:g} MiB per request "
               "(AINERD_MAX_UPLOAD_MB).")
    if _wants_html():
        return _page("Too large", f"<p class='error'>{html.escape(message)}</p>", status=413)
    response = flask.jsonify(error=message, max_bytes=limit)
    response.status_code = 413
    return response


# ------------------------------------------------------------------ wiring

def init_auth(server: flask.Flask, config) -> None:
    """Install the login routes, the access gate, security headers and log redaction."""
    install_log_redaction()
    if config.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = config.trusted_proxies
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)
    server.config.update(PERMANENT_SESSION_LIFETIME=timedelta(hours=config.session_hours),
                         SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    server.extensions["ainerd_config"] = config
    limiter = LoginRateLimiter(config)
    server.extensions["ainerd_login_limiter"] = limiter

    # first in line: runs before any before_request another app adds later
    server.before_request_funcs.setdefault(None, []).insert(0, _enforce)
    server.after_request(_add_headers)
    server.register_error_handler(413, _too_large)

    @server.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "POST":
            return _login_post(limiter)
        return _login_page(next_url=safe_next(request.args.get("next")))

    @server.get("/login/style.css")
    def login_css():
        response = flask.make_response(_CSS)
        response.headers["Content-Type"] = "text/css; charset=utf-8"
        return response

    server.add_url_rule("/logout", "logout", _logout, methods=["GET", "POST"])
