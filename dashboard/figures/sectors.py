"""Figure 3C: cluster label of every (sector, time) as a heatmap, flow/vorticity sectors marked."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .common import CLASS_COLORS, NOISE_COLOR, TEMPLATE, cluster_colors, discrete_colorscale, event_list


def sector_heatmap(times, sectors, labels, k: int, sector_classes: dict | None = None, map_index=None, *,
                   height: int | None = None) -> go.Figure:
    """Heatmap z = ``labels`` (S, T): rows = sectors (y), columns = times (x).

    Parameters
    ----------
    times : (T,) float
        Acquisition times, s (``tables/times``).
    sectors : (S,) int
        Sector numbers of the rows (``tables/sectors``).
    labels : (S, T) int
        Cluster label of each cell, -1 = no map (``tables/sector_time_labels``); shown as is
        (z equals this matrix), -1 in light grey.
    k : int
        Number of clusters (colour levels 0..k-1).
    sector_classes : dict int -> str, optional
        'flow' / 'vorticity' / 'other' of each sector number; flow and vorticity rows get an
        outline in their class colour and a coloured tick label.
    map_index : (S, T) int, optional
        Map index of each cell (-1 none), as ``customdata`` for hover/click.
    """
    times = np.asarray(times, dtype=float)
    sectors = np.asarray(sectors, dtype=int)
    z = np.asarray(labels, dtype=np.int32)
    if z.shape != (sectors.size, times.size):
        raise ValueError(f"labels must be (S, T) = ({sectors.size}, {times.size}), got {z.shape}")
    k = max(int(k), int(z.max()) + 1 if z.size else 1, 1)
    colors = [NOISE_COLOR] + cluster_colors(k)
    custom = None if map_index is None else event_list(np.asarray(map_index, dtype=np.int32))
    fig = go.Figure(go.Heatmap(
        x=times, y=sectors, z=z, zmin=-1.5, zmax=k - 0.5, colorscale=discrete_colorscale(colors),
        customdata=custom, xgap=1 if times.size <= 100 else 0, ygap=1, name="cluster",
        colorbar=dict(title=dict(text="cluster"), tickvals=list(range(-1, k)), ticktext=["none"] + [str(i) for i in range(k)]),
        hovertemplate="t = %{x:.0f} s<br>sector %{y}<br>cluster %{z}<extra></extra>"))
    classes = sector_classes or {}
    ticktext = []
    for s in sectors:
        cls = classes.get(int(s), "other")
        if cls in ("flow", "vorticity"):
            ticktext.append(f"<span style='color:{CLASS_COLORS[cls]}'><b>{s} {cls[0].upper()}</b></span>")
        else:
            ticktext.append(str(s))
    for s in sectors:
        cls = classes.get(int(s))
        if cls in ("flow", "vorticity"):
            fig.add_shape(type="rect", xref="x domain", yref="y", x0=0, x1=1, y0=s - 0.5, y1=s + 0.5,
                          line=dict(color=CLASS_COLORS[cls], width=2), fillcolor="rgba(0,0,0,0)",
                          name=f"{cls}-sector-{int(s)}")
    for cls in ("flow", "vorticity"):  # legend entries for the outlines
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{cls} sector",
                                 line=dict(color=CLASS_COLORS[cls], width=3), showlegend=True, hoverinfo="skip"))
    fig.update_layout(template=TEMPLATE, height=height or max(360, 22 * sectors.size + 120), uirevision="sectors",
                      legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"), margin=dict(l=70, r=20, t=40, b=50))
    fig.update_xaxes(title_text="time since shear cessation (s)", showgrid=False)
    fig.update_yaxes(title_text="sector", tickvals=sectors.tolist(), ticktext=ticktext, showgrid=False,
                     range=[sectors.min() - 0.5, sectors.max() + 0.5] if sectors.size else None)
    return fig
