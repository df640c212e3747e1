"""Security headers and token-free logs.

Standard library only: ``gunicorn.conf.py`` imports this module in the gunicorn master (the
access-log class below) before any app is built.

- :func:`redact` removes secrets from a log line: the path segment after ``/evaluate/`` (expert
  tokens), values of token-like query parameters, cookies and signed session values.
- :func:`install_log_redaction` makes every ``logging`` record of the process pass through
  :func:`redact` (a record factory, so it covers werkzeug's request log, gunicorn's error log
  and any handler added later).
- :class:`RedactingGunicornLogger` is gunicorn's ``logger_class``: the access log never holds an
  expert token, a cookie or an Authorization header.
- :func:`security_headers` gives the headers every response carries.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re

REDACTED = "[redacted]"

# /evaluate/<token>[/...] and /evaluate/img/<key>: the rest of the path goes; Dash's own routes
# (/evaluate/_dash-..., /evaluate/assets/...) and the static keys.js stay readable
_EVALUATE = re.compile(r"(/evaluate/)(?!_dash-|_reload-hash|_favicon|assets/|keys\.js)(img/)?([^?#\s\"']+)")
# token=..., key=... in query strings and form bodies; Dash's signed background-job handles
_QUERY = re.compile(r"(?i)((?<![\w-])(?:token|key|access_token|expert_token|password|csrf_token|cacheKey|job|oldJob)="
                    r"|[?&;]code=)"
                    r"[^&#\s\"']*")
# Cookie / Set-Cookie / Authorization header values
_HEADER = re.compile(r"(?i)\b(cookie|set-cookie|authorization)(\s*[:=]\s*)[^\r\n\"]+")
# name=value cookies of the apps (Flask session, expert sessions)
_COOKIE = re.compile(r"(?i)\b((?:session|ainerd[\w-]*|expert[\w-]*)=)[^;,\s\"']+")
# itsdangerous-signed values (Flask session cookies, signed ids): payload.timestamp.signature
_SIGNED = re.compile(r"\.?e(?:yJ|J)[\w-]{8,}\.[\w-]{4,}\.[\w-]{10,}")


def redact(text: str) -> str:
    """``text`` without expert tokens, cookies, Authorization values or signed session data."""
    if not text or not isinstance(text, str):
        return text
    text = _EVALUATE.sub(lambda m: m.group(1) + (m.group(2) or "") + REDACTED, text)
    # the same inside URL-encoded values (next=%2Fevaluate%2F<token>)
    text = re.sub(r"(?i)(%2Fevaluate%2F)(?!_dash-)([^%&\s\"']+)", lambda m: m.group(1) + REDACTED, text)
    text = _QUERY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _COOKIE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _SIGNED.sub(REDACTED, text)
    return text


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process when it is created (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to logging's own error report
        return
    clean = redact(message)
    if clean != message or record.args:
        record.msg, record.args = clean, None


try:  # only in processes that have gunicorn (the web server, not the CLI)
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # pragma: no cover
    _GunicornLogger = object


_SECRET_HEADERS = ("{cookie}i", "{authorization}i", "{set-cookie}o", "{proxy-authorization}i",
                   "{http_cookie}e", "{http_authorization}e")


class RedactingGunicornLogger(_GunicornLogger):
    """gunicorn logger whose access-log atoms carry no tokens, cookies or credentials."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key, value in list(atoms.items()):
            if key in _SECRET_HEADERS:
                atoms[key] = REDACTED if value not in (None, "-", "") else value
            elif isinstance(value, str):
                atoms[key] = redact(value)
        return atoms

    def setup(self, cfg):
        super().setup(cfg)
        install_log_redaction()


# ---------------------------------------------------------------- response headers

_INLINE_SCRIPT = re.compile(rb"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S | re.I)
_DATA_TYPES = (b"application/json", b"application/ld+json", b"text/template")


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP hashes ('sha256-...') of the executable inline scripts of an HTML page.

    Dash's index page has one or two inline scripts (the renderer bootstrap, clientside callback
    code); hashing them lets the policy forbid every other inline script.
    """
    hashes = []
    for m in _INLINE_SCRIPT.finditer(html):
        attrs = m.group("attrs").lower()
        if b"src=" in attrs or any(t in attrs for t in _DATA_TYPES):
            continue
        digest = base64.b64encode(hashlib.sha256(m.group("body")).digest()).decode()
        hashes.append(f"'sha256-{digest}'")
    return sorted(set(hashes))


def content_security_policy(script_hashes=()) -> str:
    """A policy Dash and plotly.js run under (no inline script except the hashed ones).

    - styles: Dash components and plotly.js set inline styles, hence 'unsafe-inline' for styles
      only;
    - images: plotly's image export and dcc.Download use data: and blob: URLs;
    - no 'unsafe-eval': checked in Chromium on every page, scattergl (WebGL) included
      (tests/test_hosting.py::test_every_page_runs_under_the_csp).
    """
    script = " ".join(["'self'", *script_hashes])
    return "; ".join([
        "default-src 'self'",
        f"script-src {script}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def security_headers(*, script_hashes=(), no_store=False, hsts=False) -> dict[str, str]:
    headers = {
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": content_security_policy(script_hashes),
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if no_store:
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    if hsts:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers
