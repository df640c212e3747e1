"""'/timeline': Figure 3A+B. Shear stress over the time-resolved stacked cluster histogram on a
shared time axis, stress minima marked; shear rate and viscosity as optional rows; the
clustering selectable (precomputed k or a re-clustering result of this session); clicking a bar
shows that time's maps (scrolled into view). State in the URL: ``k``, ``time``, ``panels``."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import ALL, Input, Output, State, dcc, html

from .. import view_state
from ..clusterings import choice_label, counts_for, k_options, labels_for, pick_k
from ..c2view import c2_view, order_note, rate_table, rate_unit
from ..exports import timeline_csv
from ..explorer import graph_card, help_link, message, register_clustering_csv, thumbnail_grid
from ..figures.common import empty_figure
from ..figures.timeline import timeline_figure
from . import DATASET_STORE

PATH = "/timeline"
TITLE = "Timeline"
ORDER = 10
REQUIRES = ("results",)
#: optional rheology rows: URL word -> (column, name, unit)
PANELS = {"rate": ("shear_rate", "shear rate", "1/s"), "viscosity": ("viscosity", "viscosity", "Pa s")}
#: figure height with stress + histogram: the time axis stays above the fold at 1280 x 800
BASE_HEIGHT = 460
PANEL_HEIGHT = 130


def panel_options(entry) -> list[dict]:
    rh = entry.rheology or {}
    return [{"label": name, "value": key, "disabled": np.size(rh.get(col, [])) == 0}
            for key, (col, name, _) in PANELS.items()]


def extra_panels(entry, panels) -> list:
    rh = entry.rheology or {}
    out = []
    for key in panels or []:
        if key in PANELS:
            col, name, unit = PANELS[key]
            if np.size(rh.get(col, [])) > 0:
                out.append((name, rh["time"], rh[col], unit))
    return out


def build_figure(entry, k, *, instance_dir=None, time_index=None, panels=()):
    times = entry.result("tables/times")
    counts = counts_for(entry, k, instance_dir)
    if times is None or counts is None:
        return empty_figure("No cluster-count table for this clustering (run precompute).")
    rh = entry.rheology if entry.has_rheology else None
    extras = extra_panels(entry, panels)
    rates = rate_table(entry)
    rates = {c: rates[c] for c in ("flow", "vorticity")} if rates else None
    fig = timeline_figure(times, counts, rh["time"] if rh else None, rh["shear_stress"] if rh else None,
                          entry.result("stress_minima/time") if rh else None,
                          k_label=choice_label(entry, k, instance_dir), selected_time_index=time_index,
                          height=(BASE_HEIGHT if rh else 380) + PANEL_HEIGHT * len(extras), extra_panels=extras,
                          rates=rates, rate_unit=rate_unit(entry))
    # the figure fills the height its container gets (graph_style): the whole of it, time axis
    # and legend included, fits a 1280 x 800 laptop screen without scrolling
    fig.update_layout(height=None, autosize=True)
    return fig


def graph_style(n_panels: int = 0) -> str:
    """CSS height of the timeline graph: the viewport less the navbar, controls and card header
    (about 225 px with a two-line card title), never below 400 px; optional rows add to it."""
    extra = f" + {PANEL_HEIGHT * n_panels}px" if n_panels else ""
    return f"max({400 + PANEL_HEIGHT * n_panels}px, calc(100vh - 225px{extra}))"


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


def maps_panel(entry, time_index, k, instance_dir=None):
    times = entry.result("tables/times")
    idx = entry.maps_at_time(time_index)
    labels = labels_for(entry, k, instance_dir)
    title = html.Div([html.B(f"t = {float(times[time_index]):.0f} s"),
                      f" · {len(idx)} maps · {choice_label(entry, k, instance_dir)}"],
                     className="mb-2", id="timeline-maps-title")
    return html.Div([title, html.Div("Click a thumbnail to enlarge it next to its g2 and fit.",
                                     className="small text-muted"),
                     thumbnail_grid(entry, idx, labels, id_prefix="timeline", click_type="timeline-thumb")])


def layout(ctx):
    entry = ctx.dataset
    instance_dir = ctx.instance_dir
    session_ids = ctx.session_clusterings
    k = pick_k(entry, ctx.state.get("k"), instance_dir)
    times = entry.result("tables/times")
    time_index = view_state.index_or_none(ctx.state.get("time"), 0 if times is None else len(times))
    panels = [p for p in ctx.state.get("panels", []) if p in PANELS]
    note = None
    if not entry.has_rheology:
        note = message("This dataset has no rheology log: the shear-stress curve and its minima are not shown; "
                       "the cluster histogram is.", color="secondary", id="timeline-note")
    controls = dbc.Row([
        dbc.Col(html.Label("clusters", className="me-2 fw-semibold"), width="auto"),
        dbc.Col(dbc.RadioItems(id="timeline-k", options=k_options(entry, session_ids, instance_dir, k), value=k,
                               inline=True), width="auto"),
        dbc.Col(html.Label("also show", className="ms-3 me-2 fw-semibold"), width="auto"),
        dbc.Col(dbc.Checklist(id="timeline-panels", options=panel_options(entry), value=panels, inline=True),
                width="auto"),
        dbc.Col(help_link(PATH), width="auto", className="ms-auto"),
    ], className="align-items-center mb-1 g-1")
    hint = html.Div("Click a bar to see the maps of that time point.", className="text-muted small")
    shown = maps_panel(entry, time_index, k, instance_dir) if time_index is not None else hint
    title = "Figure 3A-B: shear stress (top), maps per cluster at each time"
    if rate_table(entry):
        title += f", fitted relaxation rate Γ ({rate_unit(entry)}; median and IQR over the maps whose fit did not fail, flow and vorticity sectors)"
    title += "; dashed lines: stress minima"
    # only the rows the user asked for add height: the default view (stress, histogram and the
    # fitted rate when there is one) fits the screen
    n_rows = len(extra_panels(entry, panels))
    return html.Div([
        html.H4(["Stress and cluster populations over time ", html.Small(f"· {entry.id}", className="text-muted")],
                className="mb-1 fs-5"),
        controls,
        graph_card("timeline-graph", build_figure(entry, k, instance_dir=instance_dir, time_index=time_index,
                                                  panels=panels),
                   title=title, note=note, height=graph_style(n_rows)),
        # below the figure: above it, it would push the time axis below the fold of a laptop
        order_note(entry, "timeline"),
        dbc.Card([dbc.CardHeader("Maps of the selected time point", className="fw-semibold"),
                  dbc.CardBody([html.Div(shown, id="timeline-maps"), html.Div(id="timeline-view")])],
                 className="mb-3", id="timeline-maps-card"),
        dcc.Store(id="timeline-time", data=-1 if time_index is None else time_index),
        dcc.Store(id="timeline-scrolled"),
        view_state.url_store(PATH),
    ], id="timeline-page")


def register_callbacks(app, services) -> None:
    _register_figure(app, services.catalog, services.config.instance_dir)
    _register_maps(app, services.catalog, services.config.instance_dir)
    _register_state_and_csv(app, services.catalog, services.config.instance_dir)


def _register_figure(app, catalog, instance_dir) -> None:
    """The figure follows the controls; a click on it picks a time point."""
    @app.callback(Output("timeline-graph", "figure"), Output("timeline-graph", "style"),
                  Input("timeline-k", "value"), Input("timeline-time", "data"),
                  Input("timeline-panels", "value"), State(DATASET_STORE, "data"), prevent_initial_call=True)
    def redraw(k, time_index, panels, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or k is None:
            return dash.no_update, dash.no_update
        times = entry.result("tables/times")
        return (build_figure(entry, pick_k(entry, k, instance_dir), instance_dir=instance_dir,
                             time_index=view_state.index_or_none(time_index, 0 if times is None else len(times)),
                             panels=panels),
                {"height": graph_style(len(extra_panels(entry, panels)))})

    @app.callback(Output("timeline-time", "data"), Input("timeline-graph", "clickData"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def pick_time(click, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or not click or not click.get("points"):
            return dash.no_update
        point = click["points"][0]
        times = entry.result("tables/times")
        ti = point.get("customdata")
        if ti is None:  # a click on a rheology curve: nearest time point
            x = point.get("x")
            if x is None or times is None:
                return dash.no_update
            ti = int(np.argmin(np.abs(times - float(x))))
        ti = view_state.index_or_none(ti[0] if isinstance(ti, list) else ti, 0 if times is None else len(times))
        return dash.no_update if ti is None else ti


def _register_maps(app, catalog, instance_dir) -> None:
    """The picked time point's maps (scrolled into view) and one of them enlarged."""
    @app.callback(Output("timeline-maps", "children"), Input("timeline-time", "data"), Input("timeline-k", "value"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def show_maps(time_index, k, dataset_id):
        entry = catalog.get(dataset_id)
        times = entry.result("tables/times") if entry is not None else None
        time_index = view_state.index_or_none(time_index, 0 if times is None else len(times))
        if time_index is None:
            return dash.no_update
        return maps_panel(entry, time_index, pick_k(entry, k, instance_dir), instance_dir)

    # what a click produces is brought into view (the maps sit below the figure on a laptop)
    app.clientside_callback(
        """function(children) {
            // after the new thumbnails are in the page (the page is tall enough to scroll to them)
            window.requestAnimationFrame(function() {
                const el = document.getElementById('timeline-maps-card');
                if (el) { el.scrollIntoView({block: 'start', behavior: 'instant'}); }
            });
            return Date.now();
        }""",
        Output("timeline-scrolled", "data"), Input("timeline-maps", "children"), prevent_initial_call=True)

    @app.callback(Output("timeline-view", "children"), Input({"type": "timeline-thumb", "index": ALL}, "n_clicks"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def enlarge(clicks, dataset_id):
        entry = catalog.get(dataset_id)
        trig = dash.callback_context.triggered_id
        if entry is None or not isinstance(trig, dict) or not any(clicks or []):
            return dash.no_update
        if not dash.callback_context.triggered or not dash.callback_context.triggered[0].get("value"):
            return dash.no_update  # a new grid was drawn, nothing was clicked
        index = view_state.index_or_none(trig.get("index"), entry.n_maps)
        if index is None:
            return dash.no_update
        from ..explorer import map_caption

        return html.Div([html.Div(map_caption(entry, index), className="fw-semibold small mt-2"),
                         c2_view(entry, index, key="timeline", title=f"C2 of map {index}")])


def _register_state_and_csv(app, catalog, instance_dir) -> None:
    """The URL keeps k, the time point and the rows; the CSV of the clustering shown."""
    view_state.register_writer(app, PATH, {"k": Input("timeline-k", "value"), "time": Input("timeline-time", "data"),
                                           "panels": Input("timeline-panels", "value")},
                               convert={"time": lambda v: v if isinstance(v, int) and v >= 0 else None})

    def table(entry, k):
        return timeline_csv(entry, counts_for(entry, k, instance_dir), choice_label(entry, k, instance_dir),
                            fit_columns=rate_columns(entry), fit_unit=rate_unit(entry))

    register_clustering_csv(app, catalog, instance_dir, "timeline-graph", "timeline.csv", "timeline-k", table)
