"""'/compare': two or more experiments encoded by the same model, side by side.

Only datasets whose latents come from the same model (the same ``model_sha256``) can be
compared: their latent vectors then live in one space. The view (URL ``?compare=a,b&k=5``):

- timelines stacked on a common time axis, one histogram row per dataset (with its stress
  curve where it has one), all in ONE clustering: every map is assigned to the nearest of the
  first dataset's k-means centroids (``kmeans/centroids_k{k}``, cluster 0 = slowest, as
  precomputed), so "cluster 2" means the same in every row;
- one shared latent map: a PCA plane fitted on all the datasets' latents together (cheap and
  deterministic; a joint UMAP would be heavy at request time), colour = cluster, symbol =
  dataset;
- search: click a map in the shared plane to list its nearest neighbours (Euclidean in the
  latent space) across all datasets (URL ``map`` = its position in the concatenation);
- the same search in smoothed pixels (:func:`ainerd_core.similarity.pixel_neighbours_across`,
  the baseline that beats the shipped latent on simulated data, docs/model.md 1b), on request:
  it streams every map of every dataset (~1 s per 1,000 maps), so it runs as a background job.
"""
from __future__ import annotations

import threading
import time

import dash
import dash_bootstrap_components as dbc
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, dash_table, dcc, html
from plotly.subplots import make_subplots

from ainerd_core import analysis
from ainerd_core.errors import InputError

from .. import view_state
from ..explorer import graph_card, help_link, message
from ..figures.common import TEMPLATE, cluster_color, event_list, scatter_trace

PATH = "/compare"
TITLE = "Compare"
ORDER = 70
REQUIRES: tuple[str, ...] = ()
SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross", "star")
N_NEIGHBOURS = 24
TABLE_COLUMNS = ("rank", "dataset", "map", "distance", "time_s", "sector", "cluster")
_CACHE: dict = {}
_LOCK = threading.Lock()


def model_of(entry) -> str | None:
    sha = entry.result_attrs.get("model_sha256") if entry is not None else None
    return sha if isinstance(sha, str) and sha else None


def candidates(catalog) -> list:
    """Precomputed datasets with latents and a recorded model."""
    return [e for e in catalog.entries() if e.error is None and e.has_results and e.has_result("latent")]


def joint(entries, k: int) -> dict:
    """Concatenated latents, dataset of each row, common labels and the shared PCA plane
    (cached per (ids, file versions, k); a few thousand x 64 floats: milliseconds)."""
    key = (tuple(e.id for e in entries), tuple(e.version for e in entries), int(k))
    with _LOCK:
        got = _CACHE.get(key)
    if got is not None:
        return got
    lat = [np.asarray(e.result("latent"), dtype=np.float64) for e in entries]
    x = np.concatenate(lat)
    which = np.concatenate([np.full(len(a), i, dtype=np.int32) for i, a in enumerate(lat)])
    local = np.concatenate([np.arange(len(a)) for a in lat])
    centroids = entries[0].result(f"kmeans/centroids_k{int(k)}")
    if centroids is not None and np.asarray(centroids).shape[1] == x.shape[1]:
        n_c = len(centroids)
        labels = analysis.nearest_centroid(x, centroids)
        rule = (f"every map assigned to the nearest of {entries[0].id}'s {n_c} k-means centroids "
                f"(its precomputed clustering at k = {n_c}, cluster 0 = slowest)")
    else:
        labels = analysis.kmeans_labels(x, int(k), seed=0, n_init=4)
        rule = f"k-means (k = {int(k)}, seed 0) on all the datasets' latents together; cluster order unknown"
    plane = analysis.pca_plane(x)
    got = {"x": x.astype(np.float32), "which": which, "local": local, "labels": labels,
           "plane": plane.astype(np.float32), "rule": rule, "k": int(labels.max()) + 1}
    with _LOCK:
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = got
    return got


