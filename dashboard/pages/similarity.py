"""``/similarity``: nearest neighbours of a target map in latent space vs raw and smoothed pixels.

Smoothed pixels (:func:`ainerd_core.similarity.smoothed_rows`, Gaussian
:data:`~ainerd_core.similarity.SMOOTH_SIGMA_PX` px) are the honest baseline: on simulated maps
they find same-physics neighbours more often than the shipped latent space (docs/model.md 1b).

Pick a target by clicking the small UMAP, typing a map index, or uploading a ``.npy`` map of any
square size (resampled to 256 x 256 by area averaging, min-max normalised). Dataset targets use
the precomputed ``similarity/*_index`` tables; an uploaded map is encoded with the dataset's
model and compared pixel-wise with every stored map in a background job with a progress bar.
Neighbours are shown nearest first with rank and distance, failures included: a table lists each
neighbour's metadata and, with simulator ground truth, whether it is relevant
(:func:`ainerd_core.retrieval.relevance`). Below: the 1st / 10th / 100th neighbour distance
distributions of all maps, latent vs raw vs smoothed vs PCA.
"""
from __future__ import annotations

import base64
import logging
import time

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dash_table, dcc, html

from dashboard.explorer import graph_card, message, register_csv_download, thumb_url
from dashboard import uploads, view_state
from dashboard.exports import csv_text, figure_to_csv
from dashboard.figures import similarity as figures
from dashboard.pages import DATASET_STORE
from dashboard.validation import upload_check_js, upload_limit_bytes
from ainerd_core.similarity import PIXEL_SPACES, SMOOTH_SIGMA_PX

log = logging.getLogger(__name__)

PATH = "/similarity"
TITLE = "Similarity"
ORDER = 50
REQUIRES = ("results",)

K_CHOICES = (12, 24, 48)
N_COLS = 6
MAX_UPLOAD_SIDE = 4096
RANKS = (1, 10, 100)
GRID_SPACES = ("latent", "raw", "smoothed")   # one neighbour grid each, in this order


# =========================================================================== shared helpers
def png_data_uri(arr, size=None) -> str:
    """A server-rendered PNG of an array that is not a stored map (an uploaded target)."""
    from dashboard.images import render_c2_png

    return "data:image/png;base64," + base64.b64encode(render_c2_png(arr, size=size)).decode()


# =========================================================================== upload parsing
def parse_upload(contents: str, filename: str | None) -> np.ndarray:
    """A dcc.Upload ``contents`` string of a .npy file -> normalised (256, 256) float32 map.

    Raises ValueError with a message for the user."""
    if not contents or "," not in contents:
        raise ValueError("empty upload")
    if filename and not filename.lower().endswith(".npy"):
        raise ValueError(f"{filename}: upload a NumPy .npy file holding one square 2-d map")
    from dashboard.validation import decode_upload, load_npy_bytes

    # the header is checked before anything is allocated (empty files, 10^12-element claims)
    arr = load_npy_bytes(decode_upload(contents, filename), filename or "upload")
    from ainerd_core.errors import InputError
    from ainerd_core.readers.resample import prepare_target

    try:  # area averaging to 256 x 256 and min-max normalisation, as for every reader
        return prepare_target(arr, filename or "upload", max_side=MAX_UPLOAD_SIDE)
    except InputError as exc:
        raise ValueError(str(exc)) from None


# =========================================================================== neighbour data
def precomputed_neighbours(entry, index: int, space: str, k: int):
    """(index, distance) of map ``index``'s first k neighbours from ``similarity/<space>_*``."""
    idx = entry.result(f"similarity/{space}_index")
    dist = entry.result(f"similarity/{space}_distance")
    if idx is None or dist is None:
        return None
    return np.asarray(idx[index, :k]), np.asarray(dist[index, :k])


def relevance_of(entry, target: int | None, neighbours) -> list:
    """Ground-truth relevance of each neighbour to a dataset target (None where unknown)."""
    truth = entry.truth
    if target is None or not truth or "relaxation_rate" not in truth:
        return [None] * len(neighbours)
    from ainerd_core.retrieval import relevance

    rel = relevance(truth, np.asarray([target]))[0]
    return [bool(rel[int(i)]) for i in neighbours]


