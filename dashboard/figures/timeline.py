"""Figure 3A+B: shear stress vs time above the time-resolved cluster histogram.

One figure with two rows on a shared time axis (``make_subplots(shared_xaxes=True)``), so
zooming one zooms both; vertical dashed lines at the stress minima on every row; with fitted
rates a third row of the relaxation rate per time point (flow and vorticity sectors). Without
rheology the histogram is drawn alone.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import TEMPLATE, cluster_color, event_list

MINIMA_COLOR = "#555555"
#: above this many time points the histogram is drawn as stacked steps (same data, one SVG path
#: per cluster instead of one per bar: 723 x 5 bars take seconds to draw in a browser)
DENSE_TIMES = 150


def timeline_figure(times, counts, stress_time=None, stress=None, minima=None, *, k_label: str | None = None,
                    selected_time_index: int | None = None, height: int | None = None,
                    rates=None, rate_unit: str = "1/s", extra_panels=None) -> go.Figure:
    """Stress curve (top) and stacked cluster counts per time (bottom).

    Parameters
    ----------
    times : (T,) float
        Distinct acquisition times, s (``tables/times``).
    counts : (T, k) int
        Maps per cluster at each time (``tables/counts*``); trace ``c`` is cluster ``c``,
        ``customdata`` of each bar is its time index (row of ``times``) for click handling.
        Stacked bars; above :data:`DENSE_TIMES` time points stacked step areas
        (``stackgroup``), the same numbers drawn much faster.
    stress_time, stress : (M,) float, optional
        Rheology: time (s, XPCS clock) and shear stress (Pa). None: histogram only.
    minima : (P,) float, optional
        Times of the stress minima; a vertical line on every row at each.
    k_label : str, optional
        Legend title, e.g. ``"k = 5"``.
    selected_time_index : int, optional
        Outline that time's bar stack (the time whose maps are shown).
    rates : dict, optional
        Fitted relaxation rate per time point and sector class
        (:func:`dashboard.figures.dynamics.rate_per_time`): drawn as a further row below the
        histogram on the same time axis (log y, ``rate_unit`` in the axis title).
    extra_panels : list of (name, time (M,), values (M,), unit), optional
        More rheology rows between the stress and the histogram (e.g. ``("shear rate",
        t, rate, "1/s")``), each a line on the shared time axis (trace ``name`` = name),
        y axis titled ``"<name> (<unit>)"``; minima lines on them too.
    """
    times = np.asarray(times, dtype=float)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] != times.size:
        raise ValueError(f"counts must be (T, k) with T = {times.size}, got {counts.shape}")
    has_stress = stress_time is not None and stress is not None and np.size(stress) > 0
    has_rates = bool(rates)
    extras = [(str(n), np.asarray(t, dtype=float), np.asarray(v, dtype=float), str(u))
              for n, t, v, u in (extra_panels or []) if np.size(v) > 0]
    first_extra = 2 if has_stress else 1
    bar_row = first_extra + len(extras)
    rows = bar_row + (1 if has_rates else 0)
    fig = _grid(rows, has_stress, len(extras), has_rates)
    _add_rheology(fig, stress_time if has_stress else None, stress, extras, first_extra)
    width = float(np.min(np.diff(times))) * 0.85 if times.size > 1 else None
    dense = times.size > DENSE_TIMES
    _add_counts(fig, times, counts, bar_row, width, dense)
    if has_rates:
        from .dynamics import add_rate_panel

        add_rate_panel(fig, times, rates, row=rows, col=1, rate_unit=rate_unit)
    minima = np.asarray([] if minima is None else minima, dtype=float)
    for t in minima:
        for r in range(1, rows + 1):
            fig.add_vline(x=float(t), line=dict(color=MINIMA_COLOR, width=1, dash="dash"), row=r, col=1)
    if selected_time_index is not None and 0 <= int(selected_time_index) < times.size:
        _outline_time(fig, times, counts, int(selected_time_index), width, bar_row)
    fig.update_layout(template=TEMPLATE, barmode="stack", bargap=0.1, hovermode="x" if dense else "closest",
                      height=height or ((620 if has_stress else 380) + (220 if has_rates else 0) + 140 * len(extras)),
                      uirevision="timeline",
                      # the legend above the plot: visible without scrolling on a 1280 x 800 screen
                      legend=dict(title=dict(text=k_label or "cluster", side="left"), orientation="h", x=0,
                                  y=1.0, yanchor="bottom", xanchor="left", traceorder="normal"),
                      margin=dict(l=70, r=20, t=40, b=50), clickmode="event")
    fig.update_xaxes(title_text="time since shear cessation (s)", row=rows, col=1)
    fig.update_yaxes(title_text="maps per cluster", row=bar_row, col=1)
    if has_stress:
        fig.update_yaxes(title_text="shear stress (Pa)", row=1, col=1)
    if times.size and (has_stress or extras):
        # focus on the XPCS acquisitions after cessation: the pre-shear stress is orders of
        # magnitude larger and would flatten the relaxation (double-click autoscales)
        half = (width or 0.0) / 0.85 / 2 if width else 0.0
        lo, hi = float(times.min()) - half, float(times.max()) + half
        if has_stress:
            fig.update_xaxes(range=[lo, hi], row=rows, col=1)  # the bottom axis: the others match it
            _focus_y(fig, np.asarray(stress_time, dtype=float), np.asarray(stress, dtype=float), lo, hi, 1)
        for j, (_, et, ev, _) in enumerate(extras):  # the same focus for rate and viscosity
            _focus_y(fig, et, ev, lo, hi, first_extra + j)
    return fig


def _grid(rows: int, has_stress: bool, n_extras: int, has_rates: bool) -> go.Figure:
    """The stacked rows sharing the time axis: stress, extra rheology rows, counts, rates."""
    if rows == 1:
        return make_subplots(rows=1, cols=1)
    heights = ([0.42] if has_stress else []) + [0.22] * n_extras + [0.58 if not n_extras else 0.46] \
        + ([0.4] if has_rates else [])
    heights = [h / sum(heights) for h in heights][:rows]
    return make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04 if rows == 2 else 0.03,
                         row_heights=heights)


def _add_rheology(fig, stress_time, stress, extras, first_extra: int) -> None:
    """The stress curve (row 1; none without ``stress_time``) and the extra rheology rows."""
    for j, (name, et, ev, unit) in enumerate(extras):
        fig.add_trace(go.Scatter(x=et, y=ev, mode="lines", name=name, line=dict(color="#444", width=1.2),
                                 hovertemplate=f"t = %{{x:.0f}} s<br>{name} = %{{y:.3g}} {unit}<extra></extra>",
                                 showlegend=False), row=first_extra + j, col=1)
        fig.update_yaxes(title_text=f"{name} ({unit})", row=first_extra + j, col=1)
    if stress_time is not None:
        fig.add_trace(go.Scatter(x=np.asarray(stress_time, dtype=float), y=np.asarray(stress, dtype=float),
                                 mode="lines", name="shear stress", line=dict(color="#222", width=1.5),
                                 hovertemplate="t = %{x:.0f} s<br>stress = %{y:.3g} Pa<extra></extra>",
                                 legendgroup="stress", showlegend=False), row=1, col=1)


def _outline_time(fig, times, counts, ti: int, width, row: int) -> None:
    """A frame around time ``ti``'s bar stack (the time whose maps are shown)."""
    t = float(times[ti])
    half = (width or 1.0) / 2
    fig.add_shape(type="rect", x0=t - half, x1=t + half, y0=0, y1=float(counts[ti].sum()),
                  line=dict(color="#000", width=2), fillcolor="rgba(0,0,0,0)", row=row, col=1,
                  name="selected-time")


