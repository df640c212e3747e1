"""Measured dynamics drawn the way a beamline viewer draws them (pure: arrays in, figures out).

The shared C2-map view of the dashboard is two figures side by side:

* :func:`c2_map_figure`: one C2 map with t1 (x) and t2 (y) in seconds (``c2_time_step_s``;
  pixels when the time step is unknown, and the axis titles say so), origin lower-left, a colour
  bar, colour limits at percentiles of the map (1-99 % by default) and, as an option, the spiky
  diagonal replaced by the mean of its two neighbouring off-diagonals
  (:func:`correct_diagonal`). The map travels as a server-rendered PNG (``layout.images``, a
  data URI), never as a heatmap array; an invisible scatter carries the colour bar.
* :func:`g2_figure`: the map's one-time correlation g2(tau) (precomputed
  ``/results/dynamics/g2`` against ``dynamics/g2_lag``, log lag axis), the fitted stretched
  exponential baseline + contrast * exp(-2 (rate tau)^stretching) and the fitted numbers
  (:func:`fit_rows`: rate ± stderr with unit, stretching, contrast, baseline, R², status).

Nothing here fits: the fit parameters come from precompute. :func:`rate_per_time` aggregates
the fitted rates per time point (median and quartiles, flow and vorticity sectors separately)
and :func:`add_rate_panel` draws them on a row of the timeline figure (log y axis).
:func:`order_text` words the cluster-ordering rule and its Spearman with the fitted rate.
"""
from __future__ import annotations

import base64
import json
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .common import CLASS_COLORS, TEMPLATE

from ainerd_core.dynamics import STATUS_NAMES, stretched_exponential

C2_COLORSCALE = "Viridis"  # the PNG renderer's default colormap (ainerd_core.imaging)
#: colour-limit choices of the view: key -> (low, high) percentile, None = the map's min and max
COLOR_LIMITS = {"1-99": (1.0, 99.0), "0.1-99.9": (0.1, 99.9), "5-95": (5.0, 95.0), "minmax": None}
COLOR_LIMIT_LABELS = {"1-99": "1-99 %", "0.1-99.9": "0.1-99.9 %", "5-95": "5-95 %", "minmax": "min-max"}
G2_COLOR, FIT_COLOR, RECON_COLOR = "#222222", "#d62728", "#1f77b4"
#: the fitted parameters stored under /results/dynamics/ (name, stderr name)
FIT_FIELDS = (("relaxation_rate", "rate_stderr"), ("stretching", "stretching_stderr"),
              ("contrast", "contrast_stderr"), ("baseline", "baseline_stderr"))


# --------------------------------------------------------------------------- the map
def correct_diagonal(c2) -> np.ndarray:
    """A copy of ``c2`` whose main diagonal is the mean of its two neighbouring off-diagonals.

    Real correlator output has a spiky diagonal (shot noise at lag 0); beamline viewers replace
    pixel (i, i) by the mean of the adjacent elements of the +1 and -1 diagonals that exist:
    (i, i+1), (i+1, i), (i-1, i), (i, i-1).

    Parameters
    ----------
    c2 : (n, n) array

    Returns
    -------
    (n, n) float32
    """
    a = np.array(c2, dtype=np.float32, copy=True)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a C2 map must be square, got shape {a.shape}")
    n = a.shape[0]
    if n < 2:
        return a
    upper, lower = np.diagonal(a, 1).astype(np.float64), np.diagonal(a, -1).astype(np.float64)
    total = np.zeros(n)
    count = np.zeros(n)
    total[:-1] += upper + lower   # (i, i+1) and (i+1, i) for i < n-1
    total[1:] += upper + lower    # (i-1, i) and (i, i-1) for i > 0
    count[:-1] += 2
    count[1:] += 2
    a[np.diag_indices(n)] = (total / count).astype(np.float32)
    return a