def neighbour_rows(entry, space, idx, dist, relevant):
    classes = entry.sector_class()
    meta = entry.meta
    rows = []
    for r, (i, d, v) in enumerate(zip(idx, dist, relevant), start=1):
        i = int(i)
        rows.append({"space": space, "rank": r, "index": i, "distance": round(float(d), 5),
                     "time_s": round(float(meta["time"][i]), 1), "sector": int(meta["sector"][i]),
                     "class": str(classes[i]), "source": str(meta["source"][i]) if "source" in meta else "",
                     "relevant": "" if v is None else ("yes" if v else "NO")})
    return rows


def _hover(entry, idx):
    meta, classes = entry.meta, entry.sector_class()
    return [f"map {int(i)}: t = {meta['time'][int(i)]:.0f} s, sector {int(meta['sector'][int(i)])} ({classes[int(i)]})"
            for i in idx]


# =========================================================================== layout
def _notes(entry) -> list:
    """What this dataset cannot do (latents only, no raw neighbours), said up front."""
    if not entry.has_maps:
        sha = entry.result_attrs.get("model_sha256")
        return [message([html.B("This dataset holds latents only. "),
                         "No C2 maps: no thumbnails and no raw-pixel neighbours; latent-space neighbours are "
                         "listed in the grid and the table. An uploaded map can only be searched in the latent "
                         "space, and only if the model that made these latents is on this server",
                         f" (model sha256 {sha[:12]}…)" if isinstance(sha, str) and sha else
                         " (this dataset does not record which model that was, so an upload cannot be encoded)",
                         "; otherwise the upload reports that nothing could be searched."],
                        "warning", id="similarity-latents-only")]
    if not entry.has_result("similarity/raw_index"):
        return [message("No precomputed raw-pixel neighbours (live maps arrived since the last precompute, or it "
                        "ran with --no-raw-neighbours): search a map's pixel neighbours with the button under the "
                        "target.", "secondary")]
    return []


def _picker(entry, start: int, config):
    """The target card: small UMAP, map index, upload (checked in the browser first), k."""
    umap = entry.result("umap")
    return dbc.Card([dbc.CardHeader("Target"), dbc.CardBody([
        dcc.Graph(id="similarity-umap", figure=figures.target_umap_figure(umap, labels=entry.result("labels"), target=start)
                  if umap is not None else {}, config={"displaylogo": False, "displayModeBar": False},
                  style={"height": "330px"}),
        html.Div([html.Span("map index", className="small me-2"),
                  dcc.Input(id="similarity-index", type="number", min=0, max=entry.n_maps - 1, step=1, value=start,
                            debounce=True, style={"width": "7rem"}),
                  html.Span(f" of 0..{entry.n_maps - 1}", className="small text-muted ms-1")],
                 className="d-flex align-items-center mb-2"),
        # no accept/max_size here: the upload component drops refused files without a word;
        # the clientside check (upload_check_js) says why instead
        dcc.Upload(id="similarity-upload", children=html.Div(["drop or ", html.A("choose a .npy map"),
                                                              f" (any square size, at most "
                                                              f"{upload_limit_bytes(config) / 2**20:.1f} MiB)"]),
                   multiple=False, max_size=-1,
                   className="border border-secondary rounded p-2 text-center small mb-2",
                   style={"borderStyle": "dashed", "cursor": "pointer"}),
        dbc.Progress(id="similarity-upload-progress", value=0, label="", className="mb-2", style={"height": "1rem"}),
        html.Div(id="similarity-upload-status", className="small mb-2"),
        html.Div(id="similarity-upload-error", className="small mb-2 text-danger"),
        dcc.Store(id="similarity-upload-checked"),
        html.Div(id="similarity-target-view"),
        # a map whose pixel neighbours were not precomputed (a live row, an older precompute)
        html.Div([dbc.Button("search raw and smoothed pixels for this map", id="similarity-pixel-search",
                             size="sm", color="secondary", outline=True, className="mt-2 mb-1"),
                  dbc.Progress(id="similarity-pixel-progress", value=0, label="", style={"height": "0.8rem"})],
                 id="similarity-pixel-search-box", style={"display": "none"}),
        dbc.Label("neighbours shown", className="small mb-0 mt-2"),
        dcc.Dropdown(id="similarity-k", options=[{"label": str(k), "value": k} for k in K_CHOICES], value=K_CHOICES[0],
                     clearable=False),
    ])], className="mb-3")


