"""Client input never gives a 500: request validation before Dash's dispatcher, one error handler,
and a safe reader of uploaded ``.npy`` files.

- :func:`check_update_body` checks a ``<prefix>_dash-update-component`` body before Dash sees it:
  a JSON object whose ``output`` is a callback of that app, ``inputs``/``state`` lists of the
  callback's length whose items are ``{"id", "property"[, "value"]}`` (or lists of them for
  pattern-matching ids), ``outputs`` an object or a list, ``changedPropIds`` a list of strings.
  A failure is answered 400 with ``{"error": "<one line>"}``.
- :func:`install` registers that check (after the access gate, so unauthorised clients learn
  nothing about callbacks) and one error handler for every exception:

  - ``HTTPException`` 4xx: the status with a one-line reason (JSON, or a small page for a
    browser navigation);
  - Dash's ``DependencyException`` (``_dash-component-suites`` path of no registered library
    file) and missing package files: 404;
  - an exception raised by a callback on ``_dash-update-component`` of the kind bad values
    cause (TypeError, ValueError, KeyError, IndexError, AttributeError, LookupError, our
    ``AinerdError``): 400 "callback <output> cannot use the values sent (<type>)", the traceback
    logged;
  - anything else: 500 with one line (and the traceback in the log): a server bug, not the
    client's fault.
- :func:`load_npy_bytes` reads an uploaded ``.npy`` without trusting its header: empty files,
  a header that claims more elements than the file holds (e.g. 10^12), object arrays, and
  non-numeric types are refused with one line naming the file, before any memory is allocated.
"""
from __future__ import annotations

import base64
import binascii
import html
import io
import logging
import re

import flask
import numpy as np
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

UPDATE_SUFFIX = "_dash-update-component"
_CLIENT_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, LookupError, OverflowError,
                  ZeroDivisionError)
_REASONS = {400: "Bad request", 401: "Log in first", 403: "Forbidden", 404: "Not found",
            405: "Method not allowed", 413: "Request too large", 415: "Unsupported media type",
            429: "Too many requests"}


class BadRequest(ValueError):
    """A malformed request; the message is the one line the client gets."""


# ---------------------------------------------------------------------- Dash update bodies
def _check_item(item, where: str) -> None:
    if isinstance(item, list):  # pattern-matching (ALL / ALLSMALLER) inputs: a list of items
        if len(item) > 10000:
            raise BadRequest(f"{where}: too many items")
        for sub in item:
            if not isinstance(sub, dict):
                raise BadRequest(f"{where}: each pattern-matching item must be an object with id and property")
            _check_item(sub, where)
        return
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: each item must be an object with id and property")
    cid, prop = item.get("id"), item.get("property")
    if not isinstance(cid, (str, dict)) or not cid:
        raise BadRequest(f"{where}: an item has no valid id")
    if not isinstance(prop, str) or not prop:
        raise BadRequest(f"{where}: an item has no valid property")


