"""Figure 3D and Supplementary Fig. 4: the UMAP plane of all maps (WebGL scatter).

Points are coloured by cluster, sector class (categorical: one trace per category, so the legend
toggles them) or by time, sector, dynamics score, fitted rate or novelty score (continuous: one
trace with a colourbar; the novelty scale is fixed to [0, 1]). The
flow/vorticity share grid can be drawn underneath as a diverging heatmap (blue = flow = +1,
red = vorticity = -1, white = 0), and the maps of up to three time points highlighted.
Every point trace carries the map index as ``customdata`` (click, lasso).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .common import (CLASS_COLORS, FLOW_SHARE_COLORSCALE, SCORE_COLORSCALE, SECTOR_COLORSCALE, TEMPLATE,
                     TIME_COLORSCALE, cluster_color, event_list, scatter_trace)

COLOR_BY = {"cluster": "cluster", "time": "time (s)", "sector": "sector", "class": "flow / vorticity",
            "dynamics": "dynamics score", "rate": "log10 fitted rate", "novelty": "novelty score"}
NO_FIT_COLOR = "#d0d0d0"
RATE_COLORSCALE = "Plasma"  # no grey inside, unlike Cividis: the grey points are the failed fits
NOVELTY_COLORSCALE = "YlOrRd"  # 0 (typical of the model's data) pale .. 1 (novel) dark red; range fixed to [0, 1]
HIGHLIGHT_SYMBOLS = ("diamond", "square", "triangle-up")
HIGHLIGHT_COLORS = ("#000000", "#ff00ff", "#00c8c8")


def latent_figure(umap, color_by: str, values, *, flow_share=None, highlights=None, selected: int | None = None,
                  height: int = 620, point_size: float | None = None, color_title: str | None = None) -> go.Figure:
    """The UMAP scatter.

    Parameters
    ----------
    umap : (N, 2) float
        Coordinates of the maps (``results/umap``).
    color_by : str
        One of :data:`COLOR_BY`: ``"cluster"`` (values = int labels, -1 noise), ``"class"``
        (values = 'flow' / 'vorticity' / 'other'), ``"time"``, ``"sector"``, ``"dynamics"``,
        ``"rate"`` (values = numbers; NaN, e.g. a failed fit, drawn grey in a trace of its own).
    values : (N,) array
        The colouring variable.
    flow_share : tuple (x (G,), y (G,), share (G, G)), optional
        Drawn first as a heatmap layer (row index = y), colour range fixed to [-1, 1].
    highlights : list of (name, indices), optional
        Up to three groups (e.g. the 18 maps of a time point) drawn on top with big symbols.
    selected : int, optional
        One map index drawn with a ring (the clicked map).
    color_title : str, optional
        Colour-bar title of a continuous colouring (default: the :data:`COLOR_BY` label).
    """
    xy = np.asarray(umap, dtype=np.float32)
    n = xy.shape[0]
    values = np.asarray(values)
    if values.shape[0] != n:
        raise ValueError(f"values has {values.shape[0]} entries for {n} points")
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {sorted(COLOR_BY)}")
    size = point_size or (4 if n > 5000 else 6 if n > 1000 else 8)
    Sc = scatter_trace(n)
    fig = go.Figure()
    if flow_share is not None:
        _add_flow_share(fig, flow_share)
    index = np.arange(n, dtype=np.int32)
    hover = "map %{customdata}<extra>%{fullData.name}</extra>"
    if color_by in ("cluster", "class"):
        keys, cats, names, colors = _categories(color_by, values)
        for c in cats:
            m = keys == c
            fig.add_trace(Sc(x=xy[m, 0], y=xy[m, 1], mode="markers", name=names[c], customdata=event_list(index[m]),
                                       marker=dict(color=colors[c], size=size, line=dict(width=0)),
                                       hovertemplate=hover))
    else:
        scale = {"time": TIME_COLORSCALE, "sector": SECTOR_COLORSCALE, "dynamics": SCORE_COLORSCALE,
                 "rate": RATE_COLORSCALE, "novelty": NOVELTY_COLORSCALE}[color_by]
        numbers = values.astype(np.float32)
        have = np.isfinite(numbers)
        if not have.all():  # NaN colours are undefined in plotly: such points get a grey trace
            fig.add_trace(Sc(x=xy[~have, 0], y=xy[~have, 1], mode="markers", name="no fit" if color_by == "rate" else "no value",
                             customdata=event_list(index[~have]), marker=dict(color=NO_FIT_COLOR, size=size, line=dict(width=0)),
                             hovertemplate=hover))
        fig.add_trace(Sc(x=xy[have, 0], y=xy[have, 1], mode="markers", name=COLOR_BY[color_by], customdata=event_list(index[have]),
                                   marker=dict(color=numbers[have], colorscale=scale, size=size,
                                               line=dict(width=0), **({"cmin": 0.0, "cmax": 1.0}
                                                                      if color_by == "novelty" else {}),
                                               colorbar=dict(title=dict(text=color_title or COLOR_BY[color_by]), len=0.5, y=0.75)),
                                   hovertemplate="map %{customdata}<br>" + COLOR_BY[color_by]
                                   + " %{marker.color:.3g}<extra></extra>", showlegend=False))
    _add_marks(fig, xy, highlights, selected, size, hover)
    _style(fig, height)
    return fig


def _add_flow_share(fig, flow_share) -> None:
    """The flow/vorticity share grid ``(x (G,), y (G,), share (G, G))`` as a heatmap layer."""
    fx, fy, share = flow_share
    fig.add_trace(go.Heatmap(x=np.asarray(fx, dtype=np.float32), y=np.asarray(fy, dtype=np.float32),
                             z=np.asarray(share, dtype=np.float32), zmin=-1, zmax=1, zmid=0,
                             colorscale=FLOW_SHARE_COLORSCALE, opacity=0.55, name="flow share",
                             colorbar=dict(title=dict(text="flow - vorticity<br>share"), x=1.0, len=0.5, y=0.25,
                                           tickvals=[-1, 0, 1], ticktext=["vorticity", "0", "flow"]),
                             hovertemplate="flow share %{z:.2f}<extra></extra>", hoverongaps=False))


def _categories(color_by: str, values):
    """(key (N,) per point, categories in legend order, {category: name}, {category: colour}) of a
    categorical colouring ('cluster': int labels, -1 noise; 'class': flow / vorticity / other)."""
    if color_by == "cluster":
        cats = [int(c) for c in np.unique(values.astype(int))]
        return (values.astype(int), cats, {c: ("noise" if c < 0 else f"cluster {c}") for c in cats},
                {c: cluster_color(c) for c in cats})
    keys = values.astype(str)
    cats = [c for c in ("flow", "vorticity", "other") if np.any(keys == c)]
    return keys, cats, {c: c for c in cats}, {c: CLASS_COLORS[c] for c in cats}


def _add_marks(fig, xy, highlights, selected, size: float, hover: str) -> None:
    """Up to three highlighted groups (big symbols) and the selected map (a ring), on top."""
    Sc = scatter_trace(xy.shape[0])
    for i, (name, idx) in enumerate((highlights or [])[:3]):
        idx = np.asarray(idx, dtype=np.int32)
        fig.add_trace(Sc(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=str(name), customdata=event_list(idx),
                         marker=dict(symbol=HIGHLIGHT_SYMBOLS[i], size=size + 7, color=HIGHLIGHT_COLORS[i],
                                     opacity=0.9, line=dict(width=1.5, color="white")),
                         hovertemplate=hover))
    if selected is not None and 0 <= int(selected) < xy.shape[0]:
        s = int(selected)
        fig.add_trace(Sc(x=xy[[s], 0], y=xy[[s], 1], mode="markers", name=f"map {s}",
                         customdata=[s],
                         marker=dict(symbol="circle-open", size=size + 14, color="#000",
                                     line=dict(width=3, color="#000")), hovertemplate=hover))


def _style(fig, height: int) -> None:
    fig.update_layout(template=TEMPLATE, height=height, dragmode="lasso", hovermode="closest", uirevision="latent",
                      # the legend (clusters, highlighted times) above the plot, the colour bars at the
                      # right: a continuous colour bar never covers the highlighted-time legend
                      legend=dict(itemsizing="constant", orientation="h", x=0, xanchor="left", y=1.01,
                                  yanchor="bottom"),
                      margin=dict(l=50, r=20, t=70, b=50))
    fig.update_xaxes(title_text="UMAP 1", showgrid=False)
    fig.update_yaxes(title_text="UMAP 2", showgrid=False, scaleanchor=None)
