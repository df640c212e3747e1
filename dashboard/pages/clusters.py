"""``/clusters``: how robust is the clustering?

k-means sweep (elbow, silhouette, Davies-Bouldin, Calinski-Harabasz) with the chosen and the
suggested k marked; k = 3 / 5 / 8 side by side (UMAPs and counts over time); other algorithms'
cluster sizes; stability (ARI over seeds and bootstrap resamples); random example maps per
cluster (seeded, 'draw again'); latent vs raw-pixel UMAP; the retrieval benchmark table; and a
re-clustering background job (ids ``recluster-k``, ``recluster-algorithm``, ``recluster-run``,
``recluster-progress``, ``recluster-result``).
"""
from __future__ import annotations

import json
import logging

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dash_table, dcc, html

from ainerd_core import analysis
from ainerd_core.results import counts_name, labels_name
from dashboard import clusterings
from dashboard.figures import clusters as figures
from dashboard.pages import DATASET_STORE

from ..explorer import graph_card, message, register_csv_download, register_seeded_redraw, thumb_url
from ..exports import csv_text, figure_to_csv

log = logging.getLogger(__name__)

PATH = "/clusters"
TITLE = "Clusters"
ORDER = 60
REQUIRES = ("results",)

N_EXAMPLES = 6
ALGORITHMS = (("kmeans", "k-means"), ("spectral", "spectral"), ("agglomerative", "agglomerative (Ward)"),
              ("birch", "BIRCH"), ("gmm", "Gaussian mixture"), ("hdbscan", "HDBSCAN"), ("optics", "OPTICS"))
ALGO_NAMES = dict(ALGORITHMS)


# --------------------------------------------------------------------------- data helpers
def _sweep(entry) -> dict | None:
    k = entry.result("kmeans/k")
    if k is None:
        return None
    out = {"k": np.asarray(k)}
    for key, *_ in figures.METRICS:
        v = entry.result(f"kmeans/{key}")
        if v is not None:
            out[key] = np.asarray(v)
    return out


def _algorithms(entry) -> dict[str, np.ndarray]:
    out = {}
    labels = entry.result("labels")
    if labels is not None:
        out[f"k-means (k={entry.k})"] = labels
    for name in sorted(n.split("/", 1)[1] for n in entry.result_names() if n.startswith("algorithms/")):
        out[name] = entry.result(f"algorithms/{name}")
    return out


def _examples_fig(entry, dataset_id, seed):
    labels = entry.result("labels")
    examples = figures.draw_examples(labels, N_EXAMPLES, seed)
    urls = {lab: [thumb_url(entry, dataset_id, i) for i in idx] for lab, idx in examples.items()}
    sizes = {lab: int((labels == lab).sum()) for lab in examples}
    return figures.examples_figure(examples, urls, N_EXAMPLES, sizes=sizes, seed=seed)


def _retrieval_table(entry):
    text = entry.result_attrs.get("retrieval_json")
    if not text:
        return None
    try:
        table = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(table, dict) or not table.get("spaces"):
        return None
    ks = [str(k) for k in table.get("ks", [])]
    rows = []
    for space, row in table.get("spaces", {}).items():
        r = {"space": space}
        for k in ks:
            cell = row.get(k, {})
            if cell:
                r[f"P@{k}"] = f"{cell['mean']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"
        rows.append(r)
    for name, row in table.get("tests", {}).items():
        r = {"space": name.replace("_", " ")}
        for k in ks:
            cell = row.get(k, {})
            if cell:
                r[f"P@{k}"] = f"{cell['mean_difference']:+.3f} (p = {cell['p_value']:.4g})"
        rows.append(r)
    columns = [{"name": "space / test", "id": "space"}] + [{"name": f"precision@{k}", "id": f"P@{k}"} for k in ks]
    note = (f"{table.get('n_targets')} random targets of {table.get('n_maps')} maps (seed {table.get('seed')}); "
            f"{table.get('rule', '')}; chance level {table.get('chance', float('nan')):.3f}. "
            "Cells: mean [95 % bootstrap CI]; tests: mean difference, paired permutation p-value."
            + (f" smoothed = pixels after a Gaussian filter of {table['smooth_sigma_px']:g} px (speckle "
               "noise removed): the baseline a latent must beat to show more than denoising."
               if table.get("smooth_sigma_px") else ""))
    return html.Div([
        html.P(note, className="small text-muted"),
        dash_table.DataTable(id="clusters-retrieval-table", data=rows, columns=columns, export_format="csv",
                             style_cell={"fontSize": "0.85rem", "padding": "4px"},
                             style_header={"fontWeight": "bold"}),
    ])


