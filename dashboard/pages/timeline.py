"""'/timeline': Figure 3A+B. Shear stress over the time-resolved stacked cluster histogram on a
shared time axis, stress minima marked; k selectable; clicking a bar shows that time's maps."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import ALL, Input, Output, State, html

from ..c2view import c2_view, order_note, rate_table, rate_unit
from ..exports import counts_csv
from ..explorer import graph_card, message, register_csv_download, thumbnail_grid
from ..figures.common import empty_figure
from ..figures.timeline import timeline_figure
from . import DATASET_STORE

PATH = "/timeline"
TITLE = "Timeline"
ORDER = 10
REQUIRES = ("results",)


def k_options(entry) -> list[dict]:
    chosen = entry.k
    return [{"label": f"k = {k}" + (" (chosen)" if k == chosen else ""), "value": k} for k in entry.available_k()]


def pick_k(entry, wanted) -> int | None:
    ks = entry.available_k()
    try:
        wanted = int(wanted)
    except (TypeError, ValueError):
        wanted = None
    if wanted in ks:
        return wanted
    return entry.k if entry.k in ks else (ks[0] if ks else None)


def build_figure(entry, k):
    times = entry.result("tables/times")
    counts = entry.counts(k)
    if times is None or counts is None:
        return empty_figure("No cluster-count table for this k (run precompute).")
    rh = entry.rheology if entry.has_rheology else None
    rates = rate_table(entry)
    rates = {c: rates[c] for c in ("flow", "vorticity")} if rates else None
    return timeline_figure(times, counts, rh["time"] if rh else None, rh["shear_stress"] if rh else None,
                           entry.result("stress_minima/time") if rh else None, k_label=f"k = {k}",
                           rates=rates, rate_unit=rate_unit(entry))


def rate_columns(entry) -> dict:
    """The timeline CSV's fitted-rate columns (median, quartiles, number of fits (failed ones left out) per time
    point, for all maps and the flow and vorticity sectors); {} without dynamics."""
    rates = rate_table(entry)
    if not rates:
        return {}
    unit = rate_unit(entry).replace("1/", "per_")
    cols = {}
    for cls in ("all", "flow", "vorticity"):
        for stat in ("median", "q25", "q75"):
            cols[f"rate_{stat}_{cls}_{unit}"] = rates[cls][stat]
        cols[f"n_fits_{cls}"] = rates[cls]["n"]
    return cols


def maps_at_time(entry, time_index: int) -> np.ndarray:
    """Indices of the maps of one time point, ordered by sector."""
    def table():
        ti = entry.result("tables/time_index")
        if ti is None:
            _, ti = np.unique(entry.meta["time"], return_inverse=True)
        order = np.lexsort((entry.meta["sector"], ti))
        bounds = np.searchsorted(ti[order], np.arange(ti.max() + 2))
        return order, bounds
    order, bounds = entry.cached("timeline/maps_by_time", table)
    time_index = int(time_index)
    if not 0 <= time_index < len(bounds) - 1:
        return np.zeros(0, dtype=int)
    return order[bounds[time_index]:bounds[time_index + 1]]


def layout(ctx):
    entry = ctx.dataset
    k = pick_k(entry, ctx.query.get("k"))
    note = None
    if not entry.has_rheology:
        note = message("This dataset has no rheology log: the shear-stress curve and its minima are not shown; "
                       "the cluster histogram is.", color="secondary", id="timeline-note")
    controls = dbc.Row([
        dbc.Col(html.Label("clusters", className="me-2 fw-semibold"), width="auto"),
        dbc.Col(dbc.RadioItems(id="timeline-k", options=k_options(entry), value=k, inline=True), width="auto"),
    ], className="align-items-center mb-2")
    hint = html.Div("Click a bar to see the maps of that time point.", className="text-muted small")
    title = "Figure 3A-B: shear stress (top), maps per cluster at each time"
    if rate_table(entry):
        title += f", fitted relaxation rate Γ ({rate_unit(entry)}; median and IQR over the maps whose fit did not fail, flow and vorticity sectors)"
    title += "; dashed lines: stress minima"
    return html.Div([
        html.H4(["Stress and cluster populations over time ", html.Small(f"· {entry.id}", className="text-muted")]),
        order_note(entry, "timeline"), controls,
        graph_card("timeline-graph", build_figure(entry, k), title=title, note=note),
        dbc.Card([dbc.CardHeader("Maps of the selected time point", className="fw-semibold"),
                  dbc.CardBody([html.Div(hint, id="timeline-maps"), html.Div(id="timeline-view")])],
                 className="mb-3"),
    ], id="timeline-page")


def register_callbacks(app, services) -> None:
    catalog = services.catalog

    @app.callback(Output("timeline-graph", "figure"), Input("timeline-k", "value"), State(DATASET_STORE, "data"),
                  prevent_initial_call=True)
    def change_k(k, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or k is None:
            return dash.no_update
        return build_figure(entry, pick_k(entry, k))

    @app.callback(Output("timeline-maps", "children"), Input("timeline-graph", "clickData"),
                  State("timeline-k", "value"), State(DATASET_STORE, "data"), prevent_initial_call=True)
    def show_maps(click, k, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or not click or not click.get("points"):
            return dash.no_update
        point = click["points"][0]
        times = entry.result("tables/times")
        ti = point.get("customdata")
        if ti is None:  # a click on the stress curve: nearest time point
            x = point.get("x")
            if x is None or times is None:
                return dash.no_update
            ti = int(np.argmin(np.abs(times - float(x))))
        ti = int(ti[0] if isinstance(ti, list) else ti)
        idx = maps_at_time(entry, ti)
        labels = entry.labels(pick_k(entry, k))
        title = html.Div([html.B(f"t = {float(times[ti]):.0f} s"), f" · {len(idx)} maps · k = {pick_k(entry, k)}"],
                         className="mb-2", id="timeline-maps-title")
        return html.Div([title, html.Div("Click a thumbnail to enlarge it next to its g2 and fit.",
                                         className="small text-muted"),
                         thumbnail_grid(entry, idx, labels, id_prefix="timeline", click_type="timeline-thumb")])

    @app.callback(Output("timeline-view", "children"), Input({"type": "timeline-thumb", "index": ALL}, "n_clicks"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def enlarge(clicks, dataset_id):
        entry = catalog.get(dataset_id)
        trig = dash.callback_context.triggered_id
        if entry is None or not isinstance(trig, dict) or not any(clicks or []):
            return dash.no_update
        if not dash.callback_context.triggered or not dash.callback_context.triggered[0].get("value"):
            return dash.no_update  # a new grid was drawn, nothing was clicked
        try:
            index = int(trig.get("index"))
        except (TypeError, ValueError):
            return dash.no_update
        if not 0 <= index < entry.n_maps:
            return dash.no_update
        from ..explorer import map_caption

        return html.Div([html.Div(map_caption(entry, index), className="fw-semibold small mt-2"),
                         c2_view(entry, index, key="timeline", title=f"C2 of map {index}")])

    def to_csv(dataset_id, k):
        entry = catalog.get(dataset_id)
        if entry is None:
            return ""
        k = pick_k(entry, k)
        minima = entry.result("stress_minima/time") if entry.has_rheology else None
        return counts_csv(entry.result("tables/times"), entry.counts(k), minima, extra_columns=rate_columns(entry))

    register_csv_download(app, "timeline-graph", "timeline_counts.csv", to_csv=to_csv,
                          states=(State(DATASET_STORE, "data"), State("timeline-k", "value")))
