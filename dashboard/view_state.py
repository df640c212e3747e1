"""A view's state in the URL query string: one parser, one serialiser, one writer.

Every explorer page keeps what is on screen in the address bar, so the address is always a
shareable link and the browser's back / forward buttons walk through states. The query
parameters (all optional; a bad value is dropped, and the page falls back to its default, never
a server error):

=========  ==============================================  ==================================
param      meaning                                         syntax (validated here)
=========  ==============================================  ==================================
dataset    dataset id (file name without .h5)              ``[A-Za-z0-9._-]{1,128}``
k          clustering: an int k (2..64) or a session       ``5`` or ``hdbscan-3f2a9c``
           re-clustering result id
color      latent map colouring                            a word ``[a-z_]{1,24}``
times      highlighted time points (time indices)          ``0,4,7`` (at most 8); ``none``
time       the selected time point (timeline)              int >= 0
map        the selected map (map index)                    int >= 0
sel        a selection of maps (lasso)                     ranges ``3-5,17,20-40``
target     similarity target (map index)                   int >= 0
upload     similarity target uploaded (saved on the server ``up-`` + 16 hex digits
           by :mod:`dashboard.uploads`)
panels     optional panels shown                           words ``rate,viscosity``
bg         flow/vorticity share background on (1) / off   ``0`` or ``1``
compare    datasets compared                               ids, comma-separated (at most 6)
view       which view's help (the help page)               a word
=========  ==============================================  ==================================

Range checks that need the dataset (a map index below N, a time index below T, a k that has
labels) are the page's: :func:`index_or_none` and :func:`indices_below` help.

How the writing works: a page registers :func:`register_writer` with the inputs that hold its
state; on every change the callback writes the new query to ``url.search`` (``dcc.Location``
with ``refresh=False`` pushes a history entry) and records it in the store :data:`WRITTEN`, so
the router (:mod:`dashboard.explorer`) knows the page already shows that state and does not
rebuild it. Back / forward change ``url.search`` to a query the page did not write: the router
rebuilds the page from it, exactly as a reload would.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qs, urlencode

#: id of the dcc.Store holding ``{"path": ..., "search": ...}`` the last state a page wrote
WRITTEN = "url-written"

#: parameters in the order they are written
ORDER = ("dataset", "k", "color", "times", "time", "map", "sel", "target", "upload", "panels", "bg", "compare",
         "view")
#: what the navbar links carry from page to page (page-specific selections are dropped; the
#: compared datasets stay, so leaving /compare and coming back keeps its list)
SHARED = ("dataset", "k", "color", "times", "panels", "bg", "compare")

MAX_K = 64
MAX_TIMES = 8
MAX_COMPARE = 6
#: longer selections are not put in the URL (a link must stay a link)
MAX_SEL_CHARS = 1500

_DATASET = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_RESULT_ID = re.compile(r"^[a-z]{2,16}-[0-9a-f]{6,16}$")
_WORD = re.compile(r"^[a-z_]{1,24}$")


# --------------------------------------------------------------------------- value codecs
def _int(text: str, lo: int = 0, hi: int = 10 ** 9) -> int | None:
    text = text.strip()
    if not re.fullmatch(r"\d{1,10}", text):
        return None
    v = int(text)
    return v if lo <= v <= hi else None


def _int_list(text: str, limit: int) -> list[int] | None:
    if text.strip() == "none":  # explicitly nothing (unlike an absent key: the page's default)
        return []
    parts = [p for p in text.split(",") if p.strip()]
    if not parts or len(parts) > limit:
        return None
    out = []
    for p in parts:
        v = _int(p)
        if v is None:
            return None
        if v not in out:
            out.append(v)
    return out


def encode_ranges(indices: Iterable[int]) -> str:
    """Sorted unique ints as ranges: ``[3, 4, 5, 17]`` -> ``"3-5,17"``."""
    vals = sorted({int(i) for i in indices})
    parts, i = [], 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(parts)


def decode_ranges(text: str, limit: int = 100_000) -> list[int] | None:
    """``"3-5,17"`` -> ``[3, 4, 5, 17]``; None if malformed or longer than ``limit``."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d{1,9})(?:-(\d{1,9}))?", part)
        if not m:
            return None
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a or len(out) + (b - a + 1) > limit:
            return None
        out.update(range(a, b + 1))
    return sorted(out) if out else None


def _k(text: str):
    v = _int(text, 2, MAX_K)
    if v is not None:
        return v
    return text if _RESULT_ID.match(text) else None


def _words(text: str, limit: int = 8) -> list[str] | None:
    words = [w for w in text.split(",") if w]
    if not words or len(words) > limit or not all(_WORD.match(w) for w in words):
        return None
    return list(dict.fromkeys(words))


def _datasets(text: str) -> list[str] | None:
    ids = [w for w in text.split(",") if w]
    if not ids or len(ids) > MAX_COMPARE or not all(_DATASET.match(w) for w in ids):
        return None
    return list(dict.fromkeys(ids))


_PARSERS: dict[str, Callable[[str], Any]] = {
    "dataset": lambda t: t if _DATASET.match(t) else None,
    "k": _k,
    "color": lambda t: t if _WORD.match(t) else None,
    "times": lambda t: _int_list(t, MAX_TIMES),
    "time": _int,
    "map": _int,
    "sel": decode_ranges,
    "target": _int,
    "upload": lambda t: t if re.fullmatch(r"up-[0-9a-f]{16}", t.strip()) else None,
    "panels": _words,
    "bg": lambda t: {"0": False, "1": True}.get(t.strip()),
    "compare": _datasets,
    "view": lambda t: t if _WORD.match(t) else None,
}


