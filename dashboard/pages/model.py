"""``/model``: the autoencoder: learning curve, reconstructions next to inputs, latent-size sweep,
and maps decoded from latent + Gaussian noise.

Reconstructions and noise maps are result stacks (``model/recon_*``, ``model/noise_maps``), not
stored C2 maps; :mod:`dashboard.images` serves them from its signed ``/_results`` route
(:func:`dashboard.images.stack_image_urls`). A 'draw other maps' button shows further random maps
through the image route's ``recon`` variant.
"""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dcc, html

from dashboard.figures import model as figures
from dashboard.pages import DATASET_STORE

from ..explorer import graph_card, message, register_csv_download, register_seeded_redraw, thumb_url
from ..exports import csv_text, figure_to_csv
from ..images import stack_image_urls

PATH = "/model"
TITLE = "Model"
ORDER = 70
REQUIRES = ("results",)

N_DRAW = 8


# --------------------------------------------------------------------------- figures from results
def _recon_mse(entry):
    x, y = entry.result("model/recon_input"), entry.result("model/recon_output")
    if x is None or y is None:
        return None
    return ((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2).mean(axis=(1, 2))


def _draw_fig(entry, dataset_id, seed):
    from dashboard.images import map_image_url

    rng = np.random.default_rng(int(seed))
    idx = np.sort(rng.choice(entry.n_maps, size=min(N_DRAW, entry.n_maps), replace=False))
    ins = [thumb_url(entry, dataset_id, i) for i in idx]
    outs = [map_image_url(dataset_id, int(i), variant="recon") for i in idx]
    fig = figures.reconstruction_figure(idx.tolist(), ins, outs, n_cols=N_DRAW)
    fig.update_layout(title=f"random maps (seed {int(seed)}) and their reconstructions from the stored latents")
    return fig


def _has_model_file(entry) -> bool:
    """Whether the image route can decode reconstructions (the catalog's checkpoint lookup)."""
    return entry.provenance.resolve(entry.path)[0] is not None


def layout(ctx):
    entry, dsid = ctx.dataset, ctx.dataset_id
    attrs = entry.result_attrs
    model_name = str(attrs.get("model_path") or attrs.get("model") or "unknown").replace("\\", "/").rsplit("/", 1)[-1]
    parts = [html.H3("The autoencoder"),
             html.P(f"Model: {model_name}; latent size "
                    f"{entry.result('latent').shape[1] if entry.result('latent') is not None else '?'}.",
                    className="text-muted", id="model-info")]
    if attrs.get("model_heldout"):
        # the checkpoint's own held-out scores: a test split of its dataset, or unseen randomised maps
        parts.append(html.P(f"Held out from training: {attrs['model_heldout']}.", className="small text-muted",
                            id="model-heldout"))
    ep, tr, va = (entry.result(f"model/learning_curve/{k}") for k in ("epoch", "train_loss", "val_loss"))
    if ep is not None and tr is not None:
        how = attrs.get("learning_curve_note")
        parts.append(graph_card("model-curve", figures.learning_curve_figure(ep, tr, va, attrs.get("model_best_epoch")),
                                title="Learning curve", note=html.P(how, className="small text-muted mb-1",
                                                                    id="model-curve-note") if how else None))
    else:
        parts.append(message("No learning curve in the results (the checkpoint carries none, e.g. the "
                             "published weights).", "secondary", id="model-curve-missing"))

    idx = entry.result("model/recon_index")
    if idx is not None and entry.has_result("model/recon_input"):
        mse = _recon_mse(entry)
        fig = figures.reconstruction_figure(np.asarray(idx).tolist(), stack_image_urls(entry, "model/recon_input"),
                                      stack_image_urls(entry, "model/recon_output"), mse=mse, n_cols=8)
        pool = attrs.get("recon_pool", "")
        note = html.P(f"{len(idx)} maps drawn at random by precompute (seed {attrs.get('seed', '?')})"
                      + (f" from the {pool}" if pool else "") + "; not hand-picked.", className="small text-muted mb-1")
        parts.append(graph_card("model-recon", fig, title="Reconstructions next to inputs", note=note))
        parts.append(html.Div(html.Div("Click a tile to enlarge the map and its reconstruction next to the map's g2 "
                                       "and fit.", className="small text-muted"), id="model-view-recon",
                              className="mb-3"))
        if _has_model_file(entry):
            ctrl = html.Div([
                dbc.Button("draw other maps", id="model-draw", size="sm", color="primary", className="me-2"),
                html.Span("seed", className="small me-1"),
                dcc.Input(id="model-draw-seed", type="number", value=1, min=0, step=1, debounce=True,
                          style={"width": "6rem"}),
                html.Span(" any map of the dataset, drawn at random", className="small text-muted ms-2"),
            ], className="d-flex align-items-center mb-2")
            parts.append(graph_card("model-draw-grid", _draw_fig(entry, dsid, 1),
                                    title="More random reconstructions", note=ctrl))
            parts.append(html.Div(id="model-view-draw", className="mb-3"))
    elif not entry.has_maps:
        parts.append(message("Reconstructions need C2 maps; this dataset holds latents only.", "warning",
                             id="model-recon-missing"))
    else:
        parts.append(message("No reconstructions in the results (precompute ran without a model).", "secondary",
                             id="model-recon-missing"))

    ls, mse = entry.result("model/latent_sweep/latent_size"), entry.result("model/latent_sweep/test_mse")
    if ls is not None and mse is not None:
        latent = entry.result("latent")
        how = attrs.get("latent_sweep_schedule")
        note = html.P(f"Trained with a {how}." if how else "How the sweep was trained is not recorded.",
                      className="small text-muted mb-1", id="model-sweep-schedule")
        parts.append(graph_card("model-sweep", figures.latent_sweep_figure(ls, mse, latent.shape[1] if latent is not None else None),
                                title="Latent-size sweep", note=note))
    else:
        # a sweep measured from other weights is left out by precompute, and the page says so
        why = attrs.get("latent_sweep_note")
        parts.append(message(f"No latent-size sweep for this model: {why}." if why else
                             "No latent-size sweep in the results (run `python -m ainerd_core latent-sweep`).",
                             "secondary", id="model-sweep-missing"))

    if entry.has_result("model/noise_maps"):
        sigma = attrs.get("noise_sigma")
        parts.append(graph_card("model-noise", figures.noise_grid_figure(stack_image_urls(entry, "model/noise_maps"),
                                                                    float(sigma) if sigma is not None else None),
                                title="Artificial maps: decoded latent + Gaussian noise",
                                note=html.P("Random latents of the dataset plus Gaussian noise, decoded: similar "
                                            "latents give similar maps.", className="small text-muted mb-1")))
    else:
        parts.append(message("No noise-generated maps in the results.", "secondary", id="model-noise-missing"))
    return html.Div(parts, id="model-page")


def register_callbacks(app, services):
    catalog = services.catalog

    register_seeded_redraw(app, catalog, "model-draw-grid", "model-draw", "model-draw-seed", _draw_fig)

    def _clicked_index(click):
        try:
            cd = click["points"][0]["customdata"]
            return int(cd[0] if isinstance(cd, list) else cd)
        except (KeyError, IndexError, TypeError, ValueError):
            return None

    @app.callback(Output("model-view-recon", "children"), Input("model-recon", "clickData"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def enlarge_recon(click, dataset_id):
        from dashboard.c2view import c2_view

        entry = catalog.get(dataset_id)
        index = _clicked_index(click)
        ridx = entry.result("model/recon_index") if entry is not None else None
        if ridx is None or index is None or index not in set(np.asarray(ridx).tolist()):
            return dash.no_update
        row = int(np.flatnonzero(np.asarray(ridx) == index)[0])
        return c2_view(entry, index, key="model-recon", source="stack", stack_row=row, title=f"C2 of map {index} (input)")

    @app.callback(Output("model-view-draw", "children"), Input("model-draw-grid", "clickData"),
                  State(DATASET_STORE, "data"), prevent_initial_call=True)
    def enlarge_draw(click, dataset_id):
        from dashboard.c2view import c2_view

        entry = catalog.get(dataset_id)
        index = _clicked_index(click)
        if entry is None or index is None or not 0 <= index < entry.n_maps:
            return dash.no_update
        return c2_view(entry, index, key="model-draw", source="map+recon", title=f"C2 of map {index} (input)")

    def recon_csv(fig, dataset_id):
        entry = catalog.get(dataset_id)
        if entry is None or entry.result("model/recon_index") is None:
            return figure_to_csv(fig)
        idx, mse = entry.result("model/recon_index"), _recon_mse(entry)
        return csv_text(["index", "time_s", "sector", "mse"],
                        [[int(i), float(entry.meta["time"][i]), int(entry.meta["sector"][i]), float(m)]
                         for i, m in zip(idx, mse)])

    def draw_csv(fig, dataset_id):
        custom = (fig.get("data") or [{}])[0].get("customdata") or []
        return csv_text(["index", "tile"], [[c[0], "input" if c[1] == 0 else "reconstruction"] for c in custom if c[0] >= 0])

    def noise_csv(fig, dataset_id):
        entry = catalog.get(dataset_id)
        stack = entry.result("model/noise_maps") if entry else None
        if stack is None:
            return figure_to_csv(fig)
        s = np.asarray(stack, np.float64)
        sigma = entry.result_attrs.get("noise_sigma")
        return f"# decoded latent + Gaussian noise, sigma {sigma}\n" + csv_text(
            ["map", "mean", "min", "max", "diagonal_mean"],
            [[i, float(m.mean()), float(m.min()), float(m.max()), float(np.diagonal(m).mean())] for i, m in enumerate(s)])

    state = (State(DATASET_STORE, "data"),)
    register_csv_download(app, "model-curve", "learning_curve.csv", lambda fig, _d: figure_to_csv(fig), state, with_figure=True)
    register_csv_download(app, "model-recon", "reconstructions.csv", recon_csv, state, with_figure=True)
    register_csv_download(app, "model-draw-grid", "reconstructions_random.csv", draw_csv, state, with_figure=True)
    register_csv_download(app, "model-sweep", "latent_sweep.csv", lambda fig, _d: figure_to_csv(fig), state, with_figure=True)
    register_csv_download(app, "model-noise", "noise_maps.csv", noise_csv, state, with_figure=True)