def timelines_figure(entries, data) -> go.Figure:
    """One histogram row per dataset (maps per common cluster at each time), its stress curve
    as a line on a second y axis of the same row; one shared time axis."""
    n = len(entries)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[f"{e.id}: {e.attrs.get('title', '')}"[:90] for e in entries],
                        specs=[[{"secondary_y": True}] for _ in entries])
    k = data["k"]
    for r, e in enumerate(entries, start=1):
        rows = data["which"] == r - 1
        times, ti = np.unique(np.asarray(e.meta["time"], dtype=float), return_inverse=True)
        counts = np.zeros((len(times), k), np.int32)
        np.add.at(counts, (ti, data["labels"][rows]), 1)
        width = float(np.min(np.diff(times))) * 0.85 if len(times) > 1 else None
        for c in range(k):
            fig.add_trace(go.Bar(x=times, y=counts[:, c], name=f"cluster {c}", legendgroup=f"c{c}", showlegend=r == 1,
                                 marker=dict(color=cluster_color(c), line=dict(width=0)), width=width,
                                 meta={"dataset": e.id, "cluster": c},
                                 hovertemplate=f"{e.id}<br>t = %{{x:.0f}} s<br>cluster {c}: %{{y}} maps<extra></extra>"),
                          row=r, col=1)
        if e.has_rheology:
            rh = e.rheology
            st, sv = np.asarray(rh["time"], dtype=float), np.asarray(rh["shear_stress"], dtype=float)
            # after cessation only: the pre-shear stress is orders of magnitude larger
            inside = (st > max(float(times.min()), 0.0)) & (st <= times.max())
            fig.add_trace(go.Scatter(x=st[inside], y=sv[inside], mode="lines", name="shear stress",
                                     legendgroup="stress", showlegend=r == 1, line=dict(color="#222", width=1.2),
                                     meta={"dataset": e.id},
                                     hovertemplate=f"{e.id}<br>t = %{{x:.0f}} s<br>stress %{{y:.3g}} Pa<extra></extra>"),
                          row=r, col=1, secondary_y=True)
            fig.update_yaxes(title_text="stress (Pa)", row=r, col=1, secondary_y=True, showgrid=False)
        fig.update_yaxes(title_text="maps", row=r, col=1, secondary_y=False)
    fig.update_xaxes(title_text="time since shear cessation (s)", row=n, col=1)
    fig.update_layout(template=TEMPLATE, barmode="stack", bargap=0.1, height=120 + 230 * n,
                      legend=dict(orientation="h", x=0, y=1.0 + 30.0 / (120 + 230 * n), yanchor="bottom"),
                      margin=dict(l=70, r=70, t=80, b=50), uirevision="compare")
    return fig


def shared_map_figure(entries, data, selected: int | None = None, neighbours=None) -> go.Figure:
    xy = data["plane"]
    Sc = scatter_trace(len(xy))
    fig = go.Figure()
    for d, e in enumerate(entries):
        rows = np.flatnonzero(data["which"] == d)
        fig.add_trace(Sc(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=e.id, customdata=event_list(rows),
                         marker=dict(symbol=SYMBOLS[d % len(SYMBOLS)], size=7, opacity=0.8, line=dict(width=0),
                                     color=[cluster_color(c) for c in data["labels"][rows]]),
                         meta={"dataset": e.id},
                         hovertemplate=f"{e.id}: map %{{text}}<extra></extra>",
                         text=[str(int(i)) for i in data["local"][rows]]))
    if neighbours is not None and len(neighbours):
        nb = np.asarray(neighbours, dtype=int)
        fig.add_trace(Sc(x=xy[nb, 0], y=xy[nb, 1], mode="markers", name="neighbours", customdata=event_list(nb),
                         marker=dict(symbol="circle-open", size=13, color="#000", line=dict(width=1.5)),
                         hoverinfo="skip"))
    if selected is not None:
        fig.add_trace(Sc(x=[xy[selected, 0]], y=[xy[selected, 1]], mode="markers", name="chosen map",
                         customdata=[int(selected)],
                         marker=dict(symbol="star", size=18, color="#ff7f0e", line=dict(width=1, color="#000")),
                         hoverinfo="skip"))
    fig.update_layout(template=TEMPLATE, height=520, hovermode="closest", uirevision="compare-map",
                      legend=dict(orientation="h", x=0, y=1.01, yanchor="bottom", title=dict(text="symbol = dataset")),
                      margin=dict(l=50, r=20, t=60, b=50))
    fig.update_xaxes(title_text="PC 1 of the joint latents", showgrid=False)
    fig.update_yaxes(title_text="PC 2", showgrid=False)
    return fig


