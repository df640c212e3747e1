"""Live updates of the explorer while ``python -m ainerd_core watch`` appends to a dataset.

One shared component (:func:`live_bar`, placed by the explorer's shell above the page) holds

- ``dcc.Interval(id="live-interval")``: every :data:`POLL_MS` ms the browser asks whether the
  selected dataset changed (the catalog's entry version includes the dataset's committed
  segments, :func:`ainerd_core.dataset.live_signature`; asking costs one folder scan a second);
- ``dcc.Store(id="live-version")``: ``{"dataset", "version", "changed"}``; ``changed`` is true
  only when the same dataset got a new version (not on the first look or a dataset switch);
- ``live-indicator``: "LIVE" with the last file's name, folder and arrival time (or when the
  dataset last grew); nothing for a dataset no watcher ever appended to;
- ``live-alerts``: the alerts list (novel maps link to the similarity page with that map as the
  target; failed files show the reason).

When ``changed`` flips, :func:`register_live_callbacks` redraws the figures of the open page
(timeline, sectors, latent map) with the page's own figure builders and its current controls;
the figures carry a constant ``uirevision``, so zoom, pan and lasso selections stay, and no
page is reloaded. The overview's table is rebuilt the same way. The callbacks write the same
figure properties as the pages' own callbacks (``allow_duplicate``); they touch nothing else of
the pages.
"""
from __future__ import annotations

import datetime as _dt
import logging

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dcc, html

from .clusterings import pick_k
from .pages import DATASET_STORE

log = logging.getLogger(__name__)

POLL_MS = 2000
#: a dataset that got no file for this long is shown as not updating
STALE_S = 300.0
MAX_ALERTS = 30


def live_bar() -> html.Div:
    """The shared live component (interval, version store, indicator, alerts)."""
    return html.Div([
        dcc.Interval(id="live-interval", interval=POLL_MS, n_intervals=0),
        dcc.Store(id="live-version"),
        html.Div(id="live-indicator"),
        html.Div(id="live-alerts"),
    ], id="live-bar", className="px-3")


def _parse_utc(text) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def last_file(entry) -> dict | None:
    """``{"file", "utc", "folder", "n_files", "n_failed"}`` of the last file a watcher took, or
    None for a dataset no watcher appended to."""
    ledger = entry.ledger
    if not ledger or "file" not in ledger or not len(ledger["file"]):
        return None
    status = np.asarray(ledger.get("status", ["ok"] * len(ledger["file"]))).astype(str)
    ok = np.flatnonzero(status == "ok")
    info = entry.live_info
    i = int(ok[-1]) if ok.size else len(status) - 1
    utc = ledger["utc"][i] if "utc" in ledger else info.get("committed_utc")
    folder = ledger["folder"][i] if "folder" in ledger else info.get("folder", "")
    return {"file": str(ledger["file"][i]), "utc": str(utc or ""), "folder": str(folder or ""),
            "n_files": int(ok.size), "n_failed": int((status != "ok").sum())}


def indicator(entry, now: _dt.datetime | None = None):
    """The "live" badge with the last file's name, arrival time and folder (None if not live)."""
    last = last_file(entry) if entry is not None else None
    if last is None:
        return None
    now = now or _dt.datetime.now(_dt.timezone.utc)
    t = _parse_utc(last["utc"])
    age = (now - t).total_seconds() if t else float("inf")
    live = age <= STALE_S
    badge = dbc.Badge("LIVE" if live else "not updating", color="danger" if live else "secondary",
                      className="me-2", id="live-badge")
    when = f"{t:%H:%M:%S} UTC ({_ago(max(age, 0))})" if t else "at an unknown time"
    parts = [badge, html.Span("last file "), html.B(last["file"], id="live-last-file"), html.Span(f" arrived {when}"),
             html.Span(f" from {last['folder']}" if last["folder"] else "", className="text-muted"),
             html.Span(f" · {entry.n_maps} maps from {last['n_files']} files"
                       + (f", {last['n_failed']} failed" if last["n_failed"] else ""), className="text-muted")]
    return html.Div(parts, className="small mb-2", id="live-status")


def alerts_list(entry, services):
    """Novel maps (link to the map) and failed files, newest first (None without alerts)."""
    alerts = entry.alerts if entry is not None else None
    if not alerts or "kind" not in alerts or not len(alerts["kind"]):
        return None
    n = len(alerts["kind"])
    items = []
    for i in range(n - 1, max(n - 1 - MAX_ALERTS, -1), -1):
        kind, file_ = str(alerts["kind"][i]), str(alerts["file"][i])
        msg = str(alerts["message"][i]) if "message" in alerts else ""
        when = _parse_utc(alerts["utc"][i]) if "utc" in alerts else None
        stamp = f"{when:%H:%M:%S} " if when else ""
        idx = int(alerts["map"][i]) if "map" in alerts else -1
        if kind == "novel map" and 0 <= idx < entry.n_maps:
            body = html.A(f"{stamp}novel map {idx} ({file_}): {msg}",
                          href=services.href("/similarity", entry.id, target=idx), id={"type": "live-alert", "index": i})
            color = "warning"
        else:
            body = html.Span(f"{stamp}{kind}: {file_}: {msg}", id={"type": "live-alert", "index": i})
            color = "danger"
        items.append(dbc.ListGroupItem(body, color=color, className="py-1 small"))
    return html.Details([html.Summary(f"{n} alert{'s' if n != 1 else ''}", className="small fw-semibold"),
                         dbc.ListGroup(items, flush=True)], className="mb-2", id="live-alert-list")


