"""The explorer Dash app at '/': navbar, dataset selector in the URL, routing to the pages.

Routing is done here with one ``dcc.Location(id="url")`` (no ``dash.register_page``): the
router callback maps the pathname to a page module of :mod:`dashboard.pages` and calls its
``layout(ctx)``; the selected dataset lives in the URL query (``?dataset=<id>``) so a view can
be shared as a link, and in ``dcc.Store(id="dataset-store")`` for page callbacks.

Everything registers on the app instance (``app.callback``), never the global
``dash.callback``: this process hosts other Dash apps.

Shared helpers for page modules
-------------------------------
:func:`register_background_callback`
    Long work with a progress bar through the app's single background manager.
:func:`graph_card`, :func:`register_csv_download`
    A figure in a card with PNG (plotly modebar) and CSV download buttons.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import dash
import numpy as np
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from urllib.parse import urlencode

from . import pages as pages_pkg
from . import clusterings, figure_export, view_state
from .catalog import Catalog
from .live import live_bar, register_live_callbacks
from .pages import DATASET_STORE, PageContext, Services, missing_requirements, parse_query

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
GRAPH_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
_REQUIREMENT_TEXT = {
    "results": "has not been precomputed yet (run `python -m ainerd_core precompute <file>`)",
    "maps": "holds latents only, no C2 maps, so this page has nothing to show",
    "rheology": "has no rheology (shear stress) log",
}


# --------------------------------------------------------------------------- helpers for pages
def register_background_callback(app: dash.Dash, manager, *args, progress=None, running=None, cancel=None,
                                 progress_default=None, interval: int = 500,
                                 prevent_initial_call: bool = True, **kwargs):
    """Decorator: register a Dash background callback on ``app`` using ``manager``.

    ``args`` are the usual ``Output``/``Input``/``State`` objects. The decorated function gets
    ``set_progress`` as its first argument when ``progress`` is given (call it with the value(s)
    of the progress outputs, e.g. ``set_progress((40, "40 %"))`` for a ``dbc.Progress``'s
    ``value`` and ``label``). Example (the clusters page's re-clustering job)::

        @services.register_background(
            Output("recluster-result", "children"), Input("recluster-run", "n_clicks"),
            State("recluster-k", "value"), State("recluster-algorithm", "value"),
            State(DATASET_STORE, "data"),
            progress=[Output("recluster-progress", "value"), Output("recluster-progress", "label")],
            running=[(Output("recluster-run", "disabled"), True, False)])
        def recluster(set_progress, n_clicks, k, algorithm, dataset_id): ...

    The job runs in a worker process of the manager (diskcache: a subprocess; celery: a
    worker), so it must only use picklable arguments and open the dataset itself
    (``Catalog(config.data_dir).get(dataset_id)`` or ``open_dataset``).
    """
    options = dict(background=True, manager=manager, interval=interval,
                   prevent_initial_call=prevent_initial_call, **kwargs)
    if progress is not None:
        options["progress"] = progress
        if progress_default is not None:
            options["progress_default"] = progress_default
    if running is not None:
        options["running"] = running
    if cancel is not None:
        options["cancel"] = cancel

    def decorator(func):
        return app.callback(*args, **options)(func)
    return decorator


def graph_card(graph_id: str, figure, *, title: str | None = None, csv: bool = True, height: str | None = None,
               extra=None, note=None, graph_kwargs: dict | None = None) -> dbc.Card:
    """A figure in a card, with PNG / SVG / PDF export buttons (:mod:`dashboard.figure_export`,
    stamped with dataset, model checksum, version and date unless the card's "stamp" box is
    cleared), a CSV download button (``<graph_id>-csv``) and ``dcc.Download``
    (``<graph_id>-csv-download``). Register the CSV callback with :func:`register_csv_download`."""
    config = dict(GRAPH_CONFIG, toImageButtonOptions=dict(GRAPH_CONFIG["toImageButtonOptions"], filename=graph_id))
    style = {"height": height} if height else None
    graph = dcc.Graph(id=graph_id, figure=figure, config=config, style=style, **(graph_kwargs or {}))
    header = [html.Span(title or "", className="fw-semibold me-auto"),
              html.Span(id=f"{graph_id}-export-status", className="small text-muted ms-2 export-status")]
    header += [dbc.Button(fmt.upper(), id={"type": "figure-export", "graph": graph_id, "format": fmt}, size="sm",
                          color="secondary", outline=True, className="ms-1 export-button",
                          title=f"save the figure as {fmt.upper()}") for fmt in ("png", "svg", "pdf")]
    header.append(dbc.Checkbox(id={"type": "figure-stamp", "graph": graph_id}, label="stamp", value=True,
                               className="ms-2 small mb-0", label_class_name="small",
                               label_style={"whiteSpace": "nowrap"}))
    if csv:
        header += [dbc.Button("CSV", id=f"{graph_id}-csv", size="sm", color="secondary", outline=True,
                              className="ms-2", title="download the figure's data as CSV"),
                   dcc.Download(id=f"{graph_id}-csv-download")]
    body = [graph]
    if note is not None:
        body.insert(0, note)
    if extra is not None:
        body.append(extra)
    return dbc.Card([dbc.CardHeader(html.Div(header, className="d-flex align-items-center")),
                     dbc.CardBody(body, className="p-2")], className="mb-3")


def register_csv_download(app: dash.Dash, graph_id: str, filename: str, to_csv=None, states=(), *,
                          with_figure: bool = False) -> None:
    """Register the CSV button of :func:`graph_card`.

    Without ``to_csv`` the browser's figure is sent back and every trace's data is written in
    long format (:func:`dashboard.exports.figure_to_csv`). With ``to_csv(*state_values) -> str``
    the figure is not uploaded: the function rebuilds the table on the server from the values
    of ``states`` (e.g. ``State(DATASET_STORE, "data")``, the page's controls), which is what
    big figures should do. ``with_figure=True`` calls ``to_csv(figure, *state_values)`` instead
    (tables that need both).
    """
    from .exports import figure_to_csv

    if with_figure:
        @app.callback(Output(f"{graph_id}-csv-download", "data"), Input(f"{graph_id}-csv", "n_clicks"),
                      State(graph_id, "figure"), *states, prevent_initial_call=True)
        def _download_with_figure(n_clicks, figure, *values):
            if not n_clicks or not figure:
                return dash.no_update
            return dict(content=to_csv(figure, *values), filename=filename, type="text/csv")
        return

    if to_csv is None:
        @app.callback(Output(f"{graph_id}-csv-download", "data"), Input(f"{graph_id}-csv", "n_clicks"),
                      State(graph_id, "figure"), prevent_initial_call=True)
        def _download_figure(n_clicks, figure):
            if not n_clicks or not figure:
                return dash.no_update
            return dict(content=figure_to_csv(figure), filename=filename, type="text/csv")
        return

    @app.callback(Output(f"{graph_id}-csv-download", "data"), Input(f"{graph_id}-csv", "n_clicks"), *states,
                  prevent_initial_call=True)
    def _download(n_clicks, *values):
        if not n_clicks:
            return dash.no_update
        return dict(content=to_csv(*values), filename=filename, type="text/csv")


def register_clustering_csv(app: dash.Dash, catalog, instance_dir, graph_id: str, filename: str, k_control: str,
                            table) -> None:
    """The CSV button of a figure drawn for one clustering: ``table(entry, choice) -> str`` gets the
    dataset and the :func:`dashboard.clusterings.pick_k` choice of the radio ``k_control``."""
    def to_csv(dataset_id, k):
        entry = catalog.get(dataset_id)
        if entry is None:
            return ""
        return table(entry, clusterings.pick_k(entry, k, instance_dir))

    register_csv_download(app, graph_id, filename, to_csv=to_csv,
                          states=(State(DATASET_STORE, "data"), State(k_control, "value")))


def register_seeded_redraw(app: dash.Dash, catalog, graph_id: str, button_id: str, seed_id: str, draw,
                           usable=lambda entry: True) -> None:
    """A 'draw other maps' button next to a seed box: the button adds one to the seed, and either
    redraws ``graph_id`` with ``draw(entry, dataset_id, seed)`` (same seed, same maps); nothing
    happens for a dataset where ``usable(entry)`` is false."""
    @app.callback(Output(graph_id, "figure"), Output(seed_id, "value"),
                  Input(button_id, "n_clicks"), Input(seed_id, "value"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def _redraw(n_clicks, seed, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or not usable(entry):
            return dash.no_update, dash.no_update
        seed = int(seed or 0)
        if dash.callback_context.triggered_id == button_id:
            seed += 1
        return draw(entry, dataset_id, seed), seed


def help_link(path: str) -> dcc.Link:
    """A small link to the in-app help of the view at ``path`` (``/help?view=<page>``)."""
    view = path.strip("/").replace("-", "_") or "overview"
    return dcc.Link("help for this view", href=f"/help?view={view}", className="small help-link",
                    id=f"help-link-{view}")


def thumb_url(entry, dataset_id, index, thumb=True):
    """PNG URL of a dataset map (None for a latents-only dataset: no image)."""
    if entry is None or not entry.has_maps:
        return None
    from dashboard.images import map_image_url

    return map_image_url(dataset_id, int(index), thumb=thumb)


def message(text, color: str = "info", **kwargs) -> dbc.Alert:
    """A clear, non-failing message (e.g. 'this dataset holds latents only')."""
    return dbc.Alert(text, color=color, **kwargs)


NO_MAPS_TEXT = ("This dataset holds latents only (no C2 maps), so maps cannot be shown; "
                "the metadata of the maps are listed instead.")


def format_value(value, unit: str = "", *, sector: bool = False, digits: int = 4) -> str:
    """A metadata value for people: ``"unknown"`` where it is missing (NaN, None, sector 0),
    else the number (with ``unit``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "unknown" if value is None or str(value).strip() in ("", "nan", "None") else str(value)
    if not np.isfinite(v) or (sector and int(v) <= 0):
        return "unknown"
    text = str(int(v)) if sector else f"{v:.{digits}g}"
    return f"{text} {unit}".strip()


def map_caption(entry, index: int, labels=None) -> str:
    """'map 17 · t = 120 s · sector 5 (flow) · cluster 2'."""
    meta = entry.meta
    parts = [f"map {int(index)}", f"t = {float(meta['time'][index]):.0f} s"]
    if "sector" in meta:
        cls = entry.sector_class()[index]
        parts.append(f"sector {int(meta['sector'][index])}" + (f" ({cls})" if cls != "other" else ""))
    if labels is not None:
        parts.append(f"cluster {int(labels[index])}")
    return " · ".join(parts)


def thumbnail_grid(entry, indices, labels=None, *, id_prefix: str = "thumb", max_items: int = 48,
                   click_type: str | None = None):
    """A grid of map thumbnails (PNG route) with captions; a clear message and a metadata list
    for a latents-only dataset. Never more than ``max_items`` images.

    With ``click_type`` each thumbnail is a button with id ``{"type": click_type, "index": map
    index}`` (its ``n_clicks`` opens the page's enlarged view) instead of a link to the PNG."""
    from .images import map_image_url

    indices = [int(i) for i in indices][:max_items]
    if not entry.has_maps:
        return html.Div([message(NO_MAPS_TEXT, color="secondary", className="no-maps-message"),
                         html.Ul([html.Li(map_caption(entry, i, labels)) for i in indices], className="small")])
    cells = []
    for i in indices:
        caption = map_caption(entry, i, labels)
        img = html.Img(src=map_image_url(entry.id, i, thumb=True), alt=caption, title=caption,
                       width=96, height=96, className="map-thumb")
        if click_type:
            link = html.A(img, id={"type": click_type, "index": i}, n_clicks=0, role="button",
                          style={"cursor": "pointer"}, title=f"{caption}: click to enlarge with its g2")
        else:
            link = html.A(img, href=map_image_url(entry.id, i), target="_blank")
        cells.append(html.Figure([
            link,
            html.Figcaption(" · ".join(caption.split(" · ")[2:]) or caption, className="small text-muted")],
            className="thumb-cell m-1"))
    return html.Div(cells, className="thumb-grid d-flex flex-wrap", id=f"{id_prefix}-grid")


def map_detail(entry, index: int, labels=None, *, reconstruction: bool = False, extra_rows=(), key: str = "detail"):
    """One map drawn as a beamline viewer does (t1 / t2 in s, colour bar, percentile limits,
    diagonal fix) next to its g2 and fit (:func:`dashboard.c2view.c2_view`, ids from ``key``),
    optionally its reconstruction, and its metadata table."""
    from .c2view import c2_view

    view_key = key  # ``key`` is reused by the metadata loop below
    index = int(index)
    meta = entry.meta
    rows = [("map index", index), ("time (s)", f"{float(meta['time'][index]):.1f}")]
    for key, label in (("sector", "sector"), ("phi", "phi (deg)"), ("q", "q (1/Å)")):
        if key in meta:
            rows.append((label, format_value(meta[key][index], sector=key == "sector")))
    rows.append(("class", entry.sector_class()[index]))
    if labels is not None:
        rows.append(("cluster", int(labels[index])))
    score = entry.result("dynamics_score")
    if score is not None:
        rows.append(("dynamics score", f"{float(score[index]):.3g}"))
    if "source" in meta:
        rows.append(("source", str(meta["source"][index])))
    rows += list(extra_rows)
    table = dbc.Table([html.Tbody([html.Tr([html.Th(k, className="fw-normal text-muted"), html.Td(str(v))])
                                   for k, v in rows])], size="sm", className="map-meta mb-0")
    images = []
    if not entry.has_maps:
        images.append(message(NO_MAPS_TEXT.split(", so")[0] + ": no measured map to show.", color="secondary",
                              className="no-maps-message"))
    source = "map"
    if reconstruction:
        ok, note = entry.reconstruction_status()
        if ok:
            source = "map+recon"
        else:
            images.append(html.Div(f"No reconstruction: {note}.", className="small text-muted recon-note"))
    caption = html.Div(map_caption(entry, index, labels), className="small fw-semibold map-caption")
    view = c2_view(entry, index, key=view_key, source=source, title=f"C2 of map {index}")
    return html.Div([caption, *images, view, table], className="map-detail")


# --------------------------------------------------------------------------- the app
def _navbar(services: Services, options: list[dict]) -> dbc.Navbar:
    links = [dbc.NavItem(dbc.NavLink(p.TITLE, href=p.PATH, id=f"nav-{_page_key(p)}", className="px-2"))
             for p in services.pages]
    import flask

    from .auth import current_role

    if flask.has_request_context() and current_role() == "admin":  # cross link to the studies (admin pages)
        links.append(dbc.NavItem(dbc.NavLink("Admin", href="/admin/", external_link=True, id="nav-admin",
                                             className="px-2 text-warning")))
    selector = dcc.Dropdown(id="dataset-select", options=options, value=None, clearable=False, searchable=True,
                            placeholder="dataset", style={"minWidth": "14rem", "color": "#212529"})
    return dbc.Navbar(dbc.Container([
        dbc.NavbarBrand("AI-NERD", href="/", className="fw-bold"),
        dbc.Nav(links, navbar=True, className="me-auto flex-wrap"),
        html.Div([html.Small("dataset", className="text-light me-2"), selector],
                 className="d-flex align-items-center"),
    ], fluid=True), color="dark", dark=True, className="mb-3")


def _page_key(page) -> str:
    return page.__name__.rsplit(".", 1)[-1].replace("_", "-")


def _shell(services: Services):
    def layout():
        entries = [e for e in services.catalog.entries() if e.error is None]
        nav = _navbar(services, [{"label": e.id + ("" if e.has_results else " (not precomputed)"), "value": e.id}
                                 for e in entries])
        return html.Div([
            dcc.Location(id="url", refresh=False),
            dcc.Store(id=DATASET_STORE),
            dcc.Store(id=view_state.WRITTEN),
            dcc.Store(id=clusterings.SESSION_STORE, storage_type="session"),
            dcc.Store(id=figure_export.STAMP_STORE), dcc.Store(id="figure-export-done"),
            nav,
            live_bar(),  # live updates while a watcher appends (dashboard.live)
            dbc.Container(dcc.Loading(html.Div(id="page-content"), delay_show=400, type="dot",
                                      # only page routing blanks the page; jobs show their own progress
                                      target_components={"page-content": "children"}), fluid=True,
                          className="pb-4"),
        ])
    return layout


def _render(services: Services, pathname: str, dataset_id: str | None, query: dict, state: dict | None = None,
            session_ids=None):
    page = next((p for p in services.pages if p.PATH == (pathname or "/")), None)
    if page is None:
        return message([html.B("No such page. "), "Use the links above."], color="warning")
    entry = services.catalog.get(dataset_id)
    if entry is None and page.PATH != "/" and getattr(page, "REQUIRES", ()):
        return message("No dataset is available: put precomputed .h5 files in the data folder "
                       f"({services.config.data_dir}).", color="warning")
    missing = missing_requirements(page, entry) if entry is not None else []
    if missing:
        return html.Div([html.H4(page.TITLE),
                         message([f"The dataset '{entry.id}' ", _REQUIREMENT_TEXT.get(missing[0], f"lacks {missing[0]}"),
                                  "."], color="warning", id="page-requirement-message")])
    ctx = PageContext(dataset=entry, dataset_id=entry.id if entry else None,
                      datasets=services.catalog.entries(), query=query, services=services,
                      state=dict(state if state is not None else view_state.parse("?" + urlencode(query))),
                      session_clusterings=[r for r in (session_ids or []) if clusterings.is_result_id(r)][-20:])
    try:
        return page.layout(ctx)
    except Exception as exc:  # noqa: BLE001 - show, do not break the app
        log.exception("page %s failed for dataset %s", page.PATH, dataset_id)
        return message(f"This page failed for dataset '{dataset_id}': {exc}", color="danger")


def _register_router(app: dash.Dash, services: Services) -> None:
    """One callback routes: the path picks the page, the query (:mod:`dashboard.view_state`)
    its state. A query the page wrote itself (recorded in ``view_state.WRITTEN``) does not
    rebuild the page; any other (a link, reload, back / forward) rebuilds it from the URL."""
    nav_outputs = [Output(f"nav-{_page_key(p)}", "href") for p in services.pages]
    nav_active = [Output(f"nav-{_page_key(p)}", "active") for p in services.pages]

    @app.callback(Output("page-content", "children"), Output(DATASET_STORE, "data"),
                  Output("url", "search"), Output("dataset-select", "value"), Output(view_state.WRITTEN, "data"),
                  Output(figure_export.STAMP_STORE, "data"),
                  *nav_outputs, *nav_active,
                  Input("url", "pathname"), Input("url", "search"), Input("dataset-select", "value"),
                  State(view_state.WRITTEN, "data"), State(DATASET_STORE, "data"),
                  State(clusterings.SESSION_STORE, "data"))
    def route(pathname, search, selected, written, shown_dataset, session_ids):
        path = pathname or "/"
        state = view_state.parse(search)
        triggered = dash.callback_context.triggered_id
        if triggered == "dataset-select" and selected and selected != state.get("dataset"):
            # another dataset: indices (times, maps, selections) mean nothing there
            state = {k: v for k, v in state.items() if k in ("k", "color", "panels", "bg", "compare")}
            state["dataset"] = selected
        entry = services.catalog.resolve(state.get("dataset"))
        dataset_id = entry.id if entry else None
        if dataset_id:
            state["dataset"] = dataset_id
        else:
            state.pop("dataset", None)
        new_search = view_state.serialise(state)
        hrefs = [view_state.href(p.PATH, view_state.shared(new_search, dataset_id)) for p in services.pages]
        active = [p.PATH == path for p in services.pages]
        page_wrote_it = (triggered == "url" and isinstance(written, dict) and written.get("path") == path
                         and written.get("search") == new_search and shown_dataset == dataset_id)
        if page_wrote_it:
            content = dash.no_update
        else:
            query = parse_query(new_search)
            content = _render(services, path, dataset_id, query, state, session_ids)
        return (content, dataset_id if dataset_id != shown_dataset else dash.no_update,
                new_search if new_search != (search or "") else dash.no_update,
                dataset_id if dataset_id != selected else dash.no_update,
                {"path": path, "search": new_search},
                figure_export.stamp_text(entry) if dataset_id != shown_dataset else dash.no_update, *hrefs, *active)


def init_explorer(server, config) -> dash.Dash:
    """Mount the explorer on ``server`` at '/' and return the Dash app."""
    from .background import make_background_manager
    from .images import init_images

    from .blinding import blinded_catalog

    # datasets of open blind-evaluation studies are withheld from non-admin requests
    catalog = blinded_catalog(server, config, Catalog(config.data_dir))
    manager = make_background_manager(config)
    app = dash.Dash(__name__, server=server, url_base_pathname="/", title="AI-NERD",
                    assets_folder=str(ASSETS),
                    suppress_callback_exceptions=True, background_callback_manager=manager,
                    update_title=None)
    init_images(server, config, catalog)
    services = Services(app=app, config=config, catalog=catalog, background_manager=manager,
                        register_background=functools.partial(register_background_callback, app, manager),
                        pages=pages_pkg.load_pages())
    server.extensions["ainerd_explorer"] = services
    app.layout = _shell(services)
    _register_router(app, services)
    view_state.register_forwarder(app)
    figure_export.init_export_routes(server)
    app.clientside_callback(
        dash.ClientsideFunction("ainerd_export", "run"), Output("figure-export-done", "data"),
        Input({"type": "figure-export", "graph": dash.ALL, "format": dash.ALL}, "n_clicks"),
        State({"type": "figure-stamp", "graph": dash.ALL}, "value"), State(figure_export.STAMP_STORE, "data"),
        prevent_initial_call=True)
    register_live_callbacks(app, services)
    from .c2view import register_callbacks as register_c2view

    register_c2view(app, catalog)  # the C2-map views' diagonal / colour-limit controls, all pages
    for page in services.pages:
        register = getattr(page, "register_callbacks", None)
        if register is None:
            continue
        try:
            register(app, services)
        except Exception:  # noqa: BLE001 - a broken page must not take the app down
            log.exception("page %s: register_callbacks failed", page.__name__)
    return app