def _table_card():
    return dbc.Card([dbc.CardHeader("Every neighbour, failures included"), dbc.CardBody(dash_table.DataTable(
        id="similarity-table", data=[], page_size=24, sort_action="native", filter_action="native",
        export_format="csv", export_headers="display",
        columns=[{"name": c, "id": c} for c in ("space", "rank", "index", "distance", "time_s", "sector", "class",
                                                "relevant", "source")],
        style_cell={"fontSize": "0.8rem", "padding": "3px"}, style_header={"fontWeight": "bold"},
        style_data_conditional=[{"if": {"filter_query": "{relevant} = 'NO'"}, "backgroundColor": "#fde2e2"},
                                {"if": {"filter_query": "{relevant} = 'yes'"}, "backgroundColor": "#e2f5e2"}]))],
        className="mb-3")


def _focus_card():
    return dbc.Card([dbc.CardHeader(html.Div([html.Span("Enlarged neighbour (click a neighbour above)",
                                                        className="fw-semibold me-auto", id="similarity-focus-title"),
                                              dbc.Button("make it the target", id="similarity-make-target", size="sm",
                                                         color="primary", outline=True, disabled=True)],
                                             className="d-flex align-items-center")),
                     dbc.CardBody(html.Div(html.Div("Clicking a neighbour enlarges it here with its axes; the target "
                                                    "stays until you choose another one.",
                                                    className="small text-muted"),
                                           id="similarity-focus-view"))], className="mb-3", id="similarity-focus-card")


def layout(ctx):
    entry = ctx.dataset
    start = view_state.index_or_none(ctx.state.get("target"), entry.n_maps) or 0
    # a link to an uploaded target (saved on the server when it was searched) shows it again
    saved = uploads.load(ctx.instance_dir, entry, ctx.state.get("upload"))
    grids = html.Div([
        graph_card("similarity-latent-grid", _empty_grid("latent"), title="latent space (64-d) neighbours"),
        graph_card("similarity-raw-grid", _empty_grid("raw"), title="raw-pixel (65,536-d) neighbours"),
        graph_card("similarity-smoothed-grid", _empty_grid("smoothed"),
                   title=f"smoothed-pixel neighbours (Gaussian {SMOOTH_SIGMA_PX:g} px, then renormalised)",
                   note="The baseline a latent space has to beat: pixels with the speckle noise filtered out. "
                        "On simulated maps with known physics it finds same-physics maps more often than the "
                        "shipped latent space (docs/model.md, section 1b)."),
    ])
    dist_fig = figures.distance_distribution_figure(_all_distances(entry), RANKS)
    return html.Div([
        html.H3("Similarity: latent space vs raw and smoothed pixels"),
        html.P(["Euclidean nearest neighbours of a target map. With ground truth, frames are green for relevant and "
                "red for not relevant neighbours (",
                html.Span("rule: similar relaxation rate, same fringe and burst state", className="fst-italic"), ")."],
               className="text-muted"),
        *_notes(entry),
        dcc.Store(id="similarity-target", data={"kind": "index", "index": start, "t": 0}),
        dcc.Store(id="similarity-upload-result", data={**saved, "t": 1} if saved else None),
        # what is shown, for the URL: the dataset target's index (-1: an upload) and the upload's id
        dcc.Store(id="similarity-shown-target", data=-1), dcc.Store(id="similarity-shown-upload", data=""),
        dcc.Store(id="similarity-pixel-result"),
        view_state.url_store(PATH),
        dbc.Row([dbc.Col(_picker(entry, start, ctx.services.config), md=3), dbc.Col(grids, md=9)]),
        dbc.Card([dbc.CardHeader("The target map, its g2 and fit", className="fw-semibold"),
                  dbc.CardBody(html.Div(id="similarity-view"))], className="mb-3", id="similarity-view-card"),
        _focus_card(),
        dcc.Store(id="similarity-focus", data=-1),
        _table_card(),
        graph_card("similarity-dist", dist_fig, title="Neighbour-distance distributions (all maps)"),
    ], id="similarity-page")


