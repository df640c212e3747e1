"""Figures of the clusters page (pure: arrays in, ``go.Figure`` out).

Cluster colours are fixed per label (0 = slowest dynamics), so the same cluster has the same
colour in every panel; noise (-1) is grey.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import CLUSTER_COLORS, NOISE_COLOR, cluster_color  # noqa: F401 - the explorer's palette
from .common import image_grid_figure, scatter_trace, styled

METRICS = (("inertia", "inertia (elbow)", "lower is tighter"),
           ("silhouette", "silhouette", "higher is better"),
           ("davies_bouldin", "Davies-Bouldin", "lower is better"),
           ("calinski_harabasz", "Calinski-Harabasz", "higher is better"))


def cluster_name(label: int) -> str:
    return "noise" if label < 0 else f"cluster {int(label)}"


# --------------------------------------------------------------------------- k sweep
@styled
def k_sweep_figure(sweep: Mapping[str, np.ndarray], chosen_k: int | None = None,
                   suggested_k: int | None = None, k_rule: str | None = None) -> go.Figure:
    """Inertia (elbow), silhouette, Davies-Bouldin and Calinski-Harabasz vs k (2 x 2 panels).

    ``sweep`` holds ``k`` and any of the metric arrays (``kmeans/*`` results). Trace ``name`` is
    the metric key with ``y`` = that array; the chosen k is a vertical line in every panel plus a
    star marker trace ``"chosen k"`` on the metric; the suggested k (if different) a dotted line.
    """
    k = np.asarray(sweep["k"]).astype(int)
    present = [m for m in METRICS if sweep.get(m[0]) is not None]
    fig = make_subplots(rows=2, cols=2, subplot_titles=[f"{t} ({hint})" for _, t, hint in present] or None,
                        horizontal_spacing=0.1, vertical_spacing=0.18)
    for i, (key, title, _) in enumerate(present):
        r, c = i // 2 + 1, i % 2 + 1
        y = np.asarray(sweep[key], dtype=np.float64)
        fig.add_trace(go.Scatter(x=k, y=y, mode="lines+markers", name=key, showlegend=False,
                                 line=dict(color="#333"), hovertemplate=f"k=%{{x}}<br>{title} %{{y:.4g}}<extra></extra>"),
                      row=r, col=c)
        if chosen_k is not None and int(chosen_k) in k:
            j = int(np.flatnonzero(k == int(chosen_k))[0])
            fig.add_trace(go.Scatter(x=[int(chosen_k)], y=[y[j]], mode="markers", name="chosen k",
                                     legendgroup="chosen", showlegend=i == 0,
                                     marker=dict(symbol="star", size=16, color="#d62728", line=dict(width=1, color="black")),
                                     hovertemplate=f"chosen k=%{{x}}<br>{title} %{{y:.4g}}<extra></extra>"),
                          row=r, col=c)
            fig.add_vline(x=int(chosen_k), row=r, col=c, line=dict(color="#d62728", width=1.5))
        if suggested_k is not None and suggested_k != chosen_k and int(suggested_k) in k:
            j = int(np.flatnonzero(k == int(suggested_k))[0])
            fig.add_trace(go.Scatter(x=[int(suggested_k)], y=[y[j]], mode="markers", name="suggested k",
                                     legendgroup="suggested", showlegend=i == 0,
                                     marker=dict(symbol="diamond-open", size=14, color="#2ca02c", line=dict(width=2)),
                                     hovertemplate=f"suggested k=%{{x}}<br>{title} %{{y:.4g}}<extra></extra>"),
                          row=r, col=c)
            fig.add_vline(x=int(suggested_k), row=r, col=c, line=dict(color="#2ca02c", width=1.5, dash="dot"))
        fig.update_xaxes(title_text="k", dtick=1, row=r, col=c)
    note = []
    if chosen_k is not None:
        note.append(f"chosen k = {int(chosen_k)}")
    if suggested_k is not None:
        note.append(f"suggested k = {int(suggested_k)}")
    fig.update_layout(height=560, margin=dict(l=60, r=20, t=70, b=50),
                      title=dict(text="k-means sweep: " + ", ".join(note) if note else "k-means sweep", font=dict(size=14)),
                      legend=dict(orientation="h", y=1.1, x=1, xanchor="right"),
                      meta={"chosen_k": None if chosen_k is None else int(chosen_k),
                            "suggested_k": None if suggested_k is None else int(suggested_k), "k_rule": k_rule or ""})
    return fig


# --------------------------------------------------------------------------- scatter panels
@styled
def umap_panels_figure(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], *, height: int = 380,
                       title: str | None = None) -> go.Figure:
    """Side-by-side scatter panels ``{title: (xy (N, 2), labels (N,))}``, one trace per cluster
    (trace ``meta.panel`` = panel title, ``meta.label`` = cluster, ``customdata`` = map indices)."""
    names = list(panels)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names, horizontal_spacing=0.04)
    seen: set[int] = set()
    for c, name in enumerate(names, start=1):
        xy, labels = panels[name]
        labs = set(np.unique(np.asarray(labels)).astype(int).tolist())
        # legend: one entry per label, from the first panel that has it
        new = labs - seen
        _label_traces_subset(fig, xy, labels, c, new, name)
        seen |= labs
        fig.update_xaxes(visible=False, row=1, col=c)
        fig.update_yaxes(visible=False, row=1, col=c)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60 if title else 40, b=10), title=title,
                      legend=dict(itemsizing="constant"), plot_bgcolor="white")
    return fig


def _label_traces_subset(fig, xy, labels, col, legend_labels, panel):
    xy = np.asarray(xy, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    Sc = scatter_trace(len(labels))
    for lab in np.unique(labels):
        sel = np.flatnonzero(labels == lab)
        fig.add_trace(Sc(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=cluster_name(lab),
                                   legendgroup=cluster_name(lab), showlegend=int(lab) in legend_labels, customdata=sel,
                                   marker=dict(size=4, color=cluster_color(lab), opacity=0.75),
                                   meta={"label": int(lab), "panel": panel},
                                   hovertemplate=f"{panel}: {cluster_name(lab)}<br>map %{{customdata}}<extra></extra>"),
                      row=1, col=col)


@styled
def k_compare_umap_figure(xy, labels_by_k: Mapping[int, np.ndarray]) -> go.Figure:
    """k = 3 / 5 / 8 side by side on the same UMAP (panel titles ``k = 3`` ...)."""
    return umap_panels_figure({f"k = {int(k)}": (xy, lab) for k, lab in labels_by_k.items()},
                              title="the same maps clustered with k = " + " / ".join(str(int(k)) for k in labels_by_k))


@styled
def latent_vs_raw_umap_figure(umap_latent, umap_raw, labels) -> go.Figure:
    """UMAP of the latents next to the UMAP of the raw-pixel baseline, coloured by the same labels."""
    return umap_panels_figure({"UMAP of the latents": (umap_latent, labels),
                               "UMAP of raw pixels (PCA-50 first)": (umap_raw, labels)},
                              title="latent vs raw-pixel UMAP, coloured by the chosen clustering")


@styled
def counts_over_time_figure(times, counts_by_k: Mapping[int, np.ndarray]) -> go.Figure:
    """Stacked bars of maps per cluster at each time, one panel per k (shared y axis).

    Trace ``meta`` = ``{"k": k, "label": cluster}``, ``y`` = ``counts[:, cluster]``.
    """
    ks = list(counts_by_k)
    fig = make_subplots(rows=1, cols=max(1, len(ks)), subplot_titles=[f"k = {int(k)}" for k in ks],
                        shared_yaxes=True, horizontal_spacing=0.03)
    times = np.asarray(times, dtype=np.float64)
    width = float(np.median(np.diff(np.sort(times)))) * 0.9 if len(times) > 1 else 1.0
    seen: set[int] = set()
    for c, k in enumerate(ks, start=1):
        counts = np.asarray(counts_by_k[k])
        for lab in range(counts.shape[1]):
            fig.add_trace(go.Bar(x=times, y=counts[:, lab], width=width, name=cluster_name(lab),
                                 legendgroup=cluster_name(lab), showlegend=lab not in seen,
                                 marker=dict(color=cluster_color(lab), line=dict(width=0)),
                                 meta={"k": int(k), "label": int(lab)},
                                 hovertemplate=f"k={int(k)}, {cluster_name(lab)}<br>t=%{{x:.0f}} s<br>%{{y}} maps<extra></extra>"),
                          row=1, col=c)
            seen.add(lab)
        fig.update_xaxes(title_text="time since cessation (s)", row=1, col=c)
    fig.update_yaxes(title_text="maps", row=1, col=1)
    fig.update_layout(barmode="stack", bargap=0, height=340, margin=dict(l=50, r=10, t=40, b=50))
    return fig


# --------------------------------------------------------------------------- algorithms, stability
def algorithm_summary(labels_by_name: Mapping[str, np.ndarray]) -> list[dict]:
    """One row per algorithm: n_clusters, noise, largest cluster share, sizes (descending)."""
    rows = []
    for name, lab in labels_by_name.items():
        lab = np.asarray(lab)
        ids, counts = np.unique(lab[lab >= 0], return_counts=True)
        sizes = sorted((int(c) for c in counts), reverse=True)
        rows.append({"algorithm": name, "n_clusters": int(ids.size), "noise": int((lab < 0).sum()),
                     "largest_share": round(sizes[0] / lab.size, 3) if sizes else 0.0,
                     "sizes": " ".join(str(s) for s in sizes)})
    return rows


#: greys for "i-th largest cluster" of an algorithm: ranks, not clusters, so never the cluster
#: palette (one palette means "cluster" everywhere); dark = largest
RANK_GREYS = ("#252525", "#525252", "#737373", "#969696", "#b0b0b0", "#c8c8c8", "#dedede")


def rank_color(i: int) -> str:
    return RANK_GREYS[min(int(i), len(RANK_GREYS) - 1)]


@styled
def algorithm_sizes_figure(labels_by_name: Mapping[str, np.ndarray]) -> go.Figure:
    """Horizontal stacked bars: each algorithm's cluster sizes, largest first (greys by rank, not
    cluster colours: the i-th largest cluster of two algorithms is not the same cluster), noise
    last (hatched).

    Trace ``i`` (``name`` ``"i-th largest"``) holds, for each algorithm, the size of its i-th
    largest cluster (0 where it has fewer); trace ``"noise"`` the noise counts.
    """
    names = list(labels_by_name)
    sizes = []
    noise = []
    for name in names:
        lab = np.asarray(labels_by_name[name])
        _, counts = np.unique(lab[lab >= 0], return_counts=True)
        sizes.append(sorted(counts.tolist(), reverse=True))
        noise.append(int((lab < 0).sum()))
    depth = max((len(s) for s in sizes), default=0)
    fig = go.Figure()
    for i in range(depth):
        vals = [s[i] if i < len(s) else 0 for s in sizes]
        fig.add_trace(go.Bar(y=names, x=vals, orientation="h", name=f"{i + 1}. largest",
                             marker=dict(color=rank_color(i), line=dict(color="white", width=0.5)),
                             showlegend=i < 8, hovertemplate=f"%{{y}}: {i + 1}. largest cluster %{{x}} maps<extra></extra>"))
    if any(noise):
        fig.add_trace(go.Bar(y=names, x=noise, orientation="h", name="noise",
                             marker=dict(color="white", pattern=dict(shape="x", fgcolor="#888", size=6),
                                         line=dict(color="#888", width=0.5)),
                             hovertemplate="%{y}: noise %{x} maps<extra></extra>"))
    fig.update_layout(barmode="stack", height=max(220, 60 + 40 * len(names)), margin=dict(l=110, r=20, t=40, b=40),
                      title="cluster sizes per algorithm (largest first)", xaxis_title="maps",
                      legend=dict(orientation="h", y=-0.25))
    return fig


@styled
def stability_figure(ari: Mapping[str, np.ndarray]) -> go.Figure:
    """Box + points of the adjusted Rand index distributions, e.g. ``{"seeds": ..., "bootstrap": ...}``
    (trace ``name`` = key, ``y`` = the array)."""
    fig = go.Figure()
    for name, vals in ari.items():
        if vals is None:
            continue
        vals = np.asarray(vals, dtype=np.float64)
        fig.add_trace(go.Box(y=vals, name=name, boxpoints="all", jitter=0.4, pointpos=0,
                             hovertemplate=f"{name}: ARI %{{y:.3f}}<extra></extra>"))
    fig.update_layout(height=320, margin=dict(l=50, r=20, t=40, b=40), yaxis=dict(title="adjusted Rand index", range=[-0.05, 1.05]),
                      title="stability of the chosen clustering", showlegend=False)
    return fig


# --------------------------------------------------------------------------- examples
def draw_examples(labels, n_per_cluster: int, seed: int) -> dict[int, np.ndarray]:
    """Random example maps per cluster (without replacement, seeded): {label: indices}."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(int(seed))
    out = {}
    for lab in sorted(int(v) for v in np.unique(labels) if v >= 0):
        members = np.flatnonzero(labels == lab)
        out[lab] = np.sort(rng.choice(members, size=min(n_per_cluster, members.size), replace=False))
    return out


@styled
def examples_figure(examples: Mapping[int, Sequence[int]], urls: Mapping[int, Sequence[str]],
                    n_per_cluster: int, sizes: Mapping[int, int] | None = None, seed: int | None = None) -> go.Figure:
    """A row of thumbnails per cluster (row titles ``cluster c (n maps)``); tile customdata =
    ``[map index, cluster]``."""
    all_urls, custom, hover, rows = [], [], [], []
    for lab, idx in examples.items():
        idx = list(idx)
        u = list(urls[lab])
        rows.append(f"cluster {lab}" + (f"<br>({sizes[lab]} maps)" if sizes else ""))
        for j in range(n_per_cluster):
            if j < len(idx):
                all_urls.append(u[j])
                custom.append([int(idx[j]), int(lab)])
                hover.append(f"cluster {lab}, map {int(idx[j])}")
            else:
                all_urls.append(None)
                custom.append([-1, int(lab)])
                hover.append("")
    fig = image_grid_figure(all_urls, n_per_cluster, hover=hover, customdata=custom, row_titles=rows,
                            border_colors=[cluster_color(c[1]) if c[0] >= 0 else None for c in custom],
                            title=f"random example maps per cluster (seed {seed})" if seed is not None else None,
                            tile_px=90)
    return fig


@styled
def labels_scatter_figure(xy, labels, title: str) -> go.Figure:
    """One UMAP coloured by labels (re-clustering result)."""
    return umap_panels_figure({title: (xy, labels)}, height=380)