def color_limits(c2, limits: str | Sequence[float] | None = "1-99") -> tuple[float, float]:
    """(vmin, vmax) of a map: percentiles of its finite pixels (``"1-99"``, ``(0.5, 99.5)``...),
    or its min and max (``"minmax"`` / None). A flat map gets a unit-wide range."""
    a = np.asarray(c2, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return 0.0, 1.0
    pct = COLOR_LIMITS.get(limits, "bad") if isinstance(limits, str) else limits
    if pct == "bad":
        raise ValueError(f"colour limits must be one of {sorted(COLOR_LIMITS)} or (low, high) percentiles")
    if pct is None:
        lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = (float(v) for v in np.percentile(finite, [float(pct[0]), float(pct[1])]))
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def time_axis(n: int, time_step_s: float | None) -> tuple[float, str]:
    """(step per pixel, unit word) of a C2 axis: seconds when the time step is known, else pixels."""
    if time_step_s is not None and np.isfinite(time_step_s) and float(time_step_s) > 0:
        return float(time_step_s), "s"
    return 1.0, "pixel"


def _png_uri(c2, vmin: float, vmax: float) -> str:
    """The map as an indexed (palette) PNG data URI, origin lower-left: the viridis table of
    :func:`ainerd_core.imaging.colormap_lut`, one byte per pixel (a third of an RGB PNG's bytes,
    the same colours)."""
    import io

    from PIL import Image

    from ainerd_core.imaging import colormap_lut

    a = np.asarray(c2, dtype=np.float32)
    finite = np.isfinite(a)
    scaled = np.where(finite, (a - vmin) / ((vmax - vmin) or 1.0), 0.0)
    idx = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)[::-1]  # row 0 = t2 = 0 at the bottom
    img = Image.fromarray(np.ascontiguousarray(idx), mode="P")
    img.putpalette(colormap_lut("viridis").ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def c2_map_figure(c2, *, time_step_s: float | None = None, limits: str | Sequence[float] | None = "1-99",
                  diagonal_fix: bool = True, title: str | None = None, height: int = 380,
                  colorbar_title: str = "C2") -> go.Figure:
    """One C2 map with t1 / t2 axes, a colour bar and percentile colour limits.

    Parameters
    ----------
    c2 : (n, n) float
        The map as stored: row index = t2, column index = t1.
    time_step_s : float, optional
        Seconds per C2 pixel (dataset attr ``c2_time_step_s``); None or <= 0: axes in pixels,
        titled "(pixel; time step unknown)".
    limits : str or (low, high) or None
        Colour limits: a key of :data:`COLOR_LIMITS` or two percentiles; None = min-max.
    diagonal_fix : bool
        Replace the diagonal by the mean of its neighbouring off-diagonals first.
    title : str, optional

    Returns
    -------
    go.Figure
        One ``layout.images`` entry (the map, PNG data URI, stretched over [0, n * step] on both
        axes, pixel centres at (i + 1/2) step) and one invisible scatter trace named
        ``"colour scale"`` holding the colour bar (``marker.cmin`` / ``cmax`` = the limits).
        ``layout.meta`` holds ``{"vmin", "vmax", "time_step_s", "unit", "diagonal_fix", "limits"}``.
    """
    a = np.asarray(c2, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a C2 map must be square, got shape {a.shape}")
    n = a.shape[0]
    if diagonal_fix:
        a = correct_diagonal(a)
    vmin, vmax = color_limits(a, limits)
    step, unit = time_axis(n, time_step_s)
    span = n * step
    known = unit == "s"
    label = "(s)" if known else "(pixel; time step unknown)"
    limit_key = limits if isinstance(limits, str) or limits is None else f"{limits[0]:g}-{limits[1]:g}"
    limit_text = COLOR_LIMIT_LABELS.get(limit_key, f"{limit_key} %") if limit_key else "min-max"
    fig = go.Figure()
    # the colour bar: an invisible two-point scatter at opposite corners (also makes the axes exist)
    fig.add_trace(go.Scatter(
        x=[0.0, span], y=[0.0, span], mode="markers", name="colour scale", showlegend=False, hoverinfo="skip",
        marker=dict(size=1, opacity=0, color=[vmin, vmax], cmin=vmin, cmax=vmax, colorscale=C2_COLORSCALE,
                    showscale=True, colorbar=dict(title=dict(text=colorbar_title), thickness=14, len=0.9))))
    fig.add_layout_image(dict(source=_png_uri(a, vmin, vmax), xref="x", yref="y", x=0.0, y=span, sizex=span,
                              sizey=span, sizing="stretch", xanchor="left", yanchor="top", layer="below",
                              name="c2-map"))
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=60, r=10, t=56 if title else 30, b=72),
                      title=dict(text=title, font=dict(size=13), y=0.97, x=0.01, xanchor="left") if title else None, hovermode=False,
                      meta={"vmin": vmin, "vmax": vmax, "time_step_s": step if known else None, "unit": unit,
                            "diagonal_fix": bool(diagonal_fix), "limits": limit_text, "n": n})
    fig.update_xaxes(title_text=f"t1 {label}", range=[0.0, span], showgrid=False, constrain="domain")
    fig.update_yaxes(title_text=f"t2 {label}", range=[0.0, span], showgrid=False, scaleanchor="x",
                     scaleratio=1, constrain="domain")
    fig.add_annotation(text=f"colour: {limit_text} ({vmin:.3g}-{vmax:.3g})"
                       + (" · diagonal corrected" if diagonal_fix else ""),
                       xref="paper", yref="paper", x=0, y=-0.25, showarrow=False, xanchor="left", yanchor="top",
                       font=dict(size=10, color="#666"))
    return fig