def _encode(key: str, value) -> str | None:
    if value is None:
        return None
    if key == "sel":
        text = encode_ranges(value)
        return text if text and len(text) <= MAX_SEL_CHARS else None
    if key == "bg":
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        if not value:
            return "none" if key == "times" else None
        return ",".join(str(v) for v in value)
    text = str(value)
    return text or None


# --------------------------------------------------------------------------- parse / serialise
def parse(search: str | None) -> dict[str, Any]:
    """A query string (``"?dataset=demo&k=3"``) -> validated typed values.

    Unknown keys and malformed values are dropped (the page then uses its default).
    ``{"dataset": "demo", "k": 3, "times": [0, 4], "sel": [3, 4, 5], "bg": True, ...}``.
    """
    raw = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    out: dict[str, Any] = {}
    for key, values in raw.items():
        parser = _PARSERS.get(key)
        if parser is None or not values:
            continue
        try:
            value = parser(values[0][:20000])
        except (ValueError, TypeError):
            value = None
        if value is not None:
            out[key] = value
    return out


def serialise(state: Mapping[str, Any]) -> str:
    """Typed values -> ``"?dataset=demo&k=3&times=0,4"`` (fixed order; None/empty left out;
    ``""`` when nothing is set). Commas are kept readable."""
    pairs = []
    for key in ORDER:
        text = _encode(key, state.get(key))
        if text is not None:
            pairs.append((key, text))
    return ("?" + urlencode(pairs, safe=",")) if pairs else ""


def canonical(search: str | None) -> str:
    """The serialised form of a query (what the router and the writers compare)."""
    return serialise(parse(search))


def update(search: str | None, **changes) -> str:
    """The query ``search`` with ``changes`` applied (a value of None removes the key)."""
    state = parse(search)
    for key, value in changes.items():
        if key not in _PARSERS:
            raise KeyError(f"unknown view-state parameter {key!r}")
        if value is None or (value == [] and key != "times") or value == "":
            state.pop(key, None)
        else:
            state[key] = value
    return serialise(state)


def shared(search: str | None, dataset_id: str | None) -> dict[str, Any]:
    """The cross-page part of a state (what navbar links keep), with ``dataset_id``."""
    state = {k: v for k, v in parse(search).items() if k in SHARED}
    if dataset_id:
        state["dataset"] = dataset_id
    else:
        state.pop("dataset", None)
    return state


def href(path: str, state: Mapping[str, Any]) -> str:
    return path + serialise(state)


# --------------------------------------------------------------------------- range checks
def index_or_none(value, n: int) -> int | None:
    """``value`` as an int in ``[0, n)``, else None."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        return None
    return v if 0 <= v < int(n) else None


def indices_below(values, n: int, limit: int | None = None) -> list[int]:
    """The entries of ``values`` that are ints in ``[0, n)`` (order kept, at most ``limit``)."""
    out = []
    for v in values or []:
        i = index_or_none(v, n)
        if i is not None and i not in out:
            out.append(i)
    return out[:limit] if limit is not None else out


# --------------------------------------------------------------------------- the writer
#: Stores that hold an index use -1 for "none", never None: a dcc.Store created with data=None
#: sets its data to null when it mounts, which Dash reports as a change of its inputs.
NONE_INDEX = -1


def url_store(path: str):
    """The page-local store a page's writer fills with its new query; put it in the page's
    layout (``view_state.url_store(PATH)``). Being inside the page, its writer does not fire when
    the page is built (Dash fires a callback on mount when its output lies outside the new
    layout), so rebuilding a page from the URL never writes a new history entry."""
    from dash import dcc

    return dcc.Store(id={"type": "view-url", "page": path}, data="")


def register_forwarder(app) -> None:
    """Once per app: copy the current page's new query (its :func:`url_store`) to
    ``url.search`` and record it in :data:`WRITTEN` (so the router does not rebuild the page)."""
    import dash
    from dash import ALL, Input, Output, State

    @app.callback(Output("url", "search", allow_duplicate=True), Output(WRITTEN, "data", allow_duplicate=True),
                  Input({"type": "view-url", "page": ALL}, "data"), State("url", "pathname"), State("url", "search"),
                  prevent_initial_call=True)
    def _forward(values, pathname, search):
        ids = [i["id"]["page"] for i in dash.callback_context.inputs_list[0]] if dash.callback_context.inputs_list else []
        for page, value in zip(ids, values or []):
            if page == (pathname or "/") and isinstance(value, str) and value and value != (search or ""):
                return value, {"path": page, "search": value}
        return dash.no_update, dash.no_update


def register_writer(app, path: str, params: Mapping[str, Any], *, convert: Mapping[str, Callable] | None = None):
    """Write a page's state to the URL whenever one of its inputs changes.

    Parameters
    ----------
    app : dash.Dash
    path : str
        The page's PATH; its layout must hold :func:`url_store` ``(path)``.
    params : {param: dash.Input}
        Which component property holds each URL parameter (e.g. ``{"k": Input("timeline-k",
        "value")}``).
    convert : {param: callable}, optional
        Turns a property value into the parameter's value (default: as is; None removes it).
    """
    import dash
    from dash import Output, State

    from .pages import DATASET_STORE

    keys = list(params)
    convert = dict(convert or {})

    @app.callback(Output({"type": "view-url", "page": path}, "data"),
                  *[params[k] for k in keys], State("url", "pathname"), State("url", "search"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def _write(*values):
        *vals, pathname, search, dataset_id = values
        if (pathname or "/") != path or not dataset_id:
            return dash.no_update
        changes = {}
        for key, value in zip(keys, vals):
            try:
                changes[key] = convert[key](value) if key in convert else value
            except (TypeError, ValueError):
                changes[key] = None
        new = update(search, dataset=dataset_id, **changes)
        if new == (search or ""):
            return dash.no_update
        return new

    return _write