def neighbours_of(data, g: int, n: int = N_NEIGHBOURS):
    """(rows (n,), distances (n,)) of joint row ``g``'s nearest neighbours in the joint latents."""
    from ainerd_core.similarity import nearest_neighbours

    return nearest_neighbours({"latent": data["x"]}, int(g), "latent", n)


def smoothed_neighbours_of(entries, data, g: int, n: int = N_NEIGHBOURS, on_batch=None):
    """(joint rows (n,), distances (n,)) of joint row ``g``'s nearest neighbours in smoothed
    pixels among the maps of all ``entries`` (exact; every file streamed once)."""
    from contextlib import ExitStack

    from ainerd_core.dataset import open_dataset
    from ainerd_core.similarity import pixel_neighbours_across

    offsets = np.searchsorted(data["which"], np.arange(len(entries)))
    with ExitStack() as stack:
        datasets = [stack.enter_context(open_dataset(e.path)) for e in entries]
        which, index, dist = pixel_neighbours_across(
            datasets, (int(data["which"][g]), int(data["local"][g])), n, "smoothed", on_batch=on_batch)
    return offsets[which] + index, dist


def neighbour_rows(entries, data, order, dist) -> list[dict]:
    from ..explorer import format_value

    rows = []
    for r, (g, dv) in enumerate(zip(order, dist), start=1):
        e = entries[int(data["which"][g])]
        i = int(data["local"][g])
        rows.append({"rank": r, "dataset": e.id, "map": i, "distance": round(float(dv), 5),
                     "time_s": format_value(e.meta["time"][i]), "sector": format_value(e.meta["sector"][i], sector=True),
                     "cluster": int(data["labels"][g])})
    return rows


def _pick(catalog, state):
    """(entries, problem message or None) for the URL's compare list."""
    ids = state.get("compare") or []
    entries = [catalog.get(i) for i in ids]
    missing = [i for i, e in zip(ids, entries) if e is None or not e.has_results or not e.has_result("latent")]
    entries = [e for e in entries if e is not None and e.has_results and e.has_result("latent")]
    if missing:
        return entries, f"Not available for comparison (unknown, not precomputed or without latents): {', '.join(missing)}."
    if len(entries) < 2:
        return entries, "Choose two or more datasets encoded by the same model."
    models = {e.id: model_of(e) for e in entries}
    if None in models.values() or len(set(models.values())) > 1:
        lines = ", ".join(f"{i}: {m[:12] + '…' if m else 'model not recorded'}" for i, m in models.items())
        return entries, ("These datasets were not encoded by the same model, so their latents are not comparable "
                         f"({lines}).")
    return entries, None


