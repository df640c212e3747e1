"""'/latent-map': Figure 3D and Supplementary Fig. 4. The UMAP of all maps (WebGL), coloured by
cluster, time, sector, flow/vorticity class or dynamics score, over the flow/vorticity share
map; up to three time points highlighted; click a point for its map, its reconstruction and
metadata; lasso to list and export maps."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dcc, html

from .. import view_state
from ..c2view import fit_columns, fitted_log_rate, order_note, rate_unit
from ..clusterings import choice_label, k_options, labels_for, pick_k
from ..exports import points_csv
from ..explorer import graph_card, help_link, map_detail, message, register_csv_download
from ..figures.common import empty_figure
from ..figures.latent_map import COLOR_BY, latent_figure
from . import DATASET_STORE

PATH = "/latent-map"
TITLE = "Latent map"
ORDER = 30
REQUIRES = ("results",)
MAX_LISTED = 200


def color_values(entry, color_by: str, k, instance_dir=None):
    meta = entry.meta
    if color_by == "cluster":
        return labels_for(entry, k, instance_dir)
    if color_by == "time":
        return meta["time"]
    if color_by == "sector":
        return meta["sector"]
    if color_by == "class":
        return entry.sector_class()
    if color_by == "dynamics":
        return entry.result("dynamics_score")
    if color_by == "rate":
        return fitted_log_rate(entry)
    if color_by == "novelty":
        return entry.result("novelty/score")
    return None


def default_times(entry) -> list[int]:
    times = entry.result("tables/times")
    if times is None or len(times) == 0:
        return []
    n = len(times)
    return sorted({0, n // 2, n - 1})[:3]


def build_figure(entry, color_by, k, flow_share_on, time_indices, selected=None, instance_dir=None):
    umap = entry.result("umap")
    if umap is None:
        return empty_figure("No UMAP for this dataset (run precompute).")
    values = color_values(entry, color_by, k, instance_dir)
    if values is None:
        color_by, values = "cluster", labels_for(entry, k, instance_dir)
    share = None
    if flow_share_on and entry.has_result("flow_share/share"):
        share = (entry.result("flow_share/x"), entry.result("flow_share/y"), entry.result("flow_share/share"))
    times = entry.result("tables/times")
    highlights = []
    for ti in (time_indices or [])[:3]:
        ti = int(ti)
        if times is not None and 0 <= ti < len(times):
            highlights.append((f"t = {float(times[ti]):.0f} s", entry.maps_at_time(ti)))
    selected = view_state.index_or_none(selected, len(umap))
    title = f"log10 fitted Γ ({rate_unit(entry)})" if color_by == "rate" else None
    fig = latent_figure(umap, color_by, values, flow_share=share, highlights=highlights, color_title=title,
                        selected=selected)
    if color_by == "cluster":
        fig.update_layout(legend_title_text=choice_label(entry, k, instance_dir))
    return fig


def layout(ctx):
    entry = ctx.dataset
    instance_dir = ctx.instance_dir
    state = ctx.state
    k = pick_k(entry, state.get("k"), instance_dir)
    color_options = [{"label": label, "value": key,
                      "disabled": (key == "dynamics" and not entry.has_result("dynamics_score"))
                      or (key == "rate" and fitted_log_rate(entry) is None)
                      or (key == "novelty" and not entry.has_result("novelty/score"))}
                     for key, label in COLOR_BY.items()]
    color_by = state.get("color", "cluster")
    if color_by not in COLOR_BY or any(o["disabled"] for o in color_options if o["value"] == color_by):
        color_by = "cluster"
    times = entry.result("tables/times")
    time_options = [] if times is None else [{"label": f"{float(t):.0f} s", "value": i} for i, t in enumerate(times)]
    n_times = 0 if times is None else len(times)
    chosen_times = (view_state.indices_below(state["times"], n_times, 3) if "times" in state
                    else default_times(entry))
    has_share = entry.has_result("flow_share/share")
    share_on = has_share and state.get("bg", True)
    selected = view_state.index_or_none(state.get("map"), entry.n_maps)
    chosen_sel = view_state.indices_below(state.get("sel", []), entry.n_maps)
    controls = dbc.Row([
        dbc.Col([html.Label("colour by", className="fw-semibold me-2"),
                 dbc.RadioItems(id="latent-color", options=color_options, value=color_by, inline=True)], md=5),
        dbc.Col([html.Label("clusters", className="fw-semibold me-2"),
                 dbc.RadioItems(id="latent-k", options=k_options(entry, ctx.session_clusterings, instance_dir, k),
                                value=k, inline=True)], md=4),
        dbc.Col([dbc.Checklist(id="latent-flowshare", switch=True,
                               options=[{"label": "flow / vorticity share background", "value": "on",
                                         "disabled": not has_share}],
                               value=["on"] if share_on else []), help_link(PATH)], md=3),
        dbc.Col([html.Label("highlight the maps of up to three time points", className="fw-semibold small"),
                 dcc.Dropdown(id="latent-times", options=time_options, value=chosen_times, multi=True,
                              placeholder="choose time points")], md=12, className="mt-1"),
    ], className="mb-2 align-items-center")
    figure = build_figure(entry, color_by, k, share_on, chosen_times, selected, instance_dir)
    if chosen_sel:  # a selection from the URL is drawn as selected, as the lasso left it
        wanted = set(chosen_sel)
        for trace in figure.data:
            cd = getattr(trace, "customdata", None)
            # the point traces (not the highlighted times or the ring of the clicked map)
            if cd is not None and trace.type in ("scatter", "scattergl") \
                    and not str(trace.name).startswith(("t = ", "map ")):
                trace.selectedpoints = [j for j, c in enumerate(cd) if int(c) in wanted]
    entry.warm_model()  # reconstructions: load the autoencoder before the first click
    selection = dbc.Card([
        dbc.CardHeader(html.Div([html.Span("Lasso selection", className="fw-semibold me-auto"),
                                 dbc.Button("Export selection CSV", id="latent-selection-csv", size="sm",
                                            color="secondary", outline=True, disabled=not chosen_sel),
                                 dcc.Download(id="latent-selection-download")], className="d-flex align-items-center")),
        dbc.CardBody(selection_list(entry, chosen_sel, labels_for(entry, k, instance_dir)) if chosen_sel else
                     html.Div("Draw a lasso around points (the figure's default drag mode) to list them.",
                              className="text-muted small"), id="latent-selection")], className="mb-3")
    detail_body = (map_detail(entry, selected, labels_for(entry, k, instance_dir), reconstruction=True, key="latent")
                   if selected is not None else
                   html.Div("Click a point to show its C2 map, its reconstruction and metadata.", className="text-muted small"))
    detail = dbc.Card([dbc.CardHeader("Selected map", className="fw-semibold"),
                       dbc.CardBody(detail_body, id="latent-detail")], className="mb-3")
    notes = []
    if not entry.has_maps:
        notes.append(message("This dataset holds latents only: points have metadata but no C2 images.",
                             color="secondary", className="no-maps-message"))
    return html.Div([
        html.H4(["The latent space, flattened by UMAP ", html.Small(f"· {entry.id}", className="text-muted")],
                className="mb-1 fs-5"),
        *notes, order_note(entry, "latent"), controls,
        dbc.Row([dbc.Col(graph_card("latent-graph", figure, title="Figure 3D / Suppl. Fig. 4: UMAP of the latents "
                                    "(display only; clusters were found in the full latent space)"), lg=8),
                 dbc.Col([detail, selection], lg=4)]),
        dcc.Store(id="latent-selection-store", data=chosen_sel),
        dcc.Store(id="latent-selected", data=-1 if selected is None else selected),
        view_state.url_store(PATH),
    ], id="latent-page")


def _selected_indices(selected) -> list[int]:
    if not selected or not selected.get("points"):
        return []
    out = []
    for p in selected["points"]:
        c = p.get("customdata")
        if isinstance(c, list):
            c = c[0] if c else None
        if c is not None:
            out.append(int(c))
    return sorted(set(out))


def _points_columns(entry, k, instance_dir=None):
    meta = entry.meta
    umap = entry.result("umap")
    cols = {"map_index": np.arange(entry.n_maps), "time_s": meta["time"], "sector": meta["sector"],
            "class": entry.sector_class(), "cluster": labels_for(entry, k, instance_dir)}
    if umap is not None:
        cols["umap_x"], cols["umap_y"] = umap[:, 0], umap[:, 1]
    score = entry.result("dynamics_score")
    if score is not None:
        cols["dynamics_score"] = score
    cols.update(fit_columns(entry))  # the fitted g2 parameters of every map (empty without dynamics)
    if "source" in meta:
        cols["source"] = meta["source"]
    return cols


def selection_list(entry, idx, labels):
    """Summary and table of selected maps (all of them go to the CSV)."""
    meta, cls = entry.meta, entry.sector_class()
    rows = [html.Tr([html.Td(i), html.Td(f"{float(meta['time'][i]):.0f}"), html.Td(int(meta["sector"][i])),
                     html.Td(cls[i]), html.Td(int(labels[i]))]) for i in idx[:MAX_LISTED]]
    more = html.Div(f"... and {len(idx) - MAX_LISTED} more (all are in the CSV).", className="small text-muted") \
        if len(idx) > MAX_LISTED else None
    sel = labels[idx]
    counts = np.bincount(sel[sel >= 0], minlength=int(labels.max()) + 1) if labels.max() >= 0 else np.zeros(0, int)
    noise = int((sel < 0).sum())
    summary = html.Div([html.B(f"{len(idx)} maps selected"), " · per cluster: ",
                        ", ".join(f"{c}: {n}" for c, n in enumerate(counts) if n) + (f", noise: {noise}" if noise else "")],
                       className="mb-2 small", id="latent-selection-summary")
    table = dbc.Table([html.Thead(html.Tr([html.Th(h) for h in ("map", "t (s)", "sector", "class", "cluster")])),
                       html.Tbody(rows)], size="sm", className="small mb-0")
    return html.Div([summary, html.Div(table, style={"maxHeight": "22rem", "overflowY": "auto"}), more])


def register_callbacks(app, services) -> None:
    catalog = services.catalog
    instance_dir = services.config.instance_dir

    @app.callback(Output("latent-graph", "figure"), Input("latent-color", "value"), Input("latent-k", "value"),
                  Input("latent-flowshare", "value"), Input("latent-times", "value"), Input("latent-selected", "data"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def redraw(color_by, k, share, times, selected, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None:
            return dash.no_update
        return build_figure(entry, color_by or "cluster", pick_k(entry, k, instance_dir), bool(share),
                            list(times or [])[:3], selected, instance_dir)

    @app.callback(Output("latent-times", "value"), Input("latent-times", "value"), prevent_initial_call=True)
    def at_most_three(times):
        if times and len(times) > 3:
            return times[-3:]
        return dash.no_update

    @app.callback(Output("latent-selected", "data"), Input("latent-graph", "clickData"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def pick_point(click, dataset_id):
        entry = catalog.get(dataset_id)
        idx = _selected_indices(click)
        if entry is None or not idx or not 0 <= idx[0] < entry.n_maps:
            return dash.no_update
        return idx[0]

    @app.callback(Output("latent-detail", "children"), Input("latent-selected", "data"),
                  State("latent-k", "value"), State(DATASET_STORE, "data"), prevent_initial_call=True)
    def show_point(index, k, dataset_id):
        entry = catalog.get(dataset_id)
        index = view_state.index_or_none(index, entry.n_maps if entry is not None else 0)
        if index is None:
            return dash.no_update
        return map_detail(entry, index, labels_for(entry, pick_k(entry, k, instance_dir), instance_dir),
                          reconstruction=True, key="latent")

    @app.callback(Output("latent-selection", "children"), Output("latent-selection-store", "data"),
                  Output("latent-selection-csv", "disabled"), Input("latent-graph", "selectedData"),
                  State("latent-k", "value"), State(DATASET_STORE, "data"), prevent_initial_call=True)
    def list_selection(selected, k, dataset_id):
        entry = catalog.get(dataset_id)
        idx = [i for i in _selected_indices(selected) if entry is not None and 0 <= i < entry.n_maps]
        if entry is None or not idx:
            return html.Div("Nothing selected.", className="text-muted small"), [], True
        labels = labels_for(entry, pick_k(entry, k, instance_dir), instance_dir)
        return selection_list(entry, idx, labels), idx, False

    @app.callback(Output("latent-selection-download", "data"), Input("latent-selection-csv", "n_clicks"),
                  State("latent-selection-store", "data"), State("latent-k", "value"), State(DATASET_STORE, "data"),
                  prevent_initial_call=True)
    def export_selection(n, idx, k, dataset_id):
        entry = catalog.get(dataset_id)
        if not n or entry is None or not idx:
            return dash.no_update
        text = points_csv(_points_columns(entry, pick_k(entry, k, instance_dir), instance_dir), indices=idx)
        return dict(content=text, filename=f"{entry.id}_selection.csv", type="text/csv")

    view_state.register_writer(
        app, PATH, {"k": Input("latent-k", "value"), "color": Input("latent-color", "value"),
                    "times": Input("latent-times", "value"), "bg": Input("latent-flowshare", "value"),
                    "map": Input("latent-selected", "data"), "sel": Input("latent-selection-store", "data")},
        convert={"times": lambda v: list(v or [])[:3], "bg": lambda v: bool(v),
                 "map": lambda v: v if isinstance(v, int) and v >= 0 else None})

    def to_csv(dataset_id, k):
        entry = catalog.get(dataset_id)
        if entry is None:
            return ""
        return points_csv(_points_columns(entry, pick_k(entry, k, instance_dir), instance_dir))

    register_csv_download(app, "latent-graph", "latent_map_points.csv", to_csv=to_csv,
                          states=(State(DATASET_STORE, "data"), State("latent-k", "value")))