def user_zoomed(relayout) -> bool:
    """Whether the graph's last relayout event was a zoom/pan (not an autoscale)."""
    if not isinstance(relayout, dict):
        return False
    if any(k.endswith("autorange") and v for k, v in relayout.items()):
        return False
    return any(".range" in k for k in relayout)


def keep_view(fig, old_figure, relayout):
    """Make ``fig`` keep the view the user zoomed to.

    Figure builders may set axis ranges from the data (the timeline focuses on the acquisition
    times); Plotly keeps the user's zoom across an update (same ``uirevision``) only where the new
    figure's value equals the old one, so after a zoom the axis ranges of the previous figure are
    copied over. Without a zoom the new ranges apply and the axes grow with the data.
    """
    if not user_zoomed(relayout) or not isinstance(old_figure, dict):
        return fig
    old_layout = old_figure.get("layout") or {}
    for name, axis in old_layout.items():
        if (name.startswith("xaxis") or name.startswith("yaxis")) and isinstance(axis, dict) and "range" in axis:
            fig.layout[name].range = axis["range"]
    return fig


def register_live_callbacks(app, services) -> None:
    """The polling callback and the per-page redraws (see the module docstring)."""
    catalog = services.catalog

    def changed_entry(live):
        if not isinstance(live, dict) or not live.get("changed"):
            return None
        return catalog.get(live.get("dataset"))

    _register_poll(app, services)
    _register_redraws(app, services, changed_entry)


def _register_poll(app, services) -> None:
    """Every POLL_MS: the indicator, and a new ``live-version`` (+ alerts) when the dataset grew."""
    catalog = services.catalog

    @app.callback(Output("live-version", "data"), Output("live-indicator", "children"),
                  Output("live-alerts", "children"),
                  Input("live-interval", "n_intervals"), Input(DATASET_STORE, "data"), State("live-version", "data"))
    def poll(_n, dataset_id, known):
        entry = catalog.get(dataset_id)
        if entry is None:
            return None, None, None
        version = str(entry.version)
        badge = indicator(entry)
        same_dataset = isinstance(known, dict) and known.get("dataset") == entry.id
        if same_dataset and known.get("version") == version:
            return dash.no_update, badge, dash.no_update
        state = {"dataset": entry.id, "version": version, "changed": bool(same_dataset)}
        return state, badge, alerts_list(entry, services)


def _register_redraws(app, services, changed_entry) -> None:
    """The open page's figures redrawn when ``changed_entry(live)`` gives the grown dataset."""
    catalog = services.catalog
    instance_dir = getattr(services.config, "instance_dir", None)

    # each redraw mirrors the page's own redraw callback (same builder, same controls)
    @app.callback(Output("timeline-graph", "figure", allow_duplicate=True), Input("live-version", "data"),
                  State("timeline-k", "value"), State("timeline-time", "data"), State("timeline-panels", "value"),
                  State("timeline-graph", "figure"), State("timeline-graph", "relayoutData"), prevent_initial_call=True)
    def redraw_timeline(live, k, time_index, panels, old, relayout):
        from .pages import timeline as timeline_page
        from .view_state import index_or_none

        entry = changed_entry(live)
        if entry is None or not entry.has_results:
            return dash.no_update
        times = entry.result("tables/times")
        fig = timeline_page.build_figure(entry, pick_k(entry, k, instance_dir), instance_dir=instance_dir,
                             time_index=index_or_none(time_index, 0 if times is None else len(times)), panels=panels)
        return keep_view(fig, old, relayout)

    @app.callback(Output("sectors-graph", "figure", allow_duplicate=True), Input("live-version", "data"),
                  State("sectors-k", "value"), State("sectors-graph", "figure"), State("sectors-graph", "relayoutData"),
                  prevent_initial_call=True)
    def redraw_sectors(live, k, old, relayout):
        from .pages import sectors as sectors_page

        entry = changed_entry(live)
        if entry is None or not entry.has_results:
            return dash.no_update
        return keep_view(sectors_page.build_figure(entry, pick_k(entry, k, instance_dir), instance_dir), old, relayout)

    @app.callback(Output("latent-graph", "figure", allow_duplicate=True), Input("live-version", "data"),
                  State("latent-color", "value"), State("latent-k", "value"), State("latent-flowshare", "value"),
                  State("latent-times", "value"), State("latent-selected", "data"), State("latent-graph", "figure"),
                  State("latent-graph", "relayoutData"), prevent_initial_call=True)
    def redraw_latent(live, color_by, k, share, times, selected, old, relayout):
        from .pages import latent_map as latent_page

        entry = changed_entry(live)
        if entry is None or not entry.has_results:
            return dash.no_update
        fig = latent_page.build_figure(entry, color_by or "cluster", pick_k(entry, k, instance_dir), bool(share),
                             list(times or [])[:3], selected, instance_dir)
        return keep_view(fig, old, relayout)

    @app.callback(Output("overview-page", "children", allow_duplicate=True), Input("live-version", "data"),
                  State("url", "search"), prevent_initial_call=True)
    def redraw_overview(live, search):
        from .pages import PageContext, parse_query
        from .pages import overview as overview_page

        entry = changed_entry(live)
        if entry is None:
            return dash.no_update
        ctx = PageContext(dataset=entry, dataset_id=entry.id, datasets=catalog.entries(), query=parse_query(search),
                          services=services)
        return overview_page.layout(ctx).children