# --------------------------------------------------------------------------- g2 and its fit
def _finite(v) -> bool:
    return v is not None and np.isfinite(float(v))


def status_name(code) -> str:
    """The text of a ``fit_status`` code (0..3), 'unknown' otherwise."""
    try:
        code = int(code)
    except (TypeError, ValueError):
        return "unknown"
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else "unknown"


def _pm(value, err, fmt="{:.3g}") -> str:
    if not _finite(value):
        return "n/a"
    text = fmt.format(float(value))
    return text + (f" ± {float(err):.2g}" if _finite(err) else "")


def fit_rows(fit: Mapping | None, rate_unit: str = "1/s") -> list[tuple[str, str]]:
    """The fitted numbers of one map as (name, text) rows, in the order a physicist reads them.

    Parameters
    ----------
    fit : mapping
        ``relaxation_rate``, ``rate_stderr``, ``stretching``, ``stretching_stderr``,
        ``contrast``, ``contrast_stderr``, ``baseline``, ``baseline_stderr``, ``fit_r2``,
        ``fit_status`` (int) of one map; missing entries show as n/a.
    rate_unit : str
        ``'1/s'`` or ``'1/pixel'``.
    """
    fit = dict(fit or {})
    rate, err = fit.get("relaxation_rate"), fit.get("rate_stderr")
    rows = [("relaxation rate Γ", _pm(rate, err) + (f" {rate_unit}" if _finite(rate) else ""))]
    if _finite(rate) and float(rate) > 0:
        tunit = "s" if rate_unit == "1/s" else "pixel"
        rows.append(("relaxation time 1/Γ", f"{1.0 / float(rate):.3g} {tunit}"))
    rows += [("stretching γ", _pm(fit.get("stretching"), fit.get("stretching_stderr"))),
             ("contrast β", _pm(fit.get("contrast"), fit.get("contrast_stderr"))),
             ("baseline", _pm(fit.get("baseline"), fit.get("baseline_stderr"))),
             ("R²", f"{float(fit['fit_r2']):.3f}" if _finite(fit.get("fit_r2")) else "n/a"),
             ("fit status", status_name(fit.get("fit_status")))]
    return rows