def check_update_body(body, dash_app) -> None:
    """Raise :class:`BadRequest` unless ``body`` is a well-formed update request of ``dash_app``."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    output = body.get("output")
    if not isinstance(output, str) or not output:
        raise BadRequest("'output' must be the output string of a callback")
    cb = dash_app.callback_map.get(output)
    if cb is None:
        raise BadRequest(f"no callback has the output {output[:80]!r}")
    if "callback" not in cb:
        raise BadRequest(f"the callback of {output[:80]!r} runs in the browser, not on the server")
    for key in ("inputs", "state"):
        value = body.get(key, [] if key == "state" else None)
        if not isinstance(value, list):
            raise BadRequest(f"'{key}' must be a list")
        expected = len(cb.get(key) or [])
        if len(value) != expected:
            raise BadRequest(f"'{key}' has {len(value)} items; this callback takes {expected}")
        for item in value:
            _check_item(item, key)
    outputs = body.get("outputs")
    if outputs is not None and not isinstance(outputs, (dict, list)):
        raise BadRequest("'outputs' must be an object or a list")
    if isinstance(outputs, list):
        for item in outputs:
            _check_item(item, "outputs")
    elif isinstance(outputs, dict):
        _check_item(outputs, "outputs")
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise BadRequest("'changedPropIds' must be a list of strings")


# ---------------------------------------------------------------------- responses
def _wants_html() -> bool:
    req = flask.request
    return (req.method in ("GET", "HEAD") and "/_" not in req.path
            and req.accept_mimetypes.best_match(["text/html", "application/json"]) == "text/html")


def one_line(status: int, message: str):
    """A response with one line of reason: JSON ``{"error": ...}``, or a small page for a browser."""
    message = " ".join(str(message).split())[:300] or _REASONS.get(status, "Error")
    if _wants_html():
        from .auth import _page

        return _page(_REASONS.get(status, "Error"), f"<p class='error'>{html.escape(message)}</p>", status=status)
    response = flask.jsonify(error=message)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def install(server: flask.Flask, apps: dict) -> None:
    """Validate update bodies of the Dash ``apps`` ({url prefix: Dash app}) and answer every error
    with one line (see module doc). Call after the access gate is installed."""
    prefixes = sorted(apps, key=len, reverse=True)

    def _app_for(path: str):
        for prefix in prefixes:
            if path == prefix + UPDATE_SUFFIX:
                return apps[prefix]
        return None

    def validate():
        req = flask.request
        if req.method != "POST" or not req.path.endswith(UPDATE_SUFFIX):
            return None
        dash_app = _app_for(req.path)
        if dash_app is None:
            return None
        if not req.is_json:
            return one_line(415 if req.content_type else 400, "send the callback request as application/json")
        body = req.get_json(silent=True)
        if body is None:
            return one_line(400, "the body is not valid JSON")
        try:
            check_update_body(body, dash_app)
        except BadRequest as exc:
            return one_line(400, str(exc))
        return None

    server.before_request(validate)

    def handle(exc: Exception):
        from dash.exceptions import DependencyException

        from ainerd_core.errors import AinerdError

        if isinstance(exc, HTTPException):
            if exc.code is not None and 400 <= exc.code < 500:
                desc = exc.description or ""
                if exc.code == 400 and "JSON" in desc:
                    desc = "the body is not valid JSON"
                elif exc.code == 404:
                    desc = "no such page or file"
                elif exc.code == 405:
                    desc = f"{flask.request.method} is not allowed here"
                response = one_line(exc.code, desc)
                if exc.code == 405 and getattr(exc, "valid_methods", None):
                    response.headers["Allow"] = ", ".join(exc.valid_methods)
                return response
            return exc
        path = flask.request.path
        if isinstance(exc, DependencyException) or ("_dash-component-suites/" in path
                                                    and isinstance(exc, (OSError, KeyError, ValueError))):
            return one_line(404, "no such file in the component libraries")
        from dash.exceptions import CallbackException

        # CallbackException: Dash found the outputs or inputs sent not matching the callback
        if path.endswith(UPDATE_SUFFIX) and isinstance(exc, _CLIENT_ERRORS + (AinerdError, CallbackException)):
            body = flask.request.get_json(silent=True)
            output = body.get("output", "?") if isinstance(body, dict) else "?"
            log.warning("callback %s failed on the values sent: %s", str(output)[:200], _first_line(exc))
            log.debug("traceback of that callback", exc_info=exc)
            return one_line(400, f"callback {str(output)[:80]} cannot use the values sent ({_first_line(exc)})")
        log.error("unhandled error on %s %s", flask.request.method, path, exc_info=exc)
        return one_line(500, "internal error (logged on the server)")

    server.register_error_handler(Exception, handle)


# ---------------------------------------------------------------------- uploads
_DATA_URL = re.compile(r"^data:[^,]{0,200},")


def upload_limit_bytes(config) -> int:
    """Largest .npy file an upload may be: the request limit, less base64's 4/3 and room for the
    rest of the callback request (64 KiB)."""
    return max(0, (config.max_upload_bytes - 64 * 1024) * 3 // 4)


def upload_check_js(config) -> str:
    """Clientside check of an upload before it is sent: a name that is not .npy or a file over the
    limit gets a message (the server would refuse the request with 413, which the page cannot show)."""
    limit_chars = max(0, config.max_upload_bytes - 64 * 1024)
    limit_mib = upload_limit_bytes(config) / 2**20
    return ("function(contents, filename) {"
            " var nu = window.dash_clientside.no_update;"
            " if (!contents) { return [nu, '']; }"
            " var name = filename || 'upload';"
            " if (!/\\.npy$/i.test(name)) { return [null, name + ': not a .npy file; upload a NumPy .npy file holding one square 2-d map.']; }"
            f" if (contents.length > {limit_chars}) {{ return [null, name + ' is ' + (contents.length * 0.75 / 1048576).toFixed(1)"
            f" + ' MiB: uploads are limited to {limit_mib:.1f} MiB (AINERD_MAX_UPLOAD_MB on the server).']; }}"
            " return [contents, ''];"
            "}")


def decode_upload(contents, filename: str | None) -> bytes:
    """The bytes of a dcc.Upload ``contents`` data URL; one-line ValueError naming the file."""
    name = filename or "upload"
    if not isinstance(contents, str) or not _DATA_URL.match(contents):
        raise ValueError(f"{name}: the upload arrived empty or garbled; choose the file again")
    try:
        return base64.b64decode(contents.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: the upload is not valid base64 data; choose the file again") from None


def load_npy_bytes(raw: bytes, filename: str | None = None, *, max_elements: int = 64 * 1024 * 1024) -> np.ndarray:
    """A numeric array from the bytes of a ``.npy`` file, without trusting its header.

    Raises ValueError (one line naming the file) for: an empty file, a missing or broken header,
    object/structured/non-numeric types, a header claiming more than ``max_elements`` elements or
    more bytes than the file holds."""
    name = filename or "upload"
    if not raw:
        raise ValueError(f"{name}: the file is empty")
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf, max_header_size=10000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf, max_header_size=10000)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # noqa: BLE001 - any header failure is the file's
        raise ValueError(f"{name}: not a .npy file ({_first_line(exc)})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
        raise ValueError(f"{name}: holds {dtype} values; a map must be numbers (integer or float)")
    n = 1
    for s in shape:
        n *= int(s)
    if n > max_elements:
        raise ValueError(f"{name}: its header claims {n:,} elements (shape {tuple(shape)}); "
                         f"at most {max_elements:,} are accepted")
    have = len(raw) - buf.tell()
    need = n * dtype.itemsize
    if have < need:
        raise ValueError(f"{name}: its header claims shape {tuple(shape)} ({need:,} bytes) but the file holds "
                         f"{have:,} bytes of data")
    if n == 0:
        raise ValueError(f"{name}: the array is empty (shape {tuple(shape)})")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{name}: not a readable .npy file ({_first_line(exc)})") from None
