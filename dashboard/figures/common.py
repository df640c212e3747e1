"""Shared styling of the dashboard's figures: colours, a lean template, array helpers.

Figure builders in :mod:`dashboard.figures` are pure functions (arrays in, ``go.Figure`` out);
they never touch datasets, files or Dash. Colours:

* clusters: :func:`cluster_color` (a colour-blind-safe qualitative palette, cluster 0 = slowest
  dynamics first); ``-1`` (noise / no map) is light grey;
* sector classes: :data:`CLASS_COLORS` (flow blue, vorticity red, other grey), matching the
  diverging flow-share colourscale :data:`FLOW_SHARE_COLORSCALE` (blue = flow = +1,
  red = vorticity = -1, white = 0).

Shared builders: :func:`styled` (a decorator giving a builder's figure the lean template) and
:func:`image_grid_figure` (PNG tiles in a grid, used by the similarity, clusters and model pages).
"""
from __future__ import annotations

import base64
import functools
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

#: Okabe-Ito + Tol colour-blind-safe colours; cluster i gets CLUSTER_COLORS[i % 12]
CLUSTER_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9",
                  "#F0E442", "#000000", "#882255", "#44AA99", "#999933", "#AA4499")
NOISE_COLOR = "#d9d9d9"
FLOW_COLOR, VORTICITY_COLOR, OTHER_COLOR = "#2166ac", "#b2182b", "#9e9e9e"
CLASS_COLORS = {"flow": FLOW_COLOR, "vorticity": VORTICITY_COLOR, "other": OTHER_COLOR}
#: diverging: -1 (vorticity) red, 0 white, +1 (flow) blue
FLOW_SHARE_COLORSCALE = [[0.0, "#b2182b"], [0.25, "#ef8a62"], [0.5, "#ffffff"], [0.75, "#67a9cf"], [1.0, "#2166ac"]]
TIME_COLORSCALE = "Viridis"
SECTOR_COLORSCALE = "Twilight"  # cyclic: sectors are azimuths
SCORE_COLORSCALE = "Cividis"

#: a small template (the default one adds ~8 kB to every figure sent to the browser)
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=12),
    paper_bgcolor="white", plot_bgcolor="white",
    xaxis=dict(showline=True, linecolor="#444", ticks="outside", zeroline=False, gridcolor="#eee"),
    yaxis=dict(showline=True, linecolor="#444", ticks="outside", zeroline=False, gridcolor="#eee"),
    hoverlabel=dict(namelength=-1), legend=dict(bgcolor="rgba(255,255,255,0.7)"),
    margin=dict(l=60, r=20, t=40, b=50)))


def cluster_color(label: int) -> str:
    """Colour of cluster ``label`` (``-1``: noise/no map)."""
    label = int(label)
    return NOISE_COLOR if label < 0 else CLUSTER_COLORS[label % len(CLUSTER_COLORS)]


def cluster_colors(k: int) -> list[str]:
    return [cluster_color(i) for i in range(int(k))]


def discrete_colorscale(colors: list[str]) -> list[list]:
    """A stepped colourscale giving each of ``len(colors)`` integer levels one flat colour
    (use with ``zmin = first level - 0.5``, ``zmax = last level + 0.5``)."""
    n = len(colors)
    scale = []
    for i, c in enumerate(colors):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


WEBGL_MIN_POINTS = 5000  # SVG scatter below (no WebGL needed), WebGL above


def scatter_trace(n_points: int):
    """``go.Scatter`` for small point clouds (works in browsers without WebGL, e.g. remote
    desktops at a beamline), ``go.Scattergl`` for large ones."""
    return go.Scattergl if n_points >= WEBGL_MIN_POINTS else go.Scatter


def event_list(values) -> list:
    """Values for ``customdata`` as a plain list. Numpy arrays would reach the browser as base64
    typed arrays, and dcc.Graph's click/hover/selection events then lose their customdata
    (it indexes ``gd.data[curve].customdata[point]`` on the undecoded object)."""
    return np.asarray(values).tolist()


def empty_figure(text: str, height: int = 300) -> go.Figure:
    """A blank figure carrying a message (used when data are missing)."""
    fig = go.Figure(layout=dict(template=TEMPLATE, height=height,
                                xaxis=dict(visible=False), yaxis=dict(visible=False)))
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14, color="#666"))
    return fig