def fit_curve(lag, fit: Mapping, n: int = 200, max_lag: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(tau, model) of the fitted stretched exponential on a log grid spanning the positive lags
    (up to ``max_lag``, the last fitted lag, when given), or None when a parameter is missing."""
    params = [fit.get(k) for k in ("relaxation_rate", "stretching", "contrast", "baseline")]
    if not all(_finite(p) for p in params):
        return None
    lag = np.asarray(lag, dtype=np.float64)
    pos = lag[np.isfinite(lag) & (lag > 0)]
    if max_lag is not None and np.isfinite(max_lag):
        pos = pos[pos <= float(max_lag) * (1 + 1e-6)]
    if pos.size == 0:
        return None
    tau = np.geomspace(pos.min(), pos.max(), n)
    return tau, np.asarray(stretched_exponential(tau, *[float(p) for p in params]), dtype=np.float64)


def g2_figure(lag, g2, fit: Mapping | None = None, *, lag_unit: str = "s", rate_unit: str = "1/s",
              recon_g2=None, aged=None, ages=None, aged_lag=None, fit_max_lag: float | None = None,
              title: str | None = None, height: int = 380) -> go.Figure:
    """g2(tau) of one map with its fitted curve and the fitted numbers.

    Parameters
    ----------
    lag : (L,) float
        Lags (``dynamics/g2_lag``), seconds or pixels (``lag_unit``); lags <= 0 are not drawn
        (log axis).
    g2 : (L,) float
        The map's g2 (``dynamics/g2[i]``).
    fit : mapping, optional
        The map's fitted parameters (see :func:`fit_rows`); the curve is drawn when all four
        model parameters are finite (trace ``"fit"``), and the numbers are written in the plot.
    recon_g2 : (L,) float, optional
        The same diagonal average of the model's reconstruction (not fitted), dashed.
    aged : (W, Lw) float, optional
        Aged g2 per age window (``dynamics/aged_g2[i]``), thin lines from light (early) to dark
        (late); ``ages`` (W,) the window centres and ``aged_lag`` (Lw,) their lags, in
        ``lag_unit`` (default: ``lag[:Lw]``).
    fit_max_lag : float, optional
        The last lag the fit used: the curve is drawn up to it.
    """
    lag = np.asarray(lag, dtype=np.float64)
    g2 = np.asarray(g2, dtype=np.float64)
    if lag.shape != g2.shape:
        raise ValueError(f"lag {lag.shape} and g2 {g2.shape} differ")
    keep = np.isfinite(lag) & (lag > 0) & np.isfinite(g2)
    fit = dict(fit or {})
    fig = go.Figure()
    if aged is not None:
        aged = np.asarray(aged, dtype=np.float64)
        ages = np.arange(aged.shape[0]) if ages is None else np.asarray(ages, dtype=np.float64)
        alag = lag[:aged.shape[1]] if aged_lag is None else np.asarray(aged_lag, dtype=np.float64)
        for w in range(aged.shape[0]):
            ok = np.isfinite(alag) & (alag > 0) & np.isfinite(aged[w])
            if ok.sum() < 2:
                continue
            shade = int(190 - 150 * w / max(aged.shape[0] - 1, 1))  # later ages darker
            fig.add_trace(go.Scatter(x=alag[ok], y=aged[w, ok], mode="lines", name=f"aged g2, age {ages[w]:.3g} {lag_unit}",
                                     line=dict(width=1, color=f"rgb({shade},{shade},{min(shade + 50, 255)})"),
                                     legendgroup="aged", hovertemplate="tau %{x:.3g}<br>g2 %{y:.3g}<extra>%{fullData.name}</extra>"))
    fig.add_trace(go.Scatter(x=lag[keep], y=g2[keep], mode="markers", name="g2 (map)",
                             marker=dict(size=4, color=G2_COLOR),
                             hovertemplate=f"tau %{{x:.3g}} {lag_unit}<br>g2 %{{y:.4g}}<extra></extra>"))
    if recon_g2 is not None:
        r = np.asarray(recon_g2, dtype=np.float64)
        ok = np.isfinite(lag) & (lag > 0) & np.isfinite(r)
        fig.add_trace(go.Scatter(x=lag[ok], y=r[ok], mode="lines", name="reconstruction (not fitted)",
                                 line=dict(color=RECON_COLOR, dash="dash", width=1.5)))
    curve = fit_curve(lag[keep] if keep.any() else lag, fit, max_lag=fit_max_lag)
    status = status_name(fit.get("fit_status"))
    if curve is not None:
        fig.add_trace(go.Scatter(x=curve[0], y=curve[1], mode="lines", name="fit",
                                 line=dict(color=FIT_COLOR, width=2, dash="solid" if status == "ok" else "dot"),
                                 hovertemplate=f"tau %{{x:.3g}} {lag_unit}<br>fit %{{y:.4g}}<extra></extra>"))
    rows = fit_rows(fit, rate_unit) if fit else [("fit", "no fit stored")]
    text = "<br>".join(f"{k}: {v}" for k, v in rows if k != "relaxation time 1/Γ")
    corner = _empty_corner(lag[keep], g2[keep])
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.01 if corner == "lower left" else 0.99,
                       y=0.01 if corner == "lower left" else 0.99, xanchor="left" if corner == "lower left" else "right",
                       yanchor="bottom" if corner == "lower left" else "top",
                       showarrow=False, align="left", bgcolor="rgba(255,255,255,0.8)", bordercolor="#ccc",
                       font=dict(size=10), name="fit-numbers")
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=60, r=10, t=56 if title else 30, b=50),
                      title=dict(text=title, font=dict(size=13), y=0.97, x=0.01, xanchor="left") if title else None, hovermode="closest",
                      legend=dict(orientation="h", x=0, y=-0.25, font=dict(size=10)),
                      meta={"fit": {k: v for k, v in rows}, "status": status})
    fig.update_xaxes(title_text=f"lag τ ({lag_unit})" if lag_unit == "s" else "lag τ (pixel; time step unknown)",
                     type="log")
    fig.update_yaxes(title_text="g2(τ) (diagonal mean of C2)")
    return fig


def _empty_corner(lag, g2) -> str:
    """Where the fitted numbers cover fewer points: the upper right (last 45 % of the log lags,
    top 40 % of the g2 range) or the lower left (first 45 %, bottom 40 %); ties: upper right."""
    if lag.size < 4:
        return "upper right"
    u = np.log(lag)
    u = (u - u.min()) / (float(np.ptp(u)) or 1.0)
    v = (g2 - g2.min()) / (float(np.ptp(g2)) or 1.0)
    upper_right = int(np.sum((u > 0.55) & (v > 0.6)))
    lower_left = int(np.sum((u < 0.45) & (v < 0.4)))
    return "lower left" if lower_left < upper_right else "upper right"


def no_g2_figure(text: str, height: int = 380) -> go.Figure:
    """The g2 panel when no dynamics were stored (says why)."""
    fig = go.Figure(layout=dict(template=TEMPLATE, height=height, xaxis=dict(visible=False),
                                yaxis=dict(visible=False), margin=dict(l=20, r=10, t=16, b=20)))
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=12, color="#666"), name="no-g2")
    return fig


# --------------------------------------------------------------------------- the timeline panel
def rate_per_time(time_index, n_times: int, rate, status, classes,
                  groups: Sequence[str] = ("flow", "vorticity")) -> dict[str, dict[str, np.ndarray]]:
    """Median and quartiles of the fitted rate at each time point, per sector class.

    Parameters
    ----------
    time_index : (N,) int
        Row of each map in the time table (``tables/time_index``).
    n_times : int
        T, the number of time points.
    rate : (N,) float
        Fitted relaxation rate (``dynamics/relaxation_rate``).
    status : (N,) int
        ``dynamics/fit_status``; maps whose fit failed (status 3) are left out, as are
        non-finite rates; a decay outside the window (status 1, 2) keeps its bounded rate.
    classes : (N,) str
        'flow' / 'vorticity' / 'other' of each map.
    groups : classes to aggregate ('all' = every map).

    Returns
    -------
    dict class -> {"median", "q25", "q75" (T,) float (NaN where no fit), "n" (T,) int}
    """
    ti = np.asarray(time_index, dtype=np.int64)
    rate = np.asarray(rate, dtype=np.float64)
    ok = (np.asarray(status) != STATUS_NAMES.index("failed")) & np.isfinite(rate) & (rate > 0)
    classes = np.asarray(classes).astype(str)
    out = {}
    for g in groups:
        member = ok & ((classes == g) if g != "all" else True)
        med, q25, q75 = (np.full(n_times, np.nan) for _ in range(3))
        n = np.zeros(n_times, dtype=np.int64)
        order = np.argsort(ti[member], kind="stable")
        t_sorted, r_sorted = ti[member][order], rate[member][order]
        bounds = np.searchsorted(t_sorted, np.arange(n_times + 1))
        for t in range(n_times):
            vals = r_sorted[bounds[t]:bounds[t + 1]]
            n[t] = vals.size
            if vals.size:
                q25[t], med[t], q75[t] = np.percentile(vals, [25, 50, 75])
        out[g] = {"median": med, "q25": q25, "q75": q75, "n": n}
    return out


def _fill_rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def add_rate_panel(fig: go.Figure, times, per_class: Mapping[str, Mapping[str, np.ndarray]], *, row: int,
                   col: int = 1, rate_unit: str = "1/s") -> go.Figure:
    """Draw :func:`rate_per_time`'s result on ``row`` of a subplot figure (log y axis).

    Per class two traces: ``"<class> IQR"`` (a band from q25 to q75, one closed path) and
    ``"<class> median rate"`` (markers and lines; ``customdata`` = the number of fits).
    """
    times = np.asarray(times, dtype=np.float64)
    for cls, stats in per_class.items():
        color = CLASS_COLORS.get(cls, "#555555")
        med, lo, hi, n = (np.asarray(stats[k]) for k in ("median", "q25", "q75", "n"))
        have = np.isfinite(med)
        if not have.any():
            continue
        t, lo_h, hi_h = times[have], lo[have], hi[have]
        fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([hi_h, lo_h[::-1]]),
                                 fill="toself", fillcolor=_fill_rgba(color, 0.18), line=dict(width=0),
                                 mode="lines", name=f"{cls} IQR", legendgroup=f"rate-{cls}", showlegend=False,
                                 hoverinfo="skip"), row=row, col=col)
        fig.add_trace(go.Scatter(x=t, y=med[have], mode="lines+markers", name=f"{cls} median rate",
                                 legendgroup=f"rate-{cls}", line=dict(color=color, width=1.5),
                                 marker=dict(size=4, color=color), customdata=n[have].tolist(),
                                 hovertemplate=f"t = %{{x:.0f}} s<br>{cls}: median Γ %{{y:.3g}} {rate_unit}"
                                               "<br>%{customdata} fits<extra></extra>"), row=row, col=col)
    fig.update_yaxes(type="log", title_text=f"fitted Γ ({rate_unit})", row=row, col=col)
    return fig


# --------------------------------------------------------------------------- ordering
def order_text(result_attrs: Mapping) -> tuple[str, bool]:
    """(a sentence on how clusters are ordered and how well that matches the fitted rate,
    whether the order is unknown).

    Reads the ``/results`` attrs ``order_rule``, ``order_spearman_json`` ({k: Spearman(label,
    fitted rate)}), ``dynamics_source``; older results name only ``order_feature_name``.
    """
    rule = str(result_attrs.get("order_rule") or "").strip()
    source = str(result_attrs.get("dynamics_source") or "").strip()
    unknown = source == "none" or "unknown" in rule.lower()
    if not rule:
        feature = str(result_attrs.get("order_feature_name") or "").strip()
        if not feature:
            return "The cluster order of these results is not recorded.", True
        return (f"Clusters are ordered by a proxy, not by a fitted rate (these results predate the fits): "
                f"{feature}.", False)
    if unknown:
        detail = rule
        for prefix in ("order unknown:", "unknown:"):
            if detail.lower().startswith(prefix):
                detail = detail[len(prefix):].strip()
        text = f"Cluster order unknown: {detail.rstrip('.')}."
        if "cluster numbers" not in detail.lower():
            text += " Cluster numbers are arbitrary labels here, not a ranking by dynamics."
        return text, True
    text = f"Cluster order: {rule}"
    try:
        rho = json.loads(result_attrs.get("order_spearman_json") or "{}")
    except (TypeError, ValueError):
        rho = {}
    if isinstance(rho, dict) and rho:
        parts = []
        for k in sorted(rho, key=lambda s: (len(str(s)), str(s))):
            v = rho[k]
            digits = "".join(ch for ch in str(k) if ch.isdigit())  # "5", "k5" or "labels_k5"
            name = f"k = {digits}" if digits and str(k).lstrip("labels_k") == digits else str(k)
            try:
                parts.append(f"{name}: {float(v):+.2f}" if _finite(v) else f"{name}: n/a")
            except (TypeError, ValueError):
                parts.append(f"{name}: {v}")
        text += ". Spearman(cluster label, fitted rate): " + ", ".join(parts)
    if source:
        text += f". Dynamics measured on: {source}"
    return text.rstrip(".") + ".", False
