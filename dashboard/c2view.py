"""The explorer's one C2-map view: the map as a beamline viewer draws it, next to its g2 and fit.

Every page that shows a single C2 map (a clicked UMAP point, a sector cell, a timeline
thumbnail, a similarity target, a model-page reconstruction) calls :func:`c2_view`. It reads
only precomputed arrays through the catalog (:class:`dashboard.catalog.DatasetEntry`): the map
itself (``entry.read_map``), ``/results/dynamics/*`` (per-map g2 row, fitted parameters) and
the dataset attr ``c2_time_step_s``; nothing is fitted at request time. Figures come from
:mod:`dashboard.figures.dynamics`.

Controls of a view (pattern-matching ids, one callback for every page, registered once by
:func:`register_callbacks`): ``{"type": "c2view-diag", "key": KEY}`` (correct the diagonal)
and ``{"type": "c2view-limits", "key": KEY}`` (percentile colour limits); they redraw
``{"type": "c2view-body", "key": KEY}`` from the state in ``{"type": "c2view-state", "key": KEY}``.
``KEY`` is the page's name for the view ("latent", "sectors", ...); the fitted numbers are in a
table with id ``<KEY>-c2view-fit``.

Helpers for pages and exports: :func:`fit_columns` (per-map fitted parameters as CSV columns),
:func:`rate_unit`, :func:`map_fit`, :func:`order_note`.
"""
from __future__ import annotations

import logging

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import MATCH, Input, Output, State, dcc, html

from .figures import dynamics as dynamics_figures
from .view_state import index_or_none

log = logging.getLogger(__name__)

FAILED = dynamics_figures.STATUS_NAMES.index("failed")
FIT_KEYS = ("relaxation_rate", "rate_stderr", "stretching", "stretching_stderr", "contrast", "contrast_stderr",
            "baseline", "baseline_stderr", "fit_r2", "fit_status")
DEFAULT_LIMITS = "1-99"
GRAPH_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
_REGISTERED = "_ainerd_c2view_registered"


# --------------------------------------------------------------------------- data access
def time_step(entry) -> float | None:
    """Seconds per C2 pixel (dataset attr ``c2_time_step_s``), None when unknown."""
    v = entry.attrs.get("c2_time_step_s")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def has_dynamics(entry) -> bool:
    return entry is not None and entry.has_result("dynamics/relaxation_rate")


def _units(entry) -> dict:
    """The units precompute recorded ({name: unit}, attr ``dynamics_units_json``), {} if none."""
    import json

    try:
        units = json.loads(entry.result_attrs.get("dynamics_units_json") or "{}")
    except (TypeError, ValueError):
        return {}
    return units if isinstance(units, dict) else {}


def rate_unit(entry) -> str:
    """'1/s' or '1/pixel': a unit recorded in the ``/results`` attrs, else from the time step
    (the contract: rates are per second exactly when ``c2_time_step_s`` is known)."""
    if isinstance(_units(entry).get("relaxation_rate"), str):
        return _units(entry)["relaxation_rate"]
    ra = entry.result_attrs
    for key in ("dynamics_rate_unit", "relaxation_rate_unit", "dynamics/relaxation_rate_unit", "rate_unit"):
        if isinstance(ra.get(key), str) and ra[key].strip():
            return ra[key].strip()
    return "1/s" if time_step(entry) is not None else "1/pixel"


def lag_unit(entry) -> str:
    """'s' or 'pixel' (unit of ``dynamics/g2_lag``)."""
    if isinstance(_units(entry).get("g2_lag"), str):
        return _units(entry)["g2_lag"]
    ra = entry.result_attrs
    for key in ("dynamics_lag_unit", "g2_lag_unit", "dynamics/g2_lag_unit"):
        if isinstance(ra.get(key), str) and ra[key].strip():
            return ra[key].strip()
    return "s" if rate_unit(entry) == "1/s" else "pixel"


