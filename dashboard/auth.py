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

Sessions are server-side (table ``web_sessions`` of the evaluation database): the signed
Flask cookie (key ``AINERD_SECRET_KEY``) holds only a random session id; the database row holds
the role, the expiry (``AINERD_SESSION_HOURS``), a fingerprint of the role's password at login
(a new password ends the role's sessions) and ``revoked_utc``. Logout (POST with the CSRF
token) and "log out everywhere" (admin page) revoke rows, so a copied cookie stops working at
once in every worker. ``GET /logout`` only shows the logout button (no state change: a
cross-site link cannot log anybody out).

Login attempts are counted per client address before the password is checked, by one atomic
database upsert (``StudyStore.count_login_attempt``: SQLite's write lock or PostgreSQL's row
lock serialise concurrent attempts), or Redis ``INCR`` when ``AINERD_BACKGROUND=celery``; a
correct password takes its attempt back. Attempt number ``AINERD_LOGIN_MAX_FAILURES + 1``
within ``AINERD_LOGIN_WINDOW_S`` seconds of the previous attempt gets 429 without its password
being checked, so under any number of concurrent attempts exactly ``AINERD_LOGIN_MAX_FAILURES``
wrong passwords are tried per window. Behind a reverse proxy set ``AINERD_TRUSTED_PROXIES`` so
that the client address is the proxy's ``X-Forwarded-For``.

The login and logout forms carry a per-session CSRF token (and the cookie is SameSite=Lax).
The instance folder is made 0700 and the SQLite database 0600 when the app starts.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import secrets
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


def _store(config=None):
    """The database of sessions, login counts and the audit log (one per database URL)."""
    from ainerd_core.studies import StudyStore

    config = config or _config()
    store = _STORES.get(config.database_url)
    if store is None:
        store = _STORES.setdefault(config.database_url, StudyStore(config.database_url))
    return store


_STORES: dict = {}


def session_values(config, role: str) -> dict:
    """The session entries of a new login as ``role``: a server-side session is created and its
    id returned for the cookie (tests: ``session_transaction().update``)."""
    if role not in ROLES:
        raise ValueError(role)
    sid = _store(config).create_web_session(role, _fingerprint(config, role), config.session_hours)
    return {SESSION_KEY: {"sid": sid}}


def _session_id() -> str | None:
    data = session.get(SESSION_KEY)
    sid = data.get("sid") if isinstance(data, dict) else None
    return sid if isinstance(sid, str) else None


def session_record() -> dict | None:
    """The live server-side session of this request (role, fingerprint...), looked up once per
    request; None when there is none or it was revoked, expired or is of an old password."""
    sid = _session_id()
    cached = getattr(flask.g, "ainerd_web_session", None)
    if cached is not None and cached[0] == sid:
        return cached[1]
    config = _config()
    rec = None
    if sid:
        rec = _store(config).web_session(sid)
        if rec is not None:
            role = rec["role"]
            if (role not in ROLES or not _password(config, role)
                    or not hmac.compare_digest(rec["fingerprint"], _fingerprint(config, role))):
                rec = None
    flask.g.ainerd_web_session = (sid, rec)
    return rec


def logged_in_role() -> str | None:
    """The role this request's session logged in as ('admin' or 'viewer'), else None."""
    rec = session_record()
    return rec["role"] if rec else None


def actor() -> str:
    """Who acts in this request, for the audit log: 'admin session 1a2b3c...' (no secret)."""
    rec = session_record()
    return f"{rec['role']} session {rec['id']}" if rec else "anonymous"


def end_all_sessions(reason: str = "log out everywhere") -> int:
    """Revoke every live viewer and admin session (this one included); returns the number."""
    n = _store().end_all_web_sessions(reason)
    flask.g.pop("ainerd_web_session", None)
    return n


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
        blinding = current_app.extensions.get("ainerd_blinding")
        return blinding.check(path) if blinding is not None else None
    return _refuse(401, "Log in at /login to view this dashboard.", "viewer")


# ------------------------------------------------------------------ rate limiting