def _empty_grid(space):
    fig = figures.image_grid_figure([], 1, title=None)
    fig.update_layout(height=60, meta={"space": space, "index": [], "distance": []})
    return fig


def _all_distances(entry) -> dict:
    out = {}
    for space in ("latent", "raw", "smoothed", "pca"):
        d = entry.result(f"similarity/{space}_distance")
        if d is not None:
            out[space] = d
    return out


# =========================================================================== callbacks
def register_callbacks(app, services):
    catalog, config = services.catalog, services.config
    app.clientside_callback(upload_check_js(config), Output("similarity-upload-checked", "data"),
                            Output("similarity-upload-error", "children"), Input("similarity-upload", "contents"),
                            State("similarity-upload", "filename"), prevent_initial_call=True)
    _register_focus(app, catalog)
    _register_target(app, catalog)
    _register_upload(services)
    _register_pixel_search(services)
    _register_render(app, catalog)
    _register_downloads(app, catalog)
    view_state.register_writer(app, PATH, {"target": Input("similarity-shown-target", "data"),
                                           "upload": Input("similarity-shown-upload", "data")},
                               convert={"target": lambda i: i if isinstance(i, int) and i >= 0 else None,
                                        "upload": lambda u: u if uploads.is_upload_id(u) else None})


def _clicked_index(click):
    """The map index of a click on a figure whose points carry it as (first) customdata."""
    if not click or not click.get("points"):
        return None
    cd = click["points"][0].get("customdata")
    return cd[0] if isinstance(cd, list) else cd


