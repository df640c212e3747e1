"""'/sectors': Figure 3C. Cluster label of every (sector, time), flow and vorticity sectors
marked (from the file's ``flow_axis_deg``); hovering a cell previews the map, clicking shows it."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dcc, html

from ..c2view import fit_columns, order_note
from ..clusterings import choice_label, k_options, labels_for, pick_k
from ..exports import sector_time_csv
from .. import view_state
from ..explorer import graph_card, help_link, map_detail, register_clustering_csv
from ..figures.sectors import sector_heatmap
from ..images import map_image_url
from . import DATASET_STORE

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


def label_matrix(entry, k, instance_dir=None):
    """(S, T) labels of a clustering choice (an int k or a session result id):
    ``tables/sector_time_labels`` for the chosen k, else from the labels."""
    times, sectors, mi = sector_time_index(entry)
    if k == entry.k and entry.has_result("tables/sector_time_labels"):
        return entry.result("tables/sector_time_labels")
    labels = labels_for(entry, k, instance_dir)
    # a -2 for cells with a map the clustering called noise would need another colour: noise and
    # "no map" share the grey level, and the hover says which
    return np.where(mi >= 0, labels[np.maximum(mi, 0)], -1).astype(np.int32)


def build_figure(entry, k, instance_dir=None):
    times, sectors, mi = sector_time_index(entry)
    z = label_matrix(entry, k, instance_dir)
    # levels: k for a precomputed k, else the labels the result holds
    fig = sector_heatmap(times, sectors, z, k if isinstance(k, int) else 1, entry.sector_classes_by_number(sectors), mi)
    fig.update_layout(title=dict(text=choice_label(entry, k, instance_dir), font=dict(size=13), x=0.99,
                                 xanchor="right", y=0.995, yanchor="top"))
    return fig


def layout(ctx):
    entry = ctx.dataset
    instance_dir = ctx.instance_dir
    k = pick_k(entry, ctx.state.get("k"), instance_dir)
    selected = view_state.index_or_none(ctx.state.get("map"), entry.n_maps)
    flow = [s for s, c in entry.sector_classes_by_number(sector_time_index(entry)[1]).items() if c == "flow"]
    vort = [s for s, c in entry.sector_classes_by_number(sector_time_index(entry)[1]).items() if c == "vorticity"]
    axis = entry.attrs.get("flow_axis_deg", "?")
    caption = (f"Flow axis at {axis} deg: flow sectors {', '.join(map(str, flow)) or 'none'} (blue, F), "
               f"vorticity sectors {', '.join(map(str, vort)) or 'none'} (red, V).")
    hint = "Hover a cell to preview its map; click it to show it." if entry.has_maps else \
        "This dataset holds latents only: cells show metadata, no images."
    return html.Div([
        html.H4(["Cluster of every sector over time ", html.Small(f"· {entry.id}", className="text-muted")],
                className="mb-1 fs-5"),
        order_note(entry, "sectors"),
        dbc.Row([dbc.Col(html.Label("clusters", className="me-2 fw-semibold"), width="auto"),
                 dbc.Col(dbc.RadioItems(id="sectors-k", options=k_options(entry, ctx.session_clusterings, instance_dir, k),
                                        value=k, inline=True), width="auto"),
                 dbc.Col(help_link(PATH), width="auto", className="ms-auto")],
                className="align-items-center mb-2"),
        dbc.Row([
            dbc.Col(graph_card("sectors-graph", build_figure(entry, k, instance_dir), title="Figure 3C: cluster label vs "
                               "(time, sector)", note=html.Div(caption, className="small text-muted mb-1")), lg=8),
            dbc.Col([html.Div(hint, className="small text-muted mb-2"),
                     html.Div(id="sectors-hover", className="mb-2"),
                     html.Div(map_detail(entry, selected, labels_for(entry, k, instance_dir), key="sectors")
                              if selected is not None else None, id="sectors-map")], lg=4),
        ]),
        dcc.Store(id="sectors-selected", data=-1 if selected is None else selected),
        view_state.url_store(PATH),
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
    instance_dir = services.config.instance_dir

    @app.callback(Output("sectors-graph", "figure"), Input("sectors-k", "value"), State(DATASET_STORE, "data"),
                  prevent_initial_call=True)
    def change_k(k, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or k is None:
            return dash.no_update
        return build_figure(entry, pick_k(entry, k, instance_dir), instance_dir)

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

    @app.callback(Output("sectors-selected", "data"), Input("sectors-graph", "clickData"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def select(click, dataset_id):
        idx = _cell_index(catalog.get(dataset_id), click)
        return dash.no_update if idx is None else idx

    @app.callback(Output("sectors-map", "children"), Input("sectors-selected", "data"), Input("sectors-k", "value"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def show(idx, k, dataset_id):
        entry = catalog.get(dataset_id)
        idx = view_state.index_or_none(idx, entry.n_maps if entry is not None else 0)
        if idx is None:
            return dash.no_update
        return map_detail(entry, idx, labels_for(entry, pick_k(entry, k, instance_dir), instance_dir), key="sectors")

    view_state.register_writer(app, PATH, {"k": Input("sectors-k", "value"), "map": Input("sectors-selected", "data")},
                               convert={"map": lambda v: v if isinstance(v, int) and v >= 0 else None})

    def table(entry, k):
        times, sectors, mi = sector_time_index(entry)
        return sector_time_csv(times, sectors, label_matrix(entry, k, instance_dir),
                               entry.sector_classes_by_number(sectors), mi, map_columns=fit_columns(entry))

    register_clustering_csv(app, catalog, instance_dir, "sectors-graph", "sector_time_labels.csv", "sectors-k", table)