# --------------------------------------------------------------------------- layout
def layout(ctx):
    entry, dsid = ctx.dataset, ctx.dataset_id
    from dashboard.c2view import order_note

    cards = [html.H3("Clusters"),
             html.P("Clustering is done in the latent space; UMAP is for display only.", className="text-muted"),
             order_note(entry, "clusters")]  # how clusters are numbered, and how well that follows the fitted rate
    labels = entry.result("labels")
    if labels is None:
        return html.Div(cards + [message("This dataset has no cluster labels (run precompute).", "warning")])
    sweep = _sweep(entry)
    chosen = entry.k
    suggested = entry.result_attrs.get("suggested_k")
    if sweep is not None:
        rule = entry.result_attrs.get("k_rule", "")
        cards.append(graph_card("clusters-sweep", figures.k_sweep_figure(sweep, chosen, suggested, rule),
                                title="How many clusters? k-means sweep",
                                note=html.P(f"Chosen k = {chosen}; suggested k = {suggested}. Rule: {rule}",
                                            className="small text-muted mb-1", id="clusters-k-note")))
    else:
        cards.append(message("No k-means sweep in the results.", "secondary"))

    umap = entry.result("umap")
    klab = entry.by_k(labels_name)
    if umap is not None and klab:
        cards.append(graph_card("clusters-kcompare", figures.k_compare_umap_figure(umap, klab),
                                title="k = 3 / 5 / 8 side by side (UMAP)"))
    counts = entry.by_k(counts_name)
    times = entry.result("tables/times")
    if counts and times is not None:
        cards.append(graph_card("clusters-kcounts", figures.counts_over_time_figure(times, counts),
                                title="k = 3 / 5 / 8: maps per cluster over time"))

    algos = _algorithms(entry)
    if len(algos) > 1:
        rows = figures.algorithm_summary(algos)
        table = dash_table.DataTable(
            id="clusters-algorithms-table", data=rows,
            columns=[{"name": n, "id": n} for n in ("algorithm", "n_clusters", "noise", "largest_share", "sizes")],
            style_cell={"fontSize": "0.85rem", "padding": "4px", "textAlign": "left"},
            style_header={"fontWeight": "bold"})
        cards.append(graph_card("clusters-algorithms", figures.algorithm_sizes_figure(algos),
                                title="Other algorithms on the same latents", extra=table))
    ari = {"seeds": entry.result("stability/ari_seeds"), "bootstrap": entry.result("stability/ari_bootstrap")}
    if any(v is not None for v in ari.values()):
        cards.append(graph_card("clusters-stability", figures.stability_figure(ari),
                                title="Stability: adjusted Rand index vs the chosen clustering"))

    # example maps
    if entry.has_maps:
        draw = html.Div([
            html.Span("seed", className="me-2 small"),
            dcc.Input(id="clusters-examples-seed", type="number", value=0, min=0, step=1, debounce=True,
                      style={"width": "6rem"}, className="me-2"),
            dbc.Button("draw again", id="clusters-examples-draw", size="sm", color="primary"),
            html.Span(" (random maps of each cluster, drawn with this seed; not hand-picked)",
                      className="small text-muted ms-2"),
        ], className="d-flex align-items-center mb-2")
        cards.append(graph_card("clusters-examples", _examples_fig(entry, dsid, 0),
                                title="Example maps per cluster", note=draw))
    else:
        cards.append(message("Example maps per cluster need C2 maps; this dataset holds latents only.",
                             "secondary", id="clusters-examples-missing"))

    umap_raw = entry.result("umap_raw")
    if umap is not None and umap_raw is not None:
        cards.append(graph_card("clusters-rawumap", figures.latent_vs_raw_umap_figure(umap, umap_raw, labels),
                                title="Latent vs raw-pixel UMAP (same labels)"))
    elif umap is not None:
        cards.append(message("The raw-pixel UMAP needs C2 maps; this dataset holds latents only.", "secondary",
                             id="clusters-rawumap-missing"))

    retrieval = _retrieval_table(entry)
    if retrieval is not None:
        cards.append(dbc.Card([dbc.CardHeader("Retrieval benchmark (ground truth)"), dbc.CardBody(retrieval)],
                              className="mb-3"))

    cards.append(_recluster_card(entry))
    return html.Div(cards, id="clusters-page")


