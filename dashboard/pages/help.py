"""'/help': a short help page per view (``?view=timeline`` ...): what the view shows, how it
was computed, what the selected dataset can and cannot show there (honest for latents-only
data), and where the method is written down (docs/views.md, the method notes)."""
from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import dcc, html

PATH = "/help"
TITLE = "Help"
ORDER = 90
REQUIRES: tuple[str, ...] = ()

DOCS = "docs/views.md in the source tree"

#: view -> (title, page path, what it shows, how it was computed)
VIEWS = {
    "overview": ("Overview", "/", "Every dataset in the data folder: size, source, whether it holds C2 maps or "
                 "latents only, rheology, and the state of its precomputation.",
                 "Read from the files' attributes; nothing is computed."),
    "timeline": ("Timeline (Figure 3A-B)", "/timeline",
                 "Shear stress after cessation of shear (top), with dashed lines at its local minima, above a "
                 "histogram: at each time point, the maps of all sectors counted by cluster label (stacked). Shear "
                 "rate and viscosity can be added as rows on the same time axis. Click a bar to list that time's maps.",
                 "Clusters: k-means on the autoencoder's latent vectors (not on the UMAP), renumbered so that cluster "
                 "0 is the slowest dynamics; k = 3 / 5 / 8 and the chosen k are precomputed; re-clustering results "
                 "of this browser session (page Clusters) can be chosen too and are labelled by algorithm and the "
                 "number of clusters they found. Stress minima: local minima of the smoothed stress."),
    "sectors": ("Sectors (Figure 3C)", "/sectors",
                "The cluster label of every (sector, time) cell. Flow-direction sectors are outlined blue (F), "
                "vorticity-direction sectors red (V), from the file's flow-axis angle.",
                "The same labels as the timeline; grey = no map (or noise of a density method)."),
    "latent_map": ("Latent map (Figure 3D, Suppl. Fig. 4)", "/latent-map",
                   "A 2-d UMAP of the latent vectors, coloured by cluster, time, sector, flow/vorticity class or "
                   "dynamics score, over the flow/vorticity share background; the maps of up to three time points "
                   "highlighted. Click a point for its map; draw a lasso to list and export maps.",
                   "UMAP is for display only; distances in it are not the latent distances. The background is, at "
                   "each place of the plane, the share of nearby points from flow sectors minus that from vorticity "
                   "sectors (blue = flow, red = vorticity, white = isotropic)."),
    "similarity": ("Similarity", "/similarity",
                   "The nearest neighbours of a target map in the latent space and in raw-pixel space, nearest first, "
                   "failures included; with simulator ground truth each neighbour is marked relevant (✓, green) or "
                   "not (✗, red). Below: distributions of the 1st / 10th / 100th neighbour distances.",
                   "Euclidean distances on the 64-d latents and on the flattened 256 x 256 maps. An uploaded .npy map "
                   "is resampled to 256 x 256, normalised to [0, 1], encoded with the model that made the dataset's "
                   "latents (same checksum) and compared with every stored map."),
    "clusters": ("Clusters", "/clusters",
                 "How robust the clustering is: the k-means sweep (elbow, silhouette...), k = 3 / 5 / 8 side by side, "
                 "other algorithms' cluster sizes, stability over seeds and resamples, example maps, and re-clustering "
                 "on the server.",
                 "All on the latent vectors; re-clustering results are kept for this browser session and can be "
                 "chosen on the timeline, sectors and latent-map pages."),
    "model": ("Model", "/model", "The autoencoder: learning curve, reconstructions next to inputs, decoded noise "
              "around latents, the latent-size sweep.", "From the training record and the precomputed results."),
    "compare": ("Compare experiments", "/compare",
                "Two or more datasets encoded by the same model (same checksum): their timelines stacked on a common "
                "time axis, their maps in one shared latent map, and a search for maps like a chosen one across all "
                "of them.",
                "The shared latent map is a PCA plane fitted on all the datasets' latents together (cheap and "
                "deterministic; a joint UMAP would be too heavy at request time). Neighbours are Euclidean in the "
                "common latent space, which only makes sense because the model is the same. \"Search smoothed "
                "pixels\" runs the same search on the maps themselves (Gaussian 2 px, min-max renormalised), "
                "reading every map of every dataset."),
}


def _dataset_notes(entry, view: str) -> list:
    """What this dataset can and cannot show in ``view``, said plainly."""
    if entry is None:
        return []
    notes = []
    if not entry.has_maps:
        notes.append("This dataset holds latents only (no C2 maps): no map images, no reconstructions from maps, "
                     "no raw-pixel neighbours, no dynamics fitted from maps. Points and cells carry their metadata.")
        if view == "similarity":
            notes.append("An uploaded map can only be searched in the latent space, and only if the model that made "
                         "these latents is available here with the same checksum; the raw-pixel search needs maps.")
    if not entry.has_rheology:
        notes.append("This dataset has no rheology log: no stress curve or minima on the timeline.")
    elif view == "timeline":
        rh = entry.rheology or {}
        missing = [name for col, name in (("shear_rate", "shear rate"), ("viscosity", "viscosity"))
                   if len(rh.get(col, [])) == 0]
        if missing:
            notes.append("Not recorded in this dataset: " + " and ".join(missing) + " (those rows are disabled).")
    if not entry.has_results:
        notes.append("This dataset has not been precomputed: the views need `python -m ainerd_core precompute`.")
    sha = entry.result_attrs.get("model_sha256")
    notes.append(f"Model checksum (SHA-256) of the latents: {sha[:16]}…" if isinstance(sha, str) and sha else
                 "The model that made the latents is not recorded (model_sha256 unknown).")
    return notes


def layout(ctx):
    view = ctx.state.get("view")
    views = [view] if view in VIEWS else list(VIEWS)
    sections = []
    for key in views:
        title, path, shows, how = VIEWS[key]
        notes = _dataset_notes(ctx.dataset, key)
        sections.append(dbc.Card([
            dbc.CardHeader(html.Span(title, className="fw-semibold")),
            dbc.CardBody([
                html.P([html.B("What it shows. "), shows]),
                html.P([html.B("How it was computed. "), how]),
                html.Div([html.B(f"This dataset ({ctx.dataset_id}). " if ctx.dataset_id else ""),
                          html.Ul([html.Li(n) for n in notes], className="small")]) if notes else None,
                dcc.Link(f"open {title.split(' (')[0]}", href=ctx.href(path), className="small"),
            ])], className="mb-3", id=f"help-{key}"))
    head = [html.H4("Help" + (f": {VIEWS[view][0]}" if view in VIEWS else "")),
            html.P(["Units: time in s since cessation of shear, stress in Pa, shear rate in 1/s, viscosity in Pa s, "
                    "q in 1/Å, angles in degrees; a value that is not recorded is shown as “unknown”. The method "
                    f"(model, clustering, UMAP, similarity, the expert evaluation) is described in {DOCS}."],
                   className="text-muted small")]
    if view is not None and view not in VIEWS:
        head.append(dbc.Alert(f"No help for a view named '{view}'; all views are listed.", color="secondary"))
    elif view in VIEWS:
        head.append(dcc.Link("help for every view", href=ctx.href(PATH), className="small d-block mb-2"))
    return html.Div(head + sections, id="help-page")