def layout(ctx):
    catalog = ctx.services.catalog
    state = ctx.state
    options = []
    for e in candidates(catalog):
        m = model_of(e)
        options.append({"label": f"{e.id} — {e.attrs.get('title', '')} (model {m[:8] + '…' if m else 'unknown'})",
                        "value": e.id})
    chosen = [i for i in (state.get("compare") or []) if any(o["value"] == i for o in options)]
    k = state.get("k") if isinstance(state.get("k"), int) else 5
    head = [html.H4("Compare experiments", className="mb-1 fs-5"),
            html.P("Datasets encoded by the same model (same checksum) share one latent space: their timelines are "
                   "stacked on one time axis in one clustering, their maps drawn in one plane, and maps like a chosen "
                   "one are searched in all of them.", className="text-muted small mb-2"),
            dbc.Row([dbc.Col(dcc.Dropdown(id="compare-datasets", options=options, value=chosen, multi=True,
                                          placeholder="choose two or more datasets"), md=8),
                     dbc.Col(dcc.Dropdown(id="compare-k", options=[{"label": f"k = {v}", "value": v} for v in (3, 5, 8)],
                                          value=k if k in (3, 5, 8) else 5, clearable=False), md=2),
                     dbc.Col(help_link(PATH), md=2)], className="mb-2 g-2 align-items-center"),
            view_state.url_store(PATH), dcc.Store(id="compare-url", data=""),
            dcc.Store(id="compare-selected", data=-1)]
    entries, problem = _pick(catalog, {"compare": chosen})
    if problem:
        return html.Div(head + [message(problem, color="warning" if chosen else "secondary", id="compare-message")],
                        id="compare-page")
    data = joint(entries, k if k in (3, 5, 8) else 5)
    selected = view_state.index_or_none(state.get("map"), len(data["x"]))
    order, dist = neighbours_of(data, selected) if selected is not None else (None, None)
    table = _table("compare-table")
    table.data = neighbour_rows(entries, data, order, dist) if selected is not None else []
    head[-1] = dcc.Store(id="compare-selected", data=-1 if selected is None else selected)
    return html.Div(head + [
        html.Div(f"One clustering for all: {data['rule']}.", className="small text-muted mb-2", id="compare-rule"),
        graph_card("compare-timelines", timelines_figure(entries, data), csv=False,
                   title="Timelines on a common time axis (maps per cluster; stress on the right axis)"),
        dbc.Row([
            dbc.Col(graph_card("compare-map", shared_map_figure(entries, data, selected, order), csv=False,
                               title="One latent map for all (PCA of the joint latents); click a map to search"), lg=7),
            dbc.Col(dbc.Card([dbc.CardHeader("Maps like the chosen one, in every dataset", className="fw-semibold"),
                              dbc.CardBody([html.Div(_chosen_text(entries, data, selected), id="compare-chosen",
                                                     className="small mb-2"), table,
                                            _smoothed_section(entries, selected)])]), lg=5)]),
    ], id="compare-page")


def _table(table_id):
    return dash_table.DataTable(
        id=table_id, data=[], columns=[{"name": c, "id": c} for c in TABLE_COLUMNS],
        page_size=12, sort_action="native", style_cell={"fontSize": "0.8rem", "padding": "3px"},
        style_header={"fontWeight": "bold"})


def _smoothed_section(entries, selected):
    """The on-request search in smoothed pixels (needs C2 maps of one size in every dataset)."""
    n = sum(e.n_maps for e in entries)
    why = _smoothed_unavailable(entries) or ("" if selected is not None else "Choose a map first.")
    return html.Div([
        html.Div([html.B("Smoothed pixels. "),
                  "The same search on the maps themselves (Gaussian 2 px, min-max renormalised): on simulated "
                  "data this baseline finds same-physics maps more often than the shipped latent does."],
                 className="small mt-3 mb-1"),
        dbc.Button(f"Search smoothed pixels ({n} maps)", id="compare-smoothed-run", size="sm", color="secondary",
                   className="mb-2", disabled=bool(why)),
        dbc.Progress(id="compare-smoothed-progress", value=0, label="", className="mb-2", style={"height": "1rem"}),
        html.Div(why, id="compare-smoothed-status", className="small mb-1"),
        _table("compare-smoothed-table")])


def _smoothed_unavailable(entries) -> str:
    """Why the smoothed search cannot run on these datasets ('' when it can)."""
    without = [e.id for e in entries if not e.has_maps]
    return f"Not available: {', '.join(without)} hold(s) latents only, no C2 maps." if without else ""


def _chosen_map(entries, data, g) -> str:
    """'Chosen: demo map 7 (t = 2802 s)' for joint row ``g``."""
    e = entries[int(data["which"][g])]
    i = int(data["local"][g])
    return f"Chosen: {e.id} map {i} (t = {float(e.meta['time'][i]):.0f} s)"


def _chosen_text(entries, data, g):
    if g is None:
        return "Click a map in the plane to list its nearest neighbours (latent space, Euclidean) across datasets."
    return f"{_chosen_map(entries, data, g)}; {N_NEIGHBOURS} nearest maps of all datasets:"