def as_array(value) -> np.ndarray:
    """A plotly data value (list, numpy array, or a base64 typed-array dict
    ``{"dtype": "f8", "bdata": ..., "shape": "3, 4"}`` as sent to the browser) as an array."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value.get("dtype", "f8")))
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(s) for s in str(shape).split(",")])
        return arr
    if value is None:
        return np.asarray([])
    return np.asarray(value)


def styled(builder):
    """Give a figure builder's result the dashboard's lean template (theme only, data untouched)."""
    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
        fig = builder(*args, **kwargs)
        if isinstance(fig, go.Figure):
            fig.update_layout(template=TEMPLATE)
        return fig
    return wrapper


CAPTION_H = 0.2  # caption band under each tile, in tile heights


# --------------------------------------------------------------------------- image grids
@styled
def image_grid_figure(urls: Sequence[str], n_cols: int, *, captions: Sequence[str] | None = None,
                      hover: Sequence[str] | None = None, customdata: Sequence | None = None,
                      border_colors: Sequence[str | None] | None = None, row_titles: Sequence[str] | None = None,
                      title: str | None = None, tile_px: int = 110, uirevision=None) -> go.Figure:
    """Tiles of PNG images in a grid, row-major, tile i at (row i // n_cols, column i % n_cols).

    Parameters
    ----------
    urls : image URLs (the dashboard's opaque-id PNG route); empty/None leaves a blank tile.
    n_cols : tiles per row.
    captions : text under each tile; hover : hover text of each tile.
    customdata : per-tile data for click/hover callbacks (one list per tile).
    border_colors : colour of a frame around each tile (None = no frame).
    row_titles : a label left of each row.

    Each tile occupies the unit square [col, col + 1] x [-row - 1, -row] (y grows upward, so
    row 0 is on top); the invisible marker at the tile centre is trace 0's point i.
    """
    urls = list(urls)
    n = len(urls)
    n_cols = max(1, int(n_cols))
    n_rows = max(1, -(-n // n_cols))
    pad = 0.04
    pitch = 1.0 + (CAPTION_H if captions is not None else 0.0)  # row height in tile units
    cx = [i % n_cols + 0.5 for i in range(n)]
    cy = [-(i // n_cols) * pitch - 0.5 for i in range(n)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=cx, y=cy, mode="markers", name="maps", showlegend=False,
        marker=dict(size=max(8, tile_px - 10), symbol="square", opacity=0.0, color="#000"),
        text=list(hover) if hover is not None else None,
        hovertemplate="%{text}<extra></extra>" if hover is not None else None,
        hoverinfo=None if hover is not None else "skip",
        customdata=[list(c) if isinstance(c, (list, tuple, np.ndarray)) else [c] for c in customdata]
        if customdata is not None else None))
    images, shapes, annotations = [], [], []
    for i, url in enumerate(urls):
        col, row = i % n_cols, i // n_cols
        top = -row * pitch
        if url:
            images.append(dict(source=url, xref="x", yref="y", x=col + pad, y=top - pad,
                               sizex=1 - 2 * pad, sizey=1 - 2 * pad, xanchor="left", yanchor="top",
                               sizing="stretch", layer="below"))
        color = border_colors[i] if border_colors is not None else None
        if color:
            shapes.append(dict(type="rect", xref="x", yref="y", x0=col + pad / 2, x1=col + 1 - pad / 2,
                               y0=top - 1 + pad / 2, y1=top - pad / 2, line=dict(color=color, width=3)))
        if captions is not None and captions[i]:
            annotations.append(dict(x=col + 0.5, y=top - 1, xref="x", yref="y", text=captions[i],
                                    showarrow=False, yanchor="top", font=dict(size=10)))
    for r, label in enumerate(row_titles or []):
        annotations.append(dict(x=-0.05, y=-r * pitch - 0.5, xref="x", yref="y", text=label, showarrow=False,
                                xanchor="right", font=dict(size=11)))
    left = 90 if row_titles else 10
    top_m = 40 if title else 10
    fig.update_layout(
        images=images, shapes=shapes, annotations=annotations, title=title,
        height=int(n_rows * pitch * tile_px + top_m + 10),
        margin=dict(l=left, r=10, t=top_m, b=10), plot_bgcolor="white",
        hovermode="closest", dragmode=False, uirevision=uirevision)
    fig.update_xaxes(range=[0, n_cols], visible=False, fixedrange=True)
    fig.update_yaxes(range=[-n_rows * pitch, 0], visible=False, fixedrange=True, scaleanchor="x", scaleratio=1)
    return fig