def _add_counts(fig, times, counts, row: int, width, dense: bool) -> None:
    """One trace per cluster of stacked counts; ``customdata`` = time index (clicks)."""
    index = np.arange(times.size)
    for c in range(counts.shape[1]):
        hover = f"t = %{{x:.0f}} s<br>cluster {c}: %{{y}} maps<extra></extra>"
        if dense:  # hundreds of time points: stacked steps (one path per cluster, not one per bar)
            trace = go.Scatter(x=times, y=counts[:, c].astype(np.int32), name=f"cluster {c}",
                               customdata=event_list(index), stackgroup="clusters", mode="lines",
                               line=dict(width=0.5, shape="hvh", color=cluster_color(c)),
                               fillcolor=cluster_color(c), hovertemplate=hover)
        else:
            trace = go.Bar(x=times, y=counts[:, c].astype(np.int32), name=f"cluster {c}", customdata=event_list(index),
                           marker=dict(color=cluster_color(c), line=dict(width=0)), width=width, hovertemplate=hover)
        fig.add_trace(trace, row=row, col=1)


def _focus_y(fig, t, values, lo: float, hi: float, row: int) -> None:
    """The y range of ``row`` spans the (finite) values at times in (max(lo, 0), hi], padded 6 %."""
    inside = (t > max(lo, 0.0)) & (t <= hi) & np.isfinite(values)
    if inside.sum() >= 2:
        y0, y1 = float(values[inside].min()), float(values[inside].max())
        pad = 0.06 * ((y1 - y0) or abs(y1) or 1.0)
        fig.update_yaxes(range=[y0 - pad, y1 + pad], row=row, col=1)