def map_fit(entry, index: int) -> dict | None:
    """The fitted parameters of map ``index`` (keys :data:`FIT_KEYS`), None without dynamics."""
    if not has_dynamics(entry):
        return None
    out = {}
    for key in FIT_KEYS:
        arr = entry.result(f"dynamics/{key}")
        if arr is not None and 0 <= int(index) < len(arr):
            out[key] = arr[int(index)].item() if hasattr(arr[int(index)], "item") else arr[int(index)]
    return out


def fitted_log_rate(entry) -> np.ndarray | None:
    """log10 of the fitted rate per map, NaN where the fit failed (status 3) or gave no rate.

    Maps whose decay is outside the window (status 1 or 2) keep their bounded rate: they are the
    slowest and fastest maps, and precompute orders clusters with them too."""
    if not has_dynamics(entry):
        return None

    def load():
        rate = np.asarray(entry.result("dynamics/relaxation_rate"), dtype=np.float64)
        status = entry.result("dynamics/fit_status")
        ok = np.isfinite(rate) & (rate > 0)
        if status is not None:
            ok &= np.asarray(status) != FAILED
        out = np.full(rate.shape, np.nan)
        out[ok] = np.log10(rate[ok])
        return out
    return entry.cached("c2view/log_rate", load)


def fit_columns(entry) -> dict[str, np.ndarray]:
    """Per-map fitted parameters as CSV columns ({} without dynamics): the rate and its stderr
    named with their unit, stretching, contrast, baseline with stderrs, R², status as text."""
    if not has_dynamics(entry):
        return {}
    unit = rate_unit(entry).replace("1/", "per_")
    cols = {}
    for key in FIT_KEYS:
        arr = entry.result(f"dynamics/{key}")
        if arr is None:
            continue
        if key == "fit_status":
            cols["fit_status"] = np.array([dynamics_figures.status_name(c) for c in np.asarray(arr)], dtype=object)
        elif key in ("relaxation_rate", "rate_stderr"):
            cols[f"{key}_{unit}"] = np.asarray(arr, dtype=np.float64)
        else:
            cols[key] = np.asarray(arr, dtype=np.float64)
    filled = entry.result("dynamics/score_filled")
    if filled is not None:
        cols["score_filled_by_regression"] = np.asarray(filled).astype(int)
    return cols


def rate_table(entry) -> dict | None:
    """Fitted rate per time point (:func:`dashboard.figures.dynamics.rate_per_time`) for the
    flow and vorticity sectors and all maps, cached per entry; None without dynamics or times."""
    times = entry.result("tables/times")
    ti = entry.result("tables/time_index")
    if not has_dynamics(entry) or times is None or ti is None:
        return None

    def load():
        rate = entry.result("dynamics/relaxation_rate")
        status = entry.result("dynamics/fit_status")
        status = np.zeros(len(rate), np.int8) if status is None else status
        return dynamics_figures.rate_per_time(ti, len(times), rate, status, entry.sector_class(), groups=("flow", "vorticity", "all"))
    return entry.cached("c2view/rate_table", load)


def order_note(entry, id_prefix: str):
    """A line stating the cluster-ordering rule and its Spearman with the fitted rate (a warning
    when the order is unknown)."""
    text, unknown = dynamics_figures.order_text(entry.result_attrs)
    return dbc.Alert(text, color="warning" if unknown else "light", id=f"{id_prefix}-order-note",
                     className="small py-1 px-2 mb-2 order-note")


def _recon_g2(recon: np.ndarray, lag, unit: str, step: float | None):
    """The diagonal mean of a reconstruction at the stored lags (not fitted)."""
    n = recon.shape[0]
    lag = np.asarray(lag, dtype=np.float64)
    px = np.rint(lag / step).astype(int) if unit == "s" and step else np.rint(lag).astype(int)
    out = np.full(lag.shape, np.nan)
    for j, d in enumerate(px):
        if 0 <= d < n:
            out[j] = float(np.diagonal(recon, offset=int(d)).mean())
    return out