def _recluster_card(entry):
    k0 = entry.k or 5
    controls = dbc.Row([
        dbc.Col([dbc.Label("k (clusters asked for)", html_for="recluster-k", className="small mb-0"),
                 dcc.Input(id="recluster-k", type="number", min=2, max=20, step=1, value=k0,
                           className="form-control form-control-sm", style={"width": "7rem"})], width="auto"),
        dbc.Col([dbc.Label("algorithm", html_for="recluster-algorithm", className="small mb-0"),
                 dcc.Dropdown(id="recluster-algorithm", options=[{"label": v, "value": k} for k, v in ALGORITHMS],
                              value="kmeans", clearable=False, style={"minWidth": "14rem"})], width="auto"),
        dbc.Col(dbc.Button("re-cluster", id="recluster-run", color="primary", size="sm", className="mt-3"),
                width="auto"),
    ], className="g-2 align-items-end mb-2")
    progress = dbc.Progress(id="recluster-progress", value=0, max=100, label="", striped=True, animated=True,
                            className="mb-2", style={"height": "1.2rem"})
    return dbc.Card([
        dbc.CardHeader("Re-cluster the latents (background job)"),
        dbc.CardBody([
            html.P("Runs on the server in the background; labels are renumbered so that 0 = slowest, as in "
                   "the precomputed results. Density methods (HDBSCAN, OPTICS) ignore k and report how many "
                   "clusters they found. Each result is kept for this browser session: choose it on the "
                   "timeline, sectors and latent-map pages.",
                   className="small text-muted"),
            controls, progress,
            html.Div(id="recluster-error"),
            html.Div(id="recluster-result", className="fw-semibold mb-2"),
            html.Div(id="recluster-links", className="small mb-2"),
            dcc.Graph(id="recluster-figure", figure=figures.labels_scatter_figure(np.zeros((0, 2)), np.zeros(0), "result"),
                      style={"display": "none"}, config={"displaylogo": False,
                                                         "toImageButtonOptions": {"format": "png", "filename": "recluster"}}),
            dcc.Store(id="recluster-labels"),
            dbc.Button("CSV of the new labels", id="recluster-csv", size="sm", color="secondary", outline=True,
                       disabled=True),
            dcc.Download(id="recluster-csv-download"),
        ]),
    ], className="mb-3")


def register_callbacks(app, services):
    register_seeded_redraw(app, services.catalog, "clusters-examples", "clusters-examples-draw",
                           "clusters-examples-seed", _examples_fig,
                           usable=lambda entry: entry.result("labels") is not None)
    _register_csv_downloads(app, services.catalog)
    _register_recluster(app, services)


# =========================================================================== CSV tables
def _sweep_csv(e, fig):
    s = _sweep(e) if e else None
    if not s:
        return figure_to_csv(fig)
    cols = ["k"] + [m for m, *_ in figures.METRICS if m in s]
    rows = [[int(s["k"][i])] + [float(s[m][i]) for m in cols[1:]] for i in range(len(s["k"]))]
    return csv_text(cols + ["chosen", "suggested"],
                    [r + [int(r[0] == e.k), int(r[0] == e.result_attrs.get("suggested_k"))] for r in rows])