class LoginRateLimiter:
    """Login attempts per client address, counted atomically before the password is checked
    (see module doc): the database of the app, or Redis with ``AINERD_BACKGROUND=celery``."""

    def __init__(self, config):
        self.max_failures = config.login_max_failures
        self.window = max(1, config.login_window_s)
        self._redis = None
        self._store = _store(config)
        if config.background == "celery":
            import redis

            self._redis = redis.Redis.from_url(config.redis_url, socket_timeout=5)

    @staticmethod
    def _key(client: str) -> str:
        return "ainerd-login-fail:" + hashlib.sha256(client.encode()).hexdigest()[:32]

    def attempt(self, client: str) -> bool:
        """Count one attempt; False when it is beyond the limit (answer 429, check nothing)."""
        if self.max_failures <= 0:
            return True
        key = self._key(client)
        if self._redis is not None:
            pipe = self._redis.pipeline(transaction=True)  # MULTI: INCR and EXPIRE as one
            pipe.incr(key)
            pipe.expire(key, self.window)
            count = int(pipe.execute()[0])
        else:
            count = self._store.count_login_attempt(key, self.window)
        return count <= self.max_failures

    def succeeded(self, client: str) -> None:
        """A correct password: its attempt is no failure."""
        if self.max_failures <= 0:
            return
        key = self._key(client)
        if self._redis is not None:
            if self._redis.decr(key) <= 0:  # never leave a counter behind without its expiry
                self._redis.delete(key)
        else:
            self._store.uncount_login_attempt(key)


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
                     + logout_form_html())
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


def logout_form_html() -> str:
    """The logout button: a POST form with this session's CSRF token."""
    return ("<form method='post' action='/logout' id='logout-form'>"
            f"<input type='hidden' name='csrf_token' value='{_csrf_token()}'>"
            "<button type='submit' id='logout'>Log out</button></form>")


def csrf_token() -> str:
    """This session's CSRF token (for forms built elsewhere, e.g. the admin page's logout)."""
    return _csrf_token()


def _login_post(limiter: LoginRateLimiter):
    config = _config()
    next_url = safe_next(request.form.get("next"))
    token = request.form.get("csrf_token", "")
    expected = session.get(CSRF_KEY)
    if not isinstance(expected, str) or not token or not _same(token, expected):
        return _login_page("The login form expired; please try again.", 400, next_url)
    role = request.form.get("role", "")
    password = request.form.get("password", "")
    expected_password = _password(config, role) if role in ROLES else None
    if not expected_password:
        return _login_page(f"This server has no {role or 'such'} login.", 400, next_url)
    # counted before the password is compared: concurrent attempts cannot slip past the limit
    if not limiter.attempt(_client()):
        response = _login_page("Too many failed logins from your address; try again later.", 429, next_url)
        response.headers["Retry-After"] = str(limiter.window)
        return response
    if not _same(password, expected_password):
        current_app.logger.warning("failed %s login from %s", role, _client())
        return _login_page("Wrong password.", 401, next_url)
    limiter.succeeded(_client())
    old = _session_id()
    if old:
        _store(config).end_web_session(old, "new login")
    session.pop(SESSION_KEY, None)
    session.update(session_values(config, role))
    flask.g.pop("ainerd_web_session", None)
    session[CSRF_KEY] = secrets.token_urlsafe(32)  # a new token after login
    session.permanent = True
    if role == "viewer" and next_url.startswith(ADMIN_PREFIX):
        next_url = "/"
    return flask.redirect(next_url, code=303)


def _logout():
    """GET: a page with the logout button (changes nothing). POST with the CSRF token: the
    server-side session is revoked (a copy of the cookie stops working too)."""
    if request.method != "POST":
        role = logged_in_role()
        if not role:
            return _page("Log out", "<p>You are not logged in. <a href='/login'>Log in</a></p>")
        return _page("Log out", f"<p>Logged in as <b>{role}</b>.</p>" + logout_form_html())
    token = request.form.get("csrf_token", "")
    expected = session.get(CSRF_KEY)
    if not isinstance(expected, str) or not token or not _same(token, expected):
        return _page("Log out", "<p class='error' role='alert'>The logout form expired or came from another "
                                "site; nothing was changed.</p>" + logout_form_html(), status=400)
    sid = _session_id()
    if sid:
        _store().end_web_session(sid, "logout")
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
    from ainerd_core.studies import private_folder

    private_folder(config.instance_dir)  # 0700 however the app is started
    if config.database_url.startswith("sqlite:///"):
        from ainerd_core.studies import private_sqlite_file

        private_sqlite_file(config.database_url.split(":///", 1)[1])  # 0600, even if made before
    _store(config).engine  # creates the tables now, not on the first login
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
