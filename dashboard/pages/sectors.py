"""'/sectors': Figure 3C. Cluster label of every (sector, time), flow and vorticity sectors
marked (from the file's ``flow_axis_deg``); hovering a cell previews the map, clicking shows it."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, html

from ..c2view import fit_columns, order_note
from ..exports import sector_time_csv
from ..explorer import graph_card, map_detail, register_csv_download
from ..figures.sectors import sector_heatmap
from ..images import map_image_url
from . import DATASET_STORE
from .timeline import k_options, pick_k

PATH = "/sectors"
TITLE = "Sectors"
ORDER = 20
REQUIRES = ("results",)


def sector_time_index(entry):
    """(times, sectors, map_index (S, T)): which map sits in each (sector, time) cell (-1 none)."""
    def build():
        times = entry.result("tables/times")
        ti = entry.result("tables/time_index")
        if times is None or ti is None:
            times, ti = np.unique(entry.meta["time"], return_inverse=True)
        sectors = entry.result("tables/sectors")
        if sectors is None:
            sectors = np.unique(entry.meta["sector"])
        sectors = np.asarray(sectors, dtype=int)
        mi = np.full((sectors.size, len(times)), -1, dtype=np.int32)
        rows = np.searchsorted(sectors, entry.meta["sector"])
        ok = (rows < sectors.size) & (sectors[np.minimum(rows, sectors.size - 1)] == entry.meta["sector"])
        mi[rows[ok], np.asarray(ti)[ok]] = np.nonzero(ok)[0]
        return np.asarray(times, dtype=float), sectors, mi
    return entry.cached("sectors/map_index", build)


def label_matrix(entry, k):
    """(S, T) labels at k: ``tables/sector_time_labels`` for the chosen k, else from ``labels_k*``."""
    times, sectors, mi = sector_time_index(entry)
    if k == entry.k and entry.has_result("tables/sector_time_labels"):
        return entry.result("tables/sector_time_labels")
    labels = entry.labels(k)
    return np.where(mi >= 0, labels[np.maximum(mi, 0)], -1).astype(np.int32)


def build_figure(entry, k):
    times, sectors, mi = sector_time_index(entry)
    return sector_heatmap(times, sectors, label_matrix(entry, k), k, entry.sector_classes_by_number(sectors), mi)


def layout(ctx):
    entry = ctx.dataset
    k = pick_k(entry, ctx.query.get("k"))
    flow = [s for s, c in entry.sector_classes_by_number(sector_time_index(entry)[1]).items() if c == "flow"]
    vort = [s for s, c in entry.sector_classes_by_number(sector_time_index(entry)[1]).items() if c == "vorticity"]
    axis = entry.attrs.get("flow_axis_deg", "?")
    caption = (f"Flow axis at {axis} deg: flow sectors {', '.join(map(str, flow)) or 'none'} (blue, F), "
               f"vorticity sectors {', '.join(map(str, vort)) or 'none'} (red, V).")
    hint = "Hover a cell to preview its map; click it to show it." if entry.has_maps else \
        "This dataset holds latents only: cells show metadata, no images."
    return html.Div([
        html.H4(["Cluster of every sector over time ", html.Small(f"· {entry.id}", className="text-muted")]),
        order_note(entry, "sectors"),
        dbc.Row([dbc.Col(html.Label("clusters", className="me-2 fw-semibold"), width="auto"),
                 dbc.Col(dbc.RadioItems(id="sectors-k", options=k_options(entry), value=k, inline=True), width="auto")],
                className="align-items-center mb-2"),
        dbc.Row([
            dbc.Col(graph_card("sectors-graph", build_figure(entry, k), title="Figure 3C: cluster label vs "
                               "(time, sector)", note=html.Div(caption, className="small text-muted mb-1")), lg=9),
            dbc.Col([html.Div(hint, className="small text-muted mb-2"),
                     html.Div(id="sectors-hover", className="mb-2"),
                     html.Div(id="sectors-map")], lg=3),
        ]),
    ], id="sectors-page")


def _cell_index(entry, data):
    """Map index of the hovered/clicked cell (customdata, else looked up from x, y), or None."""
    if entry is None or not data or not data.get("points"):
        return None
    point = data["points"][0]
    idx = point.get("customdata")
    if idx is None:
        times, sectors, mi = sector_time_index(entry)
        try:
            col = int(np.argmin(np.abs(times - float(point["x"]))))
            row = int(np.argmin(np.abs(sectors - float(point["y"]))))
        except (KeyError, TypeError, ValueError):
            return None
        idx = mi[row, col]
    idx = int(idx)
    return idx if 0 <= idx < entry.n_maps else None


def register_callbacks(app, services) -> None:
    catalog = services.catalog

    @app.callback(Output("sectors-graph", "figure"), Input("sectors-k", "value"), State(DATASET_STORE, "data"),
                  prevent_initial_call=True)
    def change_k(k, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or k is None:
            return dash.no_update
        return build_figure(entry, pick_k(entry, k))

    @app.callback(Output("sectors-hover", "children"), Input("sectors-graph", "hoverData"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def preview(hover, dataset_id):
        entry = catalog.get(dataset_id)
        idx = _cell_index(entry, hover)
        if idx is None:
            return dash.no_update
        from ..explorer import map_caption

        caption = map_caption(entry, idx)
        if not entry.has_maps:
            return html.Div(caption, className="small")
        return html.Figure([html.Img(src=map_image_url(entry.id, idx, thumb=True), width=96, height=96,
                                     alt=caption, className="map-thumb"),
                            html.Figcaption(caption, className="small text-muted")], id="sectors-hover-figure")

    @app.callback(Output("sectors-map", "children"), Input("sectors-graph", "clickData"),
                  State("sectors-k", "value"), State(DATASET_STORE, "data"), prevent_initial_call=True)
    def show(click, k, dataset_id):
        entry = catalog.get(dataset_id)
        idx = _cell_index(entry, click)
        if idx is None:
            return dash.no_update
        return map_detail(entry, idx, entry.labels(pick_k(entry, k)), key="sectors")

    def to_csv(dataset_id, k):
        entry = catalog.get(dataset_id)
        if entry is None:
            return ""
        k = pick_k(entry, k)
        times, sectors, mi = sector_time_index(entry)
        return sector_time_csv(times, sectors, label_matrix(entry, k), entry.sector_classes_by_number(sectors), mi,
                               map_columns=fit_columns(entry))

    register_csv_download(app, "sectors-graph", "sector_time_labels.csv", to_csv=to_csv,
                          states=(State(DATASET_STORE, "data"), State("sectors-k", "value")))