def _labels_csv(e, fig):
    if e is None:
        return figure_to_csv(fig)
    cols, data = ["index", "time_s", "sector"], [np.arange(e.n_maps), e.meta["time"], e.meta["sector"]]
    umap, umap_raw = e.result("umap"), e.result("umap_raw")
    if umap is not None:
        cols += ["umap_x", "umap_y"]
        data += [umap[:, 0], umap[:, 1]]
    if umap_raw is not None:
        cols += ["umap_raw_x", "umap_raw_y"]
        data += [umap_raw[:, 0], umap_raw[:, 1]]
    cols.append(f"label_k{e.k}")
    data.append(e.result("labels"))
    for k, lab in e.by_k(labels_name).items():
        cols.append(f"label_k{k}")
        data.append(lab)
    for name, lab in _algorithms(e).items():
        if not name.startswith("k-means"):
            cols.append(f"label_{name}")
            data.append(lab)
    return csv_text(cols, list(zip(*[np.asarray(d).tolist() for d in data])))


def _counts_csv(e, fig):
    if e is None:
        return figure_to_csv(fig)
    times = e.result("tables/times")
    rows = []
    for k, c in e.by_k(counts_name).items():
        for t in range(c.shape[0]):
            for lab in range(c.shape[1]):
                rows.append([k, float(times[t]), lab, int(c[t, lab])])
    return csv_text(["k", "time_s", "cluster", "maps"], rows)


def _stability_csv(e, fig):
    if e is None:
        return figure_to_csv(fig)
    rows = [[kind, i, float(v)] for kind in ("seeds", "bootstrap")
            for i, v in enumerate(e.result(f"stability/ari_{kind}", []))]
    return csv_text(["kind", "run", "adjusted_rand_index"], rows)


def _examples_csv(e, fig):
    custom = (fig.get("data") or [{}])[0].get("customdata") or []
    rows = []
    for c in custom:
        if c[0] >= 0:
            i = int(c[0])
            rows.append([int(c[1]), i] + ([float(e.meta["time"][i]), int(e.meta["sector"][i])] if e else []))
    title = ((fig.get("layout") or {}).get("title") or {}).get("text", "")
    return f"# {title}\n" + csv_text(["cluster", "index", "time_s", "sector"], rows)


#: graph id -> (file name, table of (entry or None, figure))
_CSV_TABLES = {
    "clusters-sweep": ("kmeans_sweep.csv", _sweep_csv),
    "clusters-kcompare": ("labels_k3_k5_k8.csv", _labels_csv),
    "clusters-kcounts": ("counts_k3_k5_k8.csv", _counts_csv),
    "clusters-algorithms": ("algorithm_labels.csv", _labels_csv),
    "clusters-stability": ("stability_ari.csv", _stability_csv),
    "clusters-examples": ("cluster_examples.csv", _examples_csv),
    "clusters-rawumap": ("umap_latent_vs_raw.csv", _labels_csv),
}


def _register_csv_downloads(app, catalog) -> None:
    state = (State(DATASET_STORE, "data"),)
    for graph_id, (filename, table) in _CSV_TABLES.items():
        register_csv_download(app, graph_id, filename,
                              lambda fig, dataset_id, table=table: table(catalog.get(dataset_id), fig),
                              state, with_figure=True)


# =========================================================================== re-clustering
def _checked_k(algorithm, k) -> int:
    """The requested k of a re-clustering; ValueError with the message for the user."""
    if algorithm not in ALGO_NAMES:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise ValueError("k must be a whole number between 2 and 20") from None
    if not 2 <= k <= 20:
        raise ValueError("k must be between 2 and 20")
    return k


def _read_for_recluster(entry) -> dict:
    """What a re-clustering reads from the file: latents (results, else the dataset's own), the
    ordering feature, the UMAP, the precomputed labels and the results' attributes."""
    from ainerd_core.dataset import open_dataset

    with open_dataset(entry.path) as ds:
        x = ds.read_result("latent")
        return {"latent": ds.latents if x is None else x, "order": ds.read_result("order_feature"),
                "umap": ds.read_result("umap"), "labels": ds.read_result("labels"), "attrs": ds.result_attrs}


def _result_links(dataset_id: str, rid: str):
    return html.Span(["Show it on the ", dcc.Link("timeline", href=f"/timeline?dataset={dataset_id}&k={rid}",
                                                   id="recluster-link-timeline"), ", the ",
                      dcc.Link("sectors", href=f"/sectors?dataset={dataset_id}&k={rid}"), " or the ",
                      dcc.Link("latent map", href=f"/latent-map?dataset={dataset_id}&k={rid}"),
                      f" (kept for this browser session as {rid})."])