def register_callbacks(app, services) -> None:
    catalog = services.catalog

    @app.callback(Output("compare-selected", "data"), Input("compare-map", "clickData"), prevent_initial_call=True)
    def choose(click):
        if not click or not click.get("points"):
            return dash.no_update
        cd = click["points"][0].get("customdata")
        cd = cd[0] if isinstance(cd, list) else cd
        try:
            return int(cd)
        except (TypeError, ValueError):
            return dash.no_update

    @app.callback(Output("compare-table", "data"), Output("compare-chosen", "children"),
                  Output("compare-map", "figure"), Input("compare-selected", "data"),
                  State("url", "search"), prevent_initial_call=True)
    def search(g, search):
        state = view_state.parse(search)
        entries, problem = _pick(catalog, state)
        if problem:
            return dash.no_update, dash.no_update, dash.no_update
        k = state.get("k") if state.get("k") in (3, 5, 8) else 5
        data = joint(entries, k)
        g = view_state.index_or_none(g, len(data["x"]))
        if g is None:
            return dash.no_update, dash.no_update, dash.no_update
        order, dist = neighbours_of(data, g)
        return (neighbour_rows(entries, data, order, dist), _chosen_text(entries, data, g),
                shared_map_figure(entries, data, g, order))

    @app.callback(Output("compare-smoothed-run", "disabled"), Output("compare-smoothed-table", "data"),
                  Output("compare-smoothed-status", "children"),
                  Output("compare-smoothed-progress", "value", allow_duplicate=True),
                  Input("compare-selected", "data"), State("url", "search"), prevent_initial_call=True)
    def smoothed_ready(g, search):
        """A new chosen map: the previous smoothed result no longer applies."""
        entries, problem = _pick(catalog, view_state.parse(search))
        why = problem or _smoothed_unavailable(entries) or ("" if isinstance(g, int) and g >= 0
                                                            else "Choose a map first.")
        return bool(why), [], why, 0

    config = services.config

    @services.register_background(
        Output("compare-smoothed-table", "data", allow_duplicate=True),
        Output("compare-smoothed-status", "children", allow_duplicate=True),
        Input("compare-smoothed-run", "n_clicks"), State("compare-selected", "data"), State("url", "search"),
        progress=[Output("compare-smoothed-progress", "value"), Output("compare-smoothed-progress", "label")],
        running=[(Output("compare-smoothed-run", "disabled"), True, False)],
        prevent_initial_call=True, interval=400)
    def search_smoothed(set_progress, n_clicks, g, search):
        from dashboard.catalog import Catalog

        state = view_state.parse(search)
        entries, problem = _pick(Catalog(config.data_dir), state)
        if problem or not n_clicks:
            return dash.no_update, problem or dash.no_update
        k = state.get("k") if state.get("k") in (3, 5, 8) else 5
        data = joint(entries, k)
        g = view_state.index_or_none(g, len(data["x"]))
        if g is None:
            return dash.no_update, "Choose a map first."
        t0 = time.perf_counter()
        try:
            order, dist = smoothed_neighbours_of(
                entries, data, g, on_batch=lambda done, n: set_progress((int(100 * done / n), f"{done}/{n} maps")))
        except InputError as exc:
            return [], f"Not searched: {exc}"
        set_progress((100, "done"))
        return (neighbour_rows(entries, data, order, dist),
                f"{_chosen_map(entries, data, g)}: {N_NEIGHBOURS} nearest in smoothed pixels, "
                f"{len(data['x'])} maps read in {time.perf_counter() - t0:.1f} s.")

    # the dataset list and k are the view: a change rebuilds the page from the URL (through a
    # store inside the page, so that building the page does not write a history entry)
    @app.callback(Output("compare-url", "data"), Input("compare-datasets", "value"),
                  Input("compare-k", "value"), State("url", "search"), prevent_initial_call=True)
    def choose_datasets(ids, k, search):
        new = view_state.update(search, compare=list(ids or [])[:view_state.MAX_COMPARE] or None, map=None,
                                k=k if k in (3, 5, 8) else None)
        return new if new != (search or "") else dash.no_update

    @app.callback(Output("url", "search", allow_duplicate=True), Input("compare-url", "data"),
                  State("url", "search"), prevent_initial_call=True)
    def go(new, search):
        return new if isinstance(new, str) and new and new != (search or "") else dash.no_update

    view_state.register_writer(app, PATH, {"map": Input("compare-selected", "data")},
                               convert={"map": lambda v: v if isinstance(v, int) and v >= 0 else None})
