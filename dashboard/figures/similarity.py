"""Figures of the similarity page (pure: arrays and image URLs in, ``go.Figure`` out).

C2 maps are never drawn as heatmap traces: thumbnails are PNG images served by the dashboard's
image route, placed as ``layout.images`` in a grid (:func:`dashboard.figures.common.image_grid_figure`). An invisible
scatter trace over the grid carries each tile's ``customdata`` (dataset index, distance, rank) so
hovering and clicking work, and PNG export from the modebar includes the images.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# WEBGL_MIN_POINTS, CAPTION_H and image_grid_figure: callers use them as F.<name>
from .common import CAPTION_H, WEBGL_MIN_POINTS, event_list, image_grid_figure, scatter_trace, styled  # noqa: F401

SPACE_COLORS = {"latent": "#1f77b4", "raw": "#d62728", "pca": "#2ca02c", "smoothed": "#9467bd"}
SPACE_NAMES = {"latent": "latent space", "raw": "raw pixels", "pca": "PCA-64 of raw pixels",
               "smoothed": "smoothed pixels"}
RANK_DASH = {1: "solid", 10: "dash", 100: "dot"}
RELEVANT_COLORS = {True: "#2ca02c", False: "#d62728", None: "rgba(0,0,0,0)"}
TARGET_COLOR = "#ff7f0e"


def _ordinal(r: int) -> str:
    return f"{r}{'th' if 10 <= r % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(r % 10, 'th')}"


@styled
def neighbour_grid_figure(space: str, index, distance, urls: Sequence[str], *, n_cols: int = 6,
                          relevant: Sequence[bool | None] | None = None, hover: Sequence[str] | None = None,
                          title: str | None = None) -> go.Figure:
    """The K nearest neighbours of a target in one space as a thumbnail grid, nearest first.

    ``urls``, ``relevant`` and ``hover`` are aligned with ``index`` as given; the grid is sorted
    by distance. Each tile's caption is ``#rank  d=distance``; its customdata is
    ``[dataset index, distance, rank]``; with ground truth the frame is green (relevant) or red.
    """
    index = np.asarray(index).astype(np.int64).ravel()
    distance = np.asarray(distance, dtype=np.float64).ravel()
    order = np.lexsort((index, distance))
    idx, dist = index[order], distance[order]
    urls = [list(urls)[i] for i in order]
    rel = [list(relevant)[i] for i in order] if relevant is not None else [None] * len(idx)
    hov = [list(hover)[i] for i in order] if hover is not None else [f"map {j}" for j in idx]
    ranks = np.arange(1, len(idx) + 1)
    hov = [f"rank {r}, distance {d:.4g}<br>{h}" + ("" if v is None else f"<br>relevant: {'yes' if v else 'NO'}")
           for r, d, h, v in zip(ranks, dist, hov, rel)]
    # relevance by text and frame style as well as colour: ✓ solid green, ✗ dashed red
    captions = [f"#{r}  d={d:.3g}" + ("" if v is None else (" ✓" if v else " ✗")) for r, d, v in zip(ranks, dist, rel)]
    fig = image_grid_figure(urls, n_cols, captions=captions, hover=hov,
                            customdata=[[int(i), float(d), int(r)] for i, d, r in zip(idx, dist, ranks)],
                            border_colors=[RELEVANT_COLORS[v] if v is not None else None for v in rel],
                            title=title or f"nearest neighbours in {SPACE_NAMES.get(space, space)}")
    framed = [v for v in rel if v is not None]
    frames = [sh for sh in fig.layout.shapes if sh.type == "rect"]
    if len(frames) == len(framed):
        for sh, v in zip(frames, framed):
            sh.line.dash = "solid" if v else "dash"
    fig.update_layout(meta={"space": space, "index": idx.tolist(), "distance": dist.tolist(),
                            "relevant": [None if v is None else bool(v) for v in rel]})
    return fig


def map_heatmap_figure(arr, title: str, *, height: int = 360) -> go.Figure:
    """A map (an uploaded target) drawn large with axes: C2(t1, t2) in pixels, colour bar."""
    arr = np.asarray(arr, dtype=np.float32)
    fig = go.Figure(go.Heatmap(z=arr, colorscale="Viridis", colorbar=dict(title=dict(text="C2 (normalised)")),
                               hovertemplate="t1 %{x}, t2 %{y}<br>C2 %{z:.3f}<extra></extra>"))
    fig.update_layout(height=height, title=dict(text=title, font=dict(size=13)), margin=dict(l=60, r=20, t=40, b=50),
                      plot_bgcolor="white")
    fig.update_xaxes(title_text="t1 (pixel)", constrain="domain")
    fig.update_yaxes(title_text="t2 (pixel)", scaleanchor="x", constrain="domain")
    return fig


# --------------------------------------------------------------------------- distributions
@styled
def distance_distribution_figure(distances: dict[str, np.ndarray], ranks: Sequence[int] = (1, 10, 100), *,
                                 target: dict[str, np.ndarray] | None = None, nbins: int = 40) -> go.Figure:
    """Histograms of the r-th neighbour distance over all maps, one panel per space.

    Parameters
    ----------
    distances : {space: (N, K) distances, nearest first} (``similarity/<space>_distance``).
        Spaces have different units, so each gets its own panel (and x axis).
    ranks : 1-based neighbour ranks; ranks above K are skipped.
    target : optional {space: (k,) distances of the current target's neighbours}; its r-th
        distance is marked by a vertical line of the rank's dash style.

    Trace ``name`` is ``"<space>: <r>th neighbour"``, ``x`` is ``distance[:, r - 1]``.
    """
    spaces = [s for s, d in distances.items() if d is not None and np.asarray(d).ndim == 2]
    if not spaces:
        fig = go.Figure()
        fig.update_layout(title="no neighbour distances (run precompute)", height=200)
        return fig
    fig = make_subplots(rows=1, cols=len(spaces), subplot_titles=[SPACE_NAMES.get(s, s) for s in spaces],
                        horizontal_spacing=0.08)
    palette = {1: 1.0, 10: 0.65, 100: 0.35}
    for c, space in enumerate(spaces, start=1):
        d = np.asarray(distances[space], dtype=np.float64)
        for r in ranks:
            if r > d.shape[1]:
                continue
            fig.add_trace(go.Histogram(
                x=d[:, r - 1], name=f"{space}: {_ordinal(r)} neighbour", nbinsx=nbins,
                marker=dict(color=SPACE_COLORS.get(space, "#555"), opacity=palette.get(r, 0.5),
                            line=dict(width=0.5, color="white")),
                legendgroup=space, meta={"space": space, "rank": int(r)},
                hovertemplate=f"{_ordinal(r)} neighbour<br>distance %{{x}}<br>maps %{{y}}<extra></extra>"),
                row=1, col=c)
            if target is not None and target.get(space) is not None and len(target[space]) >= r:
                v = float(np.sort(np.asarray(target[space], dtype=np.float64))[r - 1])
                fig.add_vline(x=v, row=1, col=c, line=dict(color=TARGET_COLOR, dash=RANK_DASH.get(r, "dashdot"), width=2),
                              annotation_text=f"target {_ordinal(r)}", annotation_font_size=9)
        fig.update_xaxes(title_text=f"distance ({SPACE_NAMES.get(space, space)})", row=1, col=c)
    fig.update_yaxes(title_text="maps", row=1, col=1)
    fig.update_layout(barmode="overlay", height=330, margin=dict(l=50, r=20, t=50, b=50),
                      legend=dict(orientation="h", y=-0.3), title=None)
    return fig


# --------------------------------------------------------------------------- target picker
@styled
def target_umap_figure(xy, *, labels=None, target: int | None = None, latent_nn=None, raw_nn=None,
                       height: int = 330) -> go.Figure:
    """Small UMAP to pick a target by clicking; the target and its neighbours highlighted.

    Trace 0 holds all maps with ``customdata`` = dataset index (click -> target).
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    Sc = scatter_trace(n)
    fig = go.Figure()
    from .common import cluster_color

    color = [cluster_color(v) for v in np.asarray(labels).tolist()] if labels is not None else "#888"
    fig.add_trace(Sc(x=xy[:, 0], y=xy[:, 1], mode="markers", name="maps",
                               customdata=event_list(np.arange(n)), marker=dict(size=4, color=color, opacity=0.6),
                               hovertemplate="map %{customdata}<extra></extra>", showlegend=False))
    for name, nn, sym, col in (("latent neighbours", latent_nn, "circle-open", SPACE_COLORS["latent"]),
                               ("raw-pixel neighbours", raw_nn, "x-thin-open", SPACE_COLORS["raw"])):
        if nn is not None and len(nn):
            nn = np.asarray(nn, dtype=np.int64)
            fig.add_trace(Sc(x=xy[nn, 0], y=xy[nn, 1], mode="markers", name=name, customdata=event_list(nn),
                                       marker=dict(size=9, symbol=sym, color=col, line=dict(width=2, color=col)),
                                       hovertemplate="map %{customdata}<extra>" + name + "</extra>"))
    if target is not None and 0 <= int(target) < n:
        t = int(target)
        fig.add_trace(Sc(x=[xy[t, 0]], y=[xy[t, 1]], mode="markers", name="target", customdata=[t],
                                   marker=dict(size=14, symbol="star", color=TARGET_COLOR, line=dict(width=1, color="black")),
                                   hovertemplate="target: map %{customdata}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title="click a map to make it the target",
                      legend=dict(orientation="h", y=-0.05), xaxis=dict(visible=False), yaxis=dict(visible=False),
                      uirevision="umap", clickmode="event")
    return fig
