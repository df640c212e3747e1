"""Figures of the model page (pure: arrays and image URLs in, ``go.Figure`` out)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from .common import image_grid_figure, styled


@styled
def learning_curve_figure(epoch, train_loss, val_loss=None, checkpoint_epoch=None) -> go.Figure:
    """Training and validation loss vs epoch (log y); the epoch whose weights the checkpoint holds
    is marked (trace ``"best checkpoint"``): ``checkpoint_epoch`` when given and on the curve (a
    ``train-randomized`` checkpoint holds its last weights), else the lowest validation loss."""
    epoch = np.asarray(epoch, dtype=np.float64)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=epoch, y=np.asarray(train_loss, dtype=np.float64), mode="lines+markers",
                             name="train loss", marker=dict(size=4)))
    best = None
    if val_loss is not None and len(val_loss):
        val = np.asarray(val_loss, dtype=np.float64)
        fig.add_trace(go.Scatter(x=epoch, y=val, mode="lines+markers", name="validation loss", marker=dict(size=4)))
        if np.isfinite(val).any():
            at = np.flatnonzero(epoch == float(checkpoint_epoch)) if checkpoint_epoch is not None else []
            j = int(at[0]) if len(at) else int(np.nanargmin(val))
            best = float(epoch[j])
            fig.add_trace(go.Scatter(x=[epoch[j]], y=[val[j]], mode="markers", name="best checkpoint",
                                     marker=dict(symbol="star", size=14, color="#d62728"),
                                     hovertemplate="best checkpoint: epoch %{x}<br>val loss %{y:.4g}<extra></extra>"))
    fig.update_layout(height=340, margin=dict(l=60, r=20, t=40, b=50), title="learning curve",
                      xaxis_title="epoch", yaxis=dict(title="loss (MSE)", type="log"), meta={"best_epoch": best})
    return fig


@styled
def latent_sweep_figure(latent_size, test_mse, chosen: int | None = 64) -> go.Figure:
    """Test MSE vs latent size (log2 x axis); the size in use is marked (trace ``"in use"``)."""
    size = np.asarray(latent_size, dtype=np.float64)
    mse = np.asarray(test_mse, dtype=np.float64)
    order = np.argsort(size)
    size, mse = size[order], mse[order]
    fig = go.Figure(go.Scatter(x=size, y=mse, mode="lines+markers", name="test MSE",
                               hovertemplate="latent size %{x}<br>test MSE %{y:.4g}<extra></extra>"))
    if chosen is not None and chosen in size:
        j = int(np.flatnonzero(size == chosen)[0])
        fig.add_trace(go.Scatter(x=[size[j]], y=[mse[j]], mode="markers", name="in use",
                                 marker=dict(symbol="star", size=14, color="#d62728")))
    fig.update_layout(height=340, margin=dict(l=60, r=20, t=40, b=50), title="latent-size sweep",
                      xaxis=dict(title="latent size", type="log", tickvals=size.tolist(),
                                 ticktext=[str(int(s)) for s in size]),
                      yaxis=dict(title="test MSE", type="log"))
    return fig


@styled
def reconstruction_figure(indices: Sequence[int], input_urls: Sequence[str], output_urls: Sequence[str],
                          mse: Sequence[float] | None = None, n_cols: int | None = None) -> go.Figure:
    """Inputs (top row of each pair) above their reconstructions (row below).

    With ``n_cols`` maps per row pair; tile customdata = ``[map index, 0 input / 1 output]``.
    """
    n = len(indices)
    n_cols = n_cols or n
    urls, custom, hover, captions, rows = [], [], [], [], []
    for start in range(0, n, n_cols):
        chunk = range(start, min(n, start + n_cols))
        for kind, src in ((0, input_urls), (1, output_urls)):
            rows.append("input" if kind == 0 else "reconstruction")
            for j in range(start, start + n_cols):
                if j in chunk:
                    urls.append(src[j])
                    custom.append([int(indices[j]), kind])
                    hover.append(f"map {int(indices[j])} {'input' if kind == 0 else 'reconstruction'}"
                                 + (f"<br>MSE {mse[j]:.4g}" if mse is not None else ""))
                    captions.append(f"map {int(indices[j])}" if kind == 0 else
                                    (f"MSE {mse[j]:.2g}" if mse is not None else ""))
                else:
                    urls.append(None)
                    custom.append([-1, kind])
                    hover.append("")
                    captions.append("")
    return image_grid_figure(urls, n_cols, customdata=custom, hover=hover, captions=captions, row_titles=rows,
                             title="maps drawn at random by precompute and their reconstructions", tile_px=100)


@styled
def noise_grid_figure(urls: Sequence[str], sigma: float | None = None, n_cols: int = 4) -> go.Figure:
    """Maps decoded from latent + Gaussian noise, in a grid (4 x 4 for 16)."""
    title = "decoded latent + Gaussian noise" + (f" (sigma = {sigma:g})" if sigma is not None else "")
    return image_grid_figure(list(urls), n_cols, customdata=[[i] for i in range(len(urls))],
                             hover=[f"artificial map {i}" for i in range(len(urls))], title=title, tile_px=110)