def _register_recluster(app, services) -> None:
    """The re-clustering background job (result saved per session, :mod:`dashboard.clusterings`)
    and its labels CSV."""
    config = services.config

    @services.register_background(
        Output("recluster-result", "children"), Output("recluster-figure", "figure"),
        Output("recluster-figure", "style"), Output("recluster-labels", "data"), Output("recluster-error", "children"),
        Output("recluster-links", "children"), Output(clusterings.SESSION_STORE, "data"),
        Input("recluster-run", "n_clicks"),
        State("recluster-k", "value"), State("recluster-algorithm", "value"), State(DATASET_STORE, "data"),
        State(clusterings.SESSION_STORE, "data"),
        progress=[Output("recluster-progress", "value"), Output("recluster-progress", "label")],
        running=[(Output("recluster-run", "disabled"), True, False)],
        prevent_initial_call=True)
    def recluster(set_progress, n_clicks, k, algorithm, dataset_id, session_ids):
        hidden = {"display": "none"}
        keep = dash.no_update

        def failed(text):  # the error replaces the last result; the next success clears it
            set_progress((0, ""))
            return "", keep, hidden, None, dbc.Alert(text, color="danger", className="p-2 mb-2",
                                                    id="recluster-error-message"), None, keep
        if not n_clicks:
            return (keep,) * 7
        set_progress((2, "loading latents"))
        from dashboard.catalog import Catalog

        entry = Catalog(config.data_dir).get(dataset_id)
        if entry is None:
            return failed("no such dataset")
        try:
            k = _checked_k(algorithm, k)
        except ValueError as exc:
            return failed(str(exc))
        got = _read_for_recluster(entry)
        x, umap, ref, ra = got["latent"], got["umap"], got["labels"], got["attrs"]
        if x is None:
            return failed("this dataset has no latents")
        k = min(k, len(x) - 1)
        set_progress((10, "clustering"))
        try:
            # precompute's seed and restarts: at the same k, k-means reproduces the stored labels
            lab = analysis.recluster(x, k, algorithm, got["order"], seed=int(ra.get("seed", 0)), n_init=int(ra.get("n_init", 10)))
        except Exception as exc:  # noqa: BLE001 - an algorithm that fails on these latents is reported
            log.warning("re-clustering %s k=%s failed: %s", algorithm, k, exc)
            return failed(f"{ALGO_NAMES[algorithm]} failed on these latents: {exc}")
        rid = clusterings.save(config.instance_dir, entry, lab, algorithm, k)
        info = clusterings.load(config.instance_dir, entry, rid)["info"]
        what = clusterings.describe_info(info)
        sizes = figures.algorithm_summary({"new": lab})[0]
        text = f"{what}: sizes {sizes['sizes']}"
        if ref is not None:
            from sklearn.metrics import adjusted_rand_score

            text += f" (ARI vs the precomputed clustering: {adjusted_rand_score(ref, lab):.3f})"
        fig = figures.labels_scatter_figure(umap, lab, what) if umap is not None else keep
        links = _result_links(entry.id, rid)
        ids = [r for r in (session_ids or []) if clusterings.is_result_id(r)] + [rid]
        set_progress((100, "done"))
        return (text, fig, ({} if umap is not None else hidden),
                {"labels": lab.tolist(), "title": text, "dataset": dataset_id}, None, links, ids[-20:])

    @app.callback(Output("recluster-csv", "disabled"), Input("recluster-labels", "data"))
    def enable_csv(data):
        return not (data and data.get("labels"))

    @app.callback(Output("recluster-csv-download", "data"), Input("recluster-csv", "n_clicks"),
                  State("recluster-labels", "data"), prevent_initial_call=True)
    def recluster_csv(n, data):
        if not n or not data:
            return dash.no_update
        rows = [[i, lab] for i, lab in enumerate(data["labels"])]
        return dict(content=f"# {data['title']}\n" + csv_text(["index", "label"], rows),
                    filename="recluster_labels.csv", type="text/csv")