# --------------------------------------------------------------------------- the view
def _state(entry, index: int, source: str, stack_row: int | None, title: str | None) -> dict:
    return {"dataset": entry.id, "version": entry.version, "index": int(index), "source": source,
            "row": None if stack_row is None else int(stack_row), "title": None if title is None else str(title)[:200]}


def _fit_table(key: str, fit: dict | None, unit: str):
    rows = dynamics_figures.fit_rows(fit, unit) if fit else [("fit", "no dynamics were precomputed for this dataset")]
    return dbc.Table([html.Tbody([html.Tr([html.Th(k, className="fw-normal text-muted"), html.Td(v)])
                                  for k, v in rows])], size="sm", className="c2view-fit mb-0 small",
                     id=f"{key}-c2view-fit")


def _graph(figure, name: str, key: str):
    config = dict(GRAPH_CONFIG, toImageButtonOptions=dict(GRAPH_CONFIG["toImageButtonOptions"], filename=f"{key}-{name}"))
    return dcc.Graph(figure=figure, config=config, className=f"c2view-{name}", id=f"{key}-c2view-{name}",
                     style={"minWidth": "320px", "flex": "1 1 340px"})


def _body(entry, state: dict, diagonal_fix: bool, limits: str):
    key = state.get("key") or "view"
    index, source, row = int(state["index"]), state.get("source", "map"), state.get("row")
    step = time_step(entry)
    items, notes = [], []
    recon = None
    if source in ("map", "map+recon", "stack"):
        if entry.has_maps:
            c2 = entry.read_map(index)
            items.append(_graph(dynamics_figures.c2_map_figure(c2, time_step_s=step, limits=limits, diagonal_fix=diagonal_fix,
                                                title=state.get("title") or f"C2 of map {index}"), "map", key))
        else:
            notes.append("This dataset holds latents only: no measured C2 map to draw.")
    if source in ("map+recon", "recon"):
        recon, note = entry.reconstruction(index)
        if recon is None:
            notes.append(f"No reconstruction: {note}.")
        else:
            items.append(_graph(dynamics_figures.c2_map_figure(recon, time_step_s=step, limits=limits, diagonal_fix=diagonal_fix,
                                                title=f"reconstruction ({note})"), "recon", key))
    if source == "stack":  # a stored reconstruction of the model page: model/recon_output[row]
        stack = entry.result("model/recon_output")
        if stack is not None and row is not None and 0 <= int(row) < len(stack):
            recon = np.asarray(stack[int(row)])
            items.append(_graph(dynamics_figures.c2_map_figure(recon, time_step_s=step, limits=limits, diagonal_fix=diagonal_fix,
                                                title=f"reconstruction of map {index} (stored by precompute)"),
                                "recon", key))
    fit = map_fit(entry, index)
    unit = rate_unit(entry)
    if has_dynamics(entry) and entry.has_result("dynamics/g2") and entry.has_result("dynamics/g2_lag"):
        lag = entry.result("dynamics/g2_lag")
        g2 = entry.result_row("dynamics/g2", index)
        aged = entry.result_row("dynamics/aged_g2", index) if entry.has_result("dynamics/aged_g2") else None
        ages, aged_lag = entry.result("dynamics/aged_g2_age"), entry.result("dynamics/aged_g2_lag")
        max_lag = entry.result_attrs.get("dynamics_fit_max_lag")
        try:
            max_lag = float(max_lag) if max_lag is not None else None
        except (TypeError, ValueError):
            max_lag = None
        src = str(entry.result_attrs.get("dynamics_source") or "")
        what = "decoded map (a reconstruction)" if "reconstruction" in src or "decoded" in src else f"map {index}"
        recon_curve = _recon_g2(recon, lag, lag_unit(entry), step) if recon is not None else None
        g2fig = dynamics_figures.g2_figure(lag, g2, fit, lag_unit=lag_unit(entry), rate_unit=unit, recon_g2=recon_curve,
                            aged=aged, ages=ages, aged_lag=aged_lag, fit_max_lag=max_lag, title=f"g2 of the {what}, fitted at precompute")
    else:
        g2fig = dynamics_figures.no_g2_figure("No g2 stored for this dataset:<br>run precompute with dynamics.")
    items.append(_graph(g2fig, "g2", key))
    parts = [html.Div(items, className="d-flex flex-wrap align-items-start c2view-figures")]
    parts += [html.Div(n, className="small text-muted c2view-note") for n in notes]
    parts.append(_fit_table(key, fit, unit))
    return parts