def _register_focus(app, catalog) -> None:
    """A click on a neighbour enlarges it; it does not replace the target (an upload stays)."""
    grids = [f"similarity-{space}-grid" for space in GRID_SPACES]

    @app.callback(Output("similarity-focus", "data"), *[Input(g, "clickData") for g in grids],
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def focus_neighbour(*args):
        *clicks, dataset_id = args
        entry = catalog.get(dataset_id)
        trig = dash.callback_context.triggered_id
        click = clicks[grids.index(trig)] if trig in grids else None
        if entry is None or not click or not click.get("points"):
            return dash.no_update
        try:
            index = int(_clicked_index(click))
        except (TypeError, ValueError):
            return dash.no_update
        return index if 0 <= index < entry.n_maps else dash.no_update

    @app.callback(Output("similarity-focus-view", "children"), Output("similarity-focus-title", "children"),
                  Output("similarity-make-target", "disabled"), Input("similarity-focus", "data"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def show_focus(index, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or not isinstance(index, int) or not 0 <= index < entry.n_maps:
            return dash.no_update, dash.no_update, dash.no_update
        from dashboard.c2view import c2_view
        from dashboard.explorer import map_caption

        title = f"Enlarged neighbour: {map_caption(entry, index)}"
        if not entry.has_maps and "decoded" not in str(entry.result_attrs.get("dynamics_source") or ""):
            return (html.Div("This dataset holds latents only: no map to enlarge.", className="small text-muted"),
                    title, False)
        return c2_view(entry, index, key="similarity-nb", title=f"C2 of map {index} (neighbour)"), title, False


def _register_target(app, catalog) -> None:
    """The target: a click on the small UMAP, a typed index, or 'make it the target'."""
    @app.callback(Output("similarity-target", "data"), Output("similarity-index", "value"),
                  Input("similarity-umap", "clickData"), Input("similarity-index", "value"),
                  Input("similarity-make-target", "n_clicks"),
                  State("similarity-focus", "data"),
                  State(DATASET_STORE, "data"), State("similarity-target", "data"), prevent_initial_call=True)
    def pick_target(umap_click, typed, make_target, focus, dataset_id, current):
        entry = catalog.get(dataset_id)
        if entry is None:
            return dash.no_update, dash.no_update
        trig = dash.callback_context.triggered_id
        if trig == "similarity-index":
            if typed is not None and (current or {}).get("index") == typed and (current or {}).get("t", 0) > 0:
                return dash.no_update, dash.no_update  # echo of a click that already set this target
            index = typed
        elif trig == "similarity-make-target":
            if not make_target:
                return dash.no_update, dash.no_update
            index = focus
        else:
            index = _clicked_index(umap_click)
        try:
            index = int(index)
        except (TypeError, ValueError):
            return dash.no_update, dash.no_update
        if not 0 <= index < entry.n_maps:
            return dash.no_update, dash.no_update
        return ({"kind": "index", "index": index, "t": time.time()},
                index if trig != "similarity-index" else dash.no_update)


def _search_upload(entry, target, filename, set_progress) -> dict:
    """Search an uploaded map's neighbours in latent space (and raw pixels where the dataset has
    maps); what failed is said in ``notes``, the other space is still searched."""
    k_max = max(K_CHOICES)
    result = {"kind": "upload", "name": filename or "upload.npy", "t": time.time(),
              "thumb": png_data_uri(target, size=96), "spaces": {}, "notes": []}
    set_progress((5, "encoding"))
    try:
        result["spaces"]["latent"] = _upload_latent(entry, target, k_max)
        from ainerd_core.novelty import novelty_message

        flag = novelty_message(result["spaces"]["latent"].get("novelty", 0.0))
        if flag:
            result["notes"].append(flag)
    except Exception as exc:  # noqa: BLE001 - report, still try raw pixels
        log.warning("latent search of an upload failed: %s", exc)
        result["notes"].append(f"latent space: {exc}")
    if entry.has_maps:
        try:
            result["spaces"].update(_search_pixels(entry, target, k_max, set_progress))
        except Exception as exc:  # noqa: BLE001
            log.warning("pixel search of an upload failed: %s", exc)
            result["notes"].append(f"raw and smoothed pixels: {exc}")
    else:
        result["notes"].append("raw and smoothed pixels: this dataset holds latents only")
    return result


def _register_upload(services) -> None:
    """The upload's search, a background job with a progress bar."""
    config = services.config

    @services.register_background(
        Output("similarity-upload-result", "data"), Output("similarity-upload-status", "children"),
        Input("similarity-upload-checked", "data"), State("similarity-upload", "filename"),
        State("similarity-k", "value"), State(DATASET_STORE, "data"),
        progress=[Output("similarity-upload-progress", "value"), Output("similarity-upload-progress", "label")],
        running=[(Output("similarity-upload", "disabled"), True, False)],
        prevent_initial_call=True, interval=300)
    def search_upload(set_progress, contents, filename, k, dataset_id):
        if not contents:
            return dash.no_update, dash.no_update
        set_progress((2, "reading"))
        try:
            target = parse_upload(contents, filename)
        except ValueError as exc:
            set_progress((0, ""))
            return dash.no_update, dbc.Alert(str(exc), color="danger", className="p-2 mb-0")
        from dashboard.catalog import Catalog

        entry = Catalog(config.data_dir).get(dataset_id)
        if entry is None:
            return dash.no_update, dbc.Alert("no such dataset", color="danger", className="p-2 mb-0")
        t0 = time.perf_counter()
        result = _search_upload(entry, target, filename, set_progress)
        secs = time.perf_counter() - t0
        if not result["spaces"]:  # say so, and keep the current target on screen
            set_progress((0, ""))
            return dash.no_update, dbc.Alert([html.B(f"{result['name']} was not searched: "),
                                              "; ".join(result["notes"])], color="danger", className="p-2 mb-0",
                                             id="similarity-upload-failed")
        result["preview"] = np.round(target[::2, ::2], 3).tolist()  # 128 x 128, drawn with axes
        try:  # kept on the server so that the page's link shows this search again
            result["id"] = uploads.save(config.instance_dir, entry, target, result)
        except OSError as exc:
            log.warning("an upload's search could not be saved for its link: %s", exc)
        set_progress((100, "done"))
        status = f"{result['name']}: searched {entry.n_maps} maps in {secs:.1f} s"
        return result, html.Span([status] + [html.Br()] + [html.Span(n, className="text-body-secondary d-block")
                                                           for n in result["notes"]])


def _register_pixel_search(services) -> None:
    """Raw and smoothed neighbours of a dataset map that has none precomputed (new live rows,
    datasets precomputed before the smoothed space existed): exact, on request, in the
    background (every stored map is read once)."""
    config = services.config

    @services.register_background(
        Output("similarity-pixel-result", "data"), Input("similarity-pixel-search", "n_clicks"),
        State("similarity-target", "data"), State(DATASET_STORE, "data"),
        progress=[Output("similarity-pixel-progress", "value"), Output("similarity-pixel-progress", "label")],
        running=[(Output("similarity-pixel-search", "disabled"), True, False)],
        prevent_initial_call=True, interval=300)
    def search_pixels(set_progress, n_clicks, target, dataset_id):
        from dashboard.catalog import Catalog

        entry = Catalog(config.data_dir).get(dataset_id)
        index = view_state.index_or_none((target or {}).get("index"), entry.n_maps if entry else 0)
        if not n_clicks or entry is None or index is None or not entry.has_maps:
            return dash.no_update
        spaces = _search_pixels(entry, index, max(K_CHOICES), set_progress)
        set_progress((100, "done"))
        return {"dataset": dataset_id, "index": index, "spaces": spaces}


def _missing_pixel_spaces(entry, nn) -> list:
    """The pixel spaces a dataset target lacks neighbours in, where its maps could give them."""
    return [space for space in PIXEL_SPACES if space not in nn] if entry.has_maps else []


# =========================================================================== rendering a target
def _add_searched(spaces: dict, k, nn: dict, tdist: dict, only=GRID_SPACES) -> None:
    """Put a background search's ``{space: {"index": [...], "distance": [...]}}`` (an upload's,
    or a dataset map's pixel search) into ``nn`` (first k) and ``tdist`` (all), for ``only``."""
    for space in only:
        s = spaces.get(space)
        if s is not None:
            nn[space] = (np.asarray(s["index"][:k]), np.asarray(s["distance"][:k]))
            tdist[space] = np.asarray(s["distance"])


def _upload_neighbours(upload, k):
    """({space: (index (k,), distance (k,))}, {space: all distances}, small view) of an upload."""
    nn, tdist = {}, {}
    _add_searched(upload["spaces"], k, nn, tdist)
    view = html.Div([html.Img(src=upload["thumb"], style={"width": "96px"}, id="similarity-target-img"),
                     html.Div(f"uploaded: {upload['name']}", className="small")])
    return nn, tdist, view


def _map_neighbours(entry, dataset_id, tindex, k):
    """The same for map ``tindex`` of the dataset (precomputed tables, else latents searched)."""
    nn, tdist = {}, {}
    for space in GRID_SPACES:
        got = precomputed_neighbours(entry, tindex, space, max(k, max(RANKS)))
        if got is None and space == "latent":
            got = _latent_fallback(entry, tindex, max(k, max(RANKS)))
        if got is not None:
            nn[space] = (got[0][:k], got[1][:k])
            tdist[space] = got[1]
    meta = entry.meta
    url = thumb_url(entry, dataset_id, tindex, thumb=True)
    view = html.Div([html.Img(src=url, style={"width": "96px"}, id="similarity-target-img") if url else None,
                     html.Div(f"map {tindex}: t = {meta['time'][tindex]:.0f} s, sector {int(meta['sector'][tindex])}"
                              f" ({entry.sector_class()[tindex]})", className="small")])
    return nn, tdist, view


def _missing_grid(entry, space, tindex):
    fig = _empty_grid(space)
    name = {"raw": "raw-pixel", "smoothed": "smoothed-pixel", "latent": "latent"}[space]
    if space != "latent" and not entry.has_maps:
        why = f"latents only: no C2 maps, so no {name} neighbours"
    elif space == "latent" or tindex is None:
        why = f"no {name} neighbours available"
    else:
        why = f"no precomputed {name} neighbours of this map: search them with the button under the target"
    fig.add_annotation(text=why, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=13, color="#333"))
    fig.update_layout(height=110, title=None)
    return fig


def _grids_and_rows(entry, dataset_id, nn, tindex):
    """({space: neighbour grid figure}, table rows) for the neighbours ``nn`` of the target."""
    figs, rows = {}, []
    for space in GRID_SPACES:
        if space not in nn:
            figs[space] = _missing_grid(entry, space, tindex)
            continue
        idx, dist = nn[space]
        rel = relevance_of(entry, tindex, idx)
        urls = [thumb_url(entry, dataset_id, i) for i in idx]
        figs[space] = figures.neighbour_grid_figure(space, idx, dist, urls, n_cols=N_COLS, relevant=rel,
                                              hover=_hover(entry, idx),
                                              title=f"{figures.SPACE_NAMES[space]}: {len(idx)} nearest"
                                              + ("" if tindex is None else f" of map {tindex}"))
        rows += neighbour_rows(entry, space, idx, dist, rel)
    return figs, rows


def _target_detail(entry, tindex, upload):
    """The big view of the target: its C2, g2 and fit, or an uploaded map's preview."""
    if tindex is None:
        return html.Div([
            dcc.Graph(id="similarity-upload-map", config={"displaylogo": False},
                      figure=figures.map_heatmap_figure(upload.get("preview") or [[0]],
                                                  f"uploaded target: {upload['name']} (128 x 128 preview)")),
            html.Div("An uploaded map has no precomputed g2 or fit. It stays the target until you upload "
                     "another map, type a map index, click the small UMAP or make a neighbour the target.",
                     className="small text-muted")])
    from dashboard.c2view import c2_view

    return c2_view(entry, tindex, key="similarity", title=f"C2 of map {tindex} (target)")


def _register_render(app, catalog) -> None:
    @app.callback(Output("similarity-latent-grid", "figure"), Output("similarity-raw-grid", "figure"),
                  Output("similarity-smoothed-grid", "figure"), Output("similarity-table", "data"),
                  Output("similarity-dist", "figure"),
                  Output("similarity-umap", "figure"), Output("similarity-target-view", "children"),
                  Output("similarity-view", "children"), Output("similarity-pixel-search-box", "style"),
                  Output("similarity-shown-target", "data"), Output("similarity-shown-upload", "data"),
                  Input("similarity-target", "data"), Input("similarity-upload-result", "data"),
                  Input("similarity-k", "value"), Input("similarity-pixel-result", "data"), State(DATASET_STORE, "data"))
    def render(target, upload, k, searched, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None:
            raise dash.exceptions.PreventUpdate
        k = int(k or K_CHOICES[0])
        missing = []
        if bool(upload) and (upload.get("t", 0) > (target or {}).get("t", 0)):
            tindex = None
            nn, tdist, view = _upload_neighbours(upload, k)
        else:
            tindex = min(max(int((target or {}).get("index", 0)), 0), entry.n_maps - 1)
            nn, tdist, view = _map_neighbours(entry, dataset_id, tindex, k)
            if (searched or {}).get("dataset") == dataset_id and searched.get("index") == tindex:
                _add_searched(searched["spaces"], k, nn, tdist, only=_missing_pixel_spaces(entry, nn))
            missing = _missing_pixel_spaces(entry, nn)
        figs, rows = _grids_and_rows(entry, dataset_id, nn, tindex)
        dist_fig = figures.distance_distribution_figure(_all_distances(entry), RANKS, target=tdist)
        umap = entry.result("umap")
        umap_fig = figures.target_umap_figure(umap, labels=entry.result("labels"), target=tindex,
                                        latent_nn=nn.get("latent", (None,))[0], raw_nn=nn.get("raw", (None,))[0]) \
            if umap is not None else dash.no_update
        return (figs["latent"], figs["raw"], figs["smoothed"], rows, dist_fig, umap_fig, view,
                _target_detail(entry, tindex, upload), {"display": "block" if missing else "none"},
                -1 if tindex is None else tindex, (upload or {}).get("id", "") if tindex is None else "")


# =========================================================================== CSV tables
def _grid_csv(entry, fig):
    meta = (fig or {}).get("layout", {}).get("meta") or {}
    rows = []
    for r, (i, d) in enumerate(zip(meta.get("index", []), meta.get("distance", [])), start=1):
        extra = [float(entry.meta["time"][i]), int(entry.meta["sector"][i])] if entry else []
        rows.append([meta.get("space", ""), r, i, d] + extra)
    return csv_text(["space", "rank", "index", "distance", "time_s", "sector"], rows)


def _dist_csv(entry, fig):
    if entry is None:
        return figure_to_csv(fig)
    d = _all_distances(entry)
    cols, data = ["index"], [np.arange(entry.n_maps)]
    for space, arr in d.items():
        for r in RANKS:
            if r <= arr.shape[1]:
                cols.append(f"{space}_distance_rank{r}")
                data.append(arr[:, r - 1])
    return csv_text(cols, list(zip(*[np.asarray(x).tolist() for x in data])))


def _register_downloads(app, catalog) -> None:
    state = (State(DATASET_STORE, "data"),)
    for graph_id, filename, table in (("similarity-latent-grid", "neighbours_latent.csv", _grid_csv),
                                      ("similarity-raw-grid", "neighbours_raw.csv", _grid_csv),
                                      ("similarity-smoothed-grid", "neighbours_smoothed.csv", _grid_csv),
                                      ("similarity-dist", "neighbour_distances.csv", _dist_csv)):
        register_csv_download(app, graph_id, filename,
                              lambda fig, dataset_id, table=table: table(catalog.get(dataset_id), fig),
                              state, with_figure=True)


# =========================================================================== uploads
def _latent_fallback(entry, index, k):
    latent = entry.result("latent")
    if latent is None:
        return None
    from ainerd_core.similarity import nearest_neighbours

    return nearest_neighbours({"latent": latent}, int(index), "latent", k)


def _model_for(entry):
    """The model that made the dataset's latents, on CPU (see
    :func:`dashboard.catalog.model_for_latents`); RuntimeError saying why there is none, since
    another model's latents would not be comparable."""
    from dashboard.catalog import model_for_latents

    model, note = model_for_latents(entry)
    if model is None:
        raise RuntimeError(f"an uploaded map cannot be encoded into this dataset's latent space: {note}")
    return model


def _upload_latent(entry, target, k):
    import torch

    from ainerd_core.similarity import nearest_neighbours

    latent = entry.result("latent")
    if latent is None:
        raise RuntimeError("no latents were precomputed")
    torch.set_num_threads(1)  # a forked job: keep OpenMP single-threaded
    model = _model_for(entry)
    if int(model.latent_size) != latent.shape[1]:
        raise RuntimeError(f"the model's latent size ({model.latent_size}) differs from the dataset's ({latent.shape[1]})")
    idx, dist = nearest_neighbours({"latent": latent}, target, "latent", k, model=model)
    out = {"index": idx.tolist(), "distance": dist.tolist()}
    from ainerd_core import novelty  # flag a target far outside the model's data (issue 12)

    ref = novelty.reference_from_results(entry.result, entry.result_attrs)
    if ref is not None:
        out["novelty"] = float(novelty.novelty_of_maps(model, np.asarray(target, np.float32)[None], ref)["score"][0])
    return out


def _search_pixels(entry, target, k, set_progress, batch=128):
    """Stream every stored map once for raw and smoothed pixels
    (:func:`ainerd_core.similarity.nearest_pixel_neighbours`, exact), reporting progress per batch."""
    from ainerd_core.dataset import open_dataset
    from ainerd_core.similarity import nearest_pixel_neighbours

    def progress(done, n):
        set_progress((int(10 + 88 * done / n), f"raw and smoothed pixels {done}/{n}"))

    with open_dataset(entry.path) as ds:
        found = nearest_pixel_neighbours({"maps": ds}, target, k, PIXEL_SPACES, batch_size=batch, on_batch=progress)
    return {space: {"index": idx.tolist(), "distance": dist.astype(np.float64).tolist()}
            for space, (idx, dist) in found.items()}