def c2_view(entry, index: int, *, key: str, source: str = "map", stack_row: int | None = None,
            title: str | None = None, diagonal_fix: bool = True, limits: str = DEFAULT_LIMITS):
    """The view of one map for a page.

    Parameters
    ----------
    entry : DatasetEntry
    index : int
        Map index (row of ``/meta`` and of ``/results/dynamics/*``).
    key : str
        The page's name for this view (unique per page: ids derive from it).
    source : {"map", "map+recon", "recon", "stack"}
        What to draw: the stored map; the map and its reconstruction decoded from its latent;
        the reconstruction only; the map and row ``stack_row`` of ``model/recon_output``.
    title : str, optional
        Title of the map figure.
    """
    if source not in ("map", "map+recon", "recon", "stack"):
        raise ValueError(f"source must be map, map+recon, recon or stack, not {source!r}")
    if source == "map" and not entry.has_maps and "decoded" in str(entry.result_attrs.get("dynamics_source") or ""):
        source = "recon"  # latents only, measured on the decoded maps: draw the map that was measured
    state = _state(entry, index, source, stack_row, title)
    state["key"] = key
    body = _body(entry, state, diagonal_fix, limits)
    controls = html.Div([
        dbc.Checklist(id={"type": "c2view-diag", "key": key}, switch=True, className="me-3 small",
                      options=[{"label": "correct the diagonal (mean of the neighbouring off-diagonals)", "value": "on"}],
                      value=["on"] if diagonal_fix else []),
        html.Span("colour limits", className="small me-2"),
        dbc.RadioItems(id={"type": "c2view-limits", "key": key}, inline=True, className="small",
                       options=[{"label": v, "value": k} for k, v in dynamics_figures.COLOR_LIMIT_LABELS.items()], value=limits),
    ], className="d-flex flex-wrap align-items-center mb-1 c2view-controls")
    return html.Div([controls, html.Div(body, id={"type": "c2view-body", "key": key}),
                     dcc.Store(id={"type": "c2view-state", "key": key}, data=state)],
                    className="c2view", id=f"{key}-c2view")


def register_callbacks(app, catalog) -> None:
    """Register the views' redraw callback on ``app`` (once, whichever page asks first)."""
    if getattr(app, _REGISTERED, False):
        return
    setattr(app, _REGISTERED, True)

    @app.callback(Output({"type": "c2view-body", "key": MATCH}, "children"),
                  Input({"type": "c2view-diag", "key": MATCH}, "value"),
                  Input({"type": "c2view-limits", "key": MATCH}, "value"),
                  State({"type": "c2view-state", "key": MATCH}, "data"), prevent_initial_call=True)
    def redraw(diag, limits, state):
        if not isinstance(state, dict):
            return dash.no_update
        entry = catalog.get(state.get("dataset"))
        if entry is None or entry.version != state.get("version"):
            return dash.no_update
        index = index_or_none(state.get("index"), entry.n_maps)
        if index is None:
            return dash.no_update
        limits = limits if isinstance(limits, str) and limits in dynamics_figures.COLOR_LIMITS else DEFAULT_LIMITS
        source = state.get("source") if state.get("source") in ("map", "map+recon", "recon", "stack") else "map"
        row = state.get("row")
        if row is not None and not isinstance(row, int):
            return dash.no_update  # the store is client state: only what c2_view wrote is drawn
        title = state.get("title")
        state = dict(state, title=str(title)[:200] if title is not None else None)
        return _body(entry, dict(state, source=source), bool(diag), limits)
