"""Dynamics of C2 maps as beamline analysis measures them: one-time g2 from the two-time map,
aged g2, and a batched robust fit of a stretched exponential (METHOD.md section 8).

``g2(tau) = baseline + contrast * exp(-2 (rate * tau)^stretching)``

* :func:`g2_from_c2`: g2 of each map by averaging C2 along its diagonals (lag 0 excluded by
  default: the diagonal is dominated by shot noise in real correlator output).
* :func:`aged_g2`: the same within age windows (square sub-maps along the diagonal), so aging
  *within* one map shows as slower decay in later windows.
* :func:`fit_g2`: all curves at once. A coarse grid over (rate, stretching) with the linear
  parameters (baseline, contrast >= 0) solved in closed form for every grid node, then a batched
  Levenberg-Marquardt refinement of all four parameters with Huber weights (iteratively
  reweighted, robust to spikes and fringes), bounds by projection, standard errors from the
  weighted Jacobian, a goodness of fit and a status per map (:data:`STATUS_NAMES`).
* :func:`measure_dynamics`: the arrays stored under ``/results/dynamics`` by precompute.

Everything is in numpy and vectorised over maps; no per-map Python loop in the fit.
Units: lags in seconds when the time step per C2 pixel is known (``c2_time_step_s``), else in
pixels; rates in 1/s or 1/pixel accordingly. Works on raw maps (baseline ~1, contrast ~0.2) and
on maps min-max normalised to [0, 1] (baseline and contrast free).
"""
from __future__ import annotations

import math

import numpy as np

STATUS_NAMES = ("ok", "no decay within window", "decays within first lag", "failed")
STATUS_OK, STATUS_NO_DECAY, STATUS_FIRST_LAG, STATUS_FAILED = 0, 1, 2, 3
STRETCH_BOUNDS = (0.3, 2.0)
# rate bounds relative to the lag window: 0.02 / tau_max (1/e decay far beyond the window) to
# 5 / tau_min (fully decayed well within the first lag)
RATE_LO_FACTOR, RATE_HI_FACTOR = 0.02, 5.0
HUBER_C = 1.345        # Huber threshold in robust standard deviations (95 % efficiency for Gaussian noise)
NO_DECAY_FRACTION = 0.5   # < half of the contrast decayed by the last fitted lag -> 'no decay within window'
FIRST_LAG_FRACTION = 0.9
FLOOR_FACTOR = 1.5  # 1.0 ranks slow maps best but biases nearly complete decays (known-curve test)
ORDER_RULE = ("clusters renumbered by the median fitted relaxation rate of their maps (fit of "
              "g2 = baseline + contrast exp(-2 (rate tau)^stretching) to each map's one-time g2): "
              "0 = slowest, last = fastest; failed fits use the latent-regression fill")
ORDER_UNKNOWN = ("order UNKNOWN: no C2 maps and no decoder for the latents, so no dynamics can be "
                 "measured; cluster numbers are k-means' own and carry no meaning")


# --------------------------------------------------------------------------- model
def stretched_exponential(tau, rate, stretching, contrast, baseline):
    """``baseline + contrast * exp(-2 (rate * tau)^stretching)``, broadcasting numpy arrays.

    Parameters
    ----------
    tau : lag(s), s or pixels (>= 0)
    rate : relaxation rate Gamma, 1/s or 1/pixel (same time unit as tau)
    stretching : gamma (< 1 stretched, > 1 compressed)
    contrast : beta (speckle visibility, or the normalised map's decay amplitude)
    baseline : g2 at infinite lag
    """
    x = np.power(np.abs(np.asarray(rate, dtype=np.float64) * np.asarray(tau, dtype=np.float64)), stretching)
    return baseline + contrast * np.exp(-2.0 * x)


# --------------------------------------------------------------------------- g2 from C2
def _as_maps(maps) -> np.ndarray:
    m = np.asarray(maps, dtype=np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1] != m.shape[2]:
        raise ValueError(f"maps must be (N, L, L) square C2 maps, got shape {m.shape}")
    return m


def g2_from_c2(maps, *, exclude_lag0: bool = True):
    """One-time g2 of each two-time map by averaging along its diagonals.

    Parameters
    ----------
    maps : (N, L, L) or (L, L) float array, C2(t1, t2) on a uniform time grid.
    exclude_lag0 : drop lag 0 (the main diagonal; spiky in real correlator output).

    Returns
    -------
    lag_px : (L',) int, lags in C2 pixels (1..L-1, or 0..L-1 with lag 0)
    g2 : (N, L') float32, mean of C2 over all (t1, t2) with |t2 - t1| = lag (both triangles
        are averaged, so a map stored with only its upper triangle must be made symmetric first)
    counts : (L',) int, distinct (t1, t2) pairs per lag (L - lag): the weight of each point
    """
    m = _as_maps(maps)
    n, L = m.shape[0], m.shape[1]
    g2 = np.empty((n, L), np.float32)
    g2[:, 0] = np.diagonal(m, 0, 1, 2).mean(axis=-1)
    for d in range(1, L):
        up = np.diagonal(m, d, 1, 2).sum(axis=-1, dtype=np.float64)
        lo = np.diagonal(m, -d, 1, 2).sum(axis=-1, dtype=np.float64)
        g2[:, d] = (up + lo) / (2.0 * (L - d))
    lag = np.arange(L)
    counts = (L - lag).astype(np.int64)
    if exclude_lag0:
        return lag[1:], g2[:, 1:], counts[1:]
    return lag, g2, counts


def aged_g2(maps, n_windows: int = 4, *, exclude_lag0: bool = True):
    """g2 within age windows along the diagonal (age = (t1 + t2) / 2).

    The map is cut into ``n_windows`` square blocks ``C2[a:a+w, a:a+w]`` (w = L // n_windows)
    along its diagonal; each block's g2 (:func:`g2_from_c2`) is the g2 of the sample at that
    age, so aging within one measurement shows as slower decay in later windows.

    Returns
    -------
    age_px : (W,) float, window centres in C2 pixels from the map's first frame
    lag_px : (Lw,) int, lags in pixels (1..w-1 by default)
    g2 : (N, W, Lw) float32
    """
    m = _as_maps(maps)
    n, L = m.shape[0], m.shape[1]
    n_windows = int(n_windows)
    if n_windows < 1 or L // n_windows < 3:
        raise ValueError(f"n_windows must be 1..{L // 3} for {L}-pixel maps, got {n_windows}")
    w = L // n_windows
    out = None
    ages = np.empty(n_windows)
    for k in range(n_windows):
        a = k * w
        lag, g, _ = g2_from_c2(m[:, a:a + w, a:a + w], exclude_lag0=exclude_lag0)
        if out is None:
            out = np.empty((n, n_windows, lag.size), np.float32)
        out[:, k] = g
        ages[k] = a + (w - 1) / 2.0
    return ages, lag, out


# --------------------------------------------------------------------------- batched fit
def _wls_linear(E, Y, w, top_max, beta_max):
    """Weighted linear least squares of Y on [1, E] for every (map, grid node).

    E (G, L) basis curves, Y (N, L) data, w (L,) weights, top_max (N,) upper bound of the
    curve at lag 0 (baseline + contrast). Returns (baseline (N, G), contrast (N, G), weighted
    SSR (N, G)) with contrast >= 0 (a rising curve is no decay: contrast 0, baseline = weighted
    mean) and baseline + contrast <= top_max (then the contrast is re-solved with the top fixed)."""
    sw = w.sum()
    swe = E @ w                      # (G,)
    swee = (E * E) @ w               # (G,)
    Yw = Y * w
    swy = Yw.sum(axis=1)             # (N,)
    swyy = (Yw * Y).sum(axis=1)      # (N,)
    swey = Yw @ E.T                  # (N, G)
    det = sw * swee - swe * swe      # (G,)
    det = np.where(np.abs(det) > 1e-300, det, np.inf)
    beta = np.maximum((sw * swey - swe[None] * swy[:, None]) / det[None], 0.0)
    base = (swy[:, None] - beta * swe[None]) / sw
    T = top_max[:, None]
    over = base + beta > T
    if np.any(over):
        # top fixed at T: y - T = -beta (1 - e)  ->  beta = sum w (T - y)(1 - e) / sum w (1 - e)^2
        shh = np.maximum(sw - 2 * swe + swee, 1e-300)[None]
        bc = np.maximum((T * (sw - swe)[None] - (swy[:, None] - swey)) / shh, 0.0)
        beta = np.where(over, bc, beta)
        base = np.where(over, T - bc, base)
    # contrast bound (the baseline may not sit below the map's lowest pixel): clip, and put the
    # top where the data want it, under its own bound
    bm = beta_max[:, None]
    high = beta > bm
    if np.any(high):
        beta = np.where(high, bm, beta)
        base = np.where(high, np.minimum((swy[:, None] - bm * swe[None]) / sw + bm, T) - bm, base)
    # SSR = sum w (y - b - beta e)^2 expanded
    ssr = (swyy[:, None] - 2 * base * swy[:, None] - 2 * beta * swey + base * base * sw
           + 2 * base * beta * swe[None] + beta * beta * swee[None])
    return base, beta, np.maximum(ssr, 0.0)


def _model_and_jac(tau, p):
    """Model (N, L) and Jacobian (4, N, L) wrt (top = baseline + contrast, contrast, ln rate,
    stretching); the top parameter makes the bound 'curve at lag 0 <= diagonal' a box bound.
    (Parameter-major so that each derivative is one contiguous (N, L) block.)"""
    top, beta, lnr, g = (p[:, i:i + 1] for i in range(4))
    lx = lnr + np.log(tau)[None]           # ln(rate tau)
    u = np.exp(np.clip(g * lx, -700, 50))  # (rate tau)^stretching
    e = np.exp(-2.0 * u)
    f = top - beta + beta * e
    J = np.empty((4,) + f.shape)
    J[0] = 1.0
    J[1] = e - 1.0
    de = -2.0 * beta * e * u
    J[2] = de * g
    J[3] = de * lx
    return f, J


def _normal_equations(W, J, r=None):
    """J^T W J (N, 4, 4) and, with residuals r, J^T W r (N, 4) from J (4, N, L): ten
    elementwise product sums instead of a three-operand einsum (2x faster, measured)."""
    Jw = J * W[None]
    A = np.empty((W.shape[0], 4, 4))
    for i in range(4):
        for j in range(i, 4):
            A[:, i, j] = A[:, j, i] = np.einsum("nl,nl->n", Jw[i], J[j])
    if r is None:
        return A
    return A, np.einsum("inl,nl->ni", Jw, r)


def _robust_sigma(r, w):
    """Per-map robust residual scale: 1.4826 x median |r sqrt(w / mean w)|."""
    z = np.abs(r) * np.sqrt(w / w.mean())[None]
    s = 1.4826 * np.median(z, axis=1)
    return np.maximum(s, 1e-12 + 1e-9 * np.abs(r).max(axis=1))


def fit_g2(tau, g2, counts=None, *, lag0=None, floor=None, n_iter: int = 20, n_reweight: int = 3, rate_bounds=None,
           stretch_bounds=STRETCH_BOUNDS) -> dict:
    """Fit ``baseline + contrast exp(-2 (rate tau)^stretching)`` to many g2 curves at once.

    Parameters
    ----------
    tau : (L,) float, lags > 0 (s or pixels)
    g2 : (N, L) float, the curves
    counts : (L,) pairs averaged per lag (weights; default 1)
    lag0 : (N,) optional g2 at lag 0. It bounds the fitted curve at lag 0 (baseline +
        contrast <= the diagonal + 5 % of its excess: without it a tiny stretching with a huge
        contrast can mimic a drop before the first lag) and tells 'decays within first lag' (the diagonal
        stands out above a flat curve) from 'no decay within window' when the curve shows no
        significant decay.
    floor : (N,) optional lowest value of each map: the contrast is bounded by
        FLOOR_FACTOR (1.5) x (top bound - floor), so a decay that has barely started cannot
        extrapolate to a baseline far below every pixel of the map (its rate would then follow
        the noise). A curve whose contrast sits on that bound gets the status 'no decay within
        window': its rate is an upper bound. On simulated sets (benchmarks/dynamics_spearman.py)
        the rank order barely changes (mean Spearman with the true rate 0.833 -> 0.839 at aging
        -1.2, 0.904 -> 0.909 at fringe strength 0.1, others within 0.001); on the decoded E031
        maps the slowest cluster's median rate goes from 8e-5 to 2e-3 1/pixel instead of an
        extrapolation to a baseline far below the map.
    n_iter : at most this many Levenberg-Marquardt iterations per reweighting round (each map
        stops when a step no longer lowers its cost)
    n_reweight : rounds of Huber weights recomputed from the residuals (iteratively reweighted)
    rate_bounds : (lo, hi), default (0.02 / tau_max, 5 / tau_min)
    stretch_bounds : (lo, hi) for the stretching exponent, default (0.3, 2)

    Returns
    -------
    dict of (N,) float64 arrays ``rate``, ``rate_stderr``, ``stretching``, ``stretching_stderr``,
    ``contrast``, ``contrast_stderr``, ``baseline``, ``baseline_stderr``, ``fit_r2``, and
    ``fit_status`` (N,) int8 (codes of :data:`STATUS_NAMES`).
    """
    tau = np.asarray(tau, dtype=np.float64)
    y = np.asarray(g2, dtype=np.float64)
    if y.ndim == 1:
        y = y[None]
    n, L = y.shape
    if tau.shape != (L,) or np.any(tau <= 0):
        raise ValueError("tau must be (L,) positive lags matching g2's last axis")
    w = np.ones(L) if counts is None else np.asarray(counts, dtype=np.float64)
    w = w / w.mean()
    rate_bounds = rate_bounds or (RATE_LO_FACTOR / tau.max(), RATE_HI_FACTOR / tau.min())
    out = {k: np.full(n, np.nan) for k in ("rate", "rate_stderr", "stretching", "stretching_stderr", "contrast",
                                           "contrast_stderr", "baseline", "baseline_stderr", "fit_r2")}
    status = np.full(n, STATUS_FAILED, np.int8)
    good = np.all(np.isfinite(y), axis=1) & (np.ptp(y, axis=1) > 0)
    if not good.any() or L < 5:
        out["fit_status"] = status
        return out
    idx = np.nonzero(good)[0]
    Y = y[idx]
    l0 = None if lag0 is None else np.asarray(lag0, np.float64)[idx]
    fl = None if floor is None else np.asarray(floor, np.float64)[idx]
    top_max, beta_max = _upper_bounds(Y, l0, fl)
    # 1. grid start, 2. robust Levenberg-Marquardt, 3. uncertainties, goodness of fit, status
    p = _grid_start(tau, Y, w, top_max, beta_max, rate_bounds, stretch_bounds)
    p, W, J, r = _refine(tau, Y, w, p, top_max, beta_max, rate_bounds, stretch_bounds, n_iter, n_reweight)
    values, r2 = _uncertainties(tau, Y, w, W, J, r, p)
    for key, val in values.items():
        out[key][idx] = val
    st, flat_fast, flat_slow = _status(tau, Y, w, r, p, r2, l0, beta_max)
    # no significant decay in the window: the rate is only known to be beyond a bound
    out["rate"][idx[flat_fast]] = rate_bounds[1]
    out["rate"][idx[flat_slow]] = rate_bounds[0]
    status[idx] = st
    out["fit_status"] = status
    return out


def _upper_bounds(Y, lag0, floor) -> tuple[np.ndarray, np.ndarray]:
    """Per-curve upper bounds of the curve at lag 0 (``top_max``) and of the contrast
    (``beta_max``); inf where ``lag0`` / ``floor`` are not given (see :func:`fit_g2`)."""
    top_max = np.full(len(Y), np.inf)
    if lag0 is not None:
        # the fitted curve at lag 0 may not rise above the diagonal (plus 5 % of the diagonal's
        # excess): else a tiny stretching with a huge contrast mimics a drop before the first lag
        top_max = np.where(np.isfinite(lag0), lag0 + 0.05 * np.abs(lag0 - Y.min(axis=1)) + 1e-9, np.inf)
    beta_max = np.full(len(Y), np.inf)
    if floor is not None:
        # contrast <= FLOOR_FACTOR x (top bound - the map's lowest pixel): a decay that has barely
        # started cannot extrapolate to a baseline far below every pixel of the map
        beta_max = np.where(np.isfinite(floor) & np.isfinite(top_max),
                            np.maximum(FLOOR_FACTOR * (top_max - floor), 1e-12), np.inf)
    return top_max, beta_max


def _grid_start(tau, Y, w, top_max, beta_max, rate_bounds, stretch_bounds) -> np.ndarray:
    """Starting parameters (n, 4) = (top, contrast, ln rate, stretching): the best of a grid of
    48 rates (log-spaced over the bounds) x 8 stretchings, the linear parameters exact."""
    (lo_r, hi_r), (lo_g, hi_g) = rate_bounds, stretch_bounds
    lr_grid = np.linspace(math.log(lo_r), math.log(hi_r), 48)
    g_grid = np.linspace(lo_g, hi_g, 8)
    LR, GG = (a.ravel() for a in np.meshgrid(lr_grid, g_grid, indexing="ij"))
    E = np.exp(-2.0 * np.exp(np.clip(GG[:, None] * (LR[:, None] + np.log(tau)[None]), -700, 50)))
    base, beta, ssr = _wls_linear(E, Y, w, top_max, beta_max)
    best = np.argmin(ssr, axis=1)
    rows = np.arange(len(Y))
    return np.stack([base[rows, best] + beta[rows, best], beta[rows, best], LR[best], GG[best]], axis=1)


def _refine(tau, Y, w, p, top_max, beta_max, rate_bounds, stretch_bounds, n_iter, n_reweight):
    """Batched Levenberg-Marquardt with Huber weights (iteratively reweighted), within the
    bounds; returns the parameters, the last weights, the Jacobian and the residuals."""
    (lo_r, hi_r), (lo_g, hi_g) = rate_bounds, stretch_bounds
    n = len(Y)
    lo_p = np.broadcast_to(np.array([-np.inf, 0.0, math.log(lo_r), lo_g]), p.shape)
    hi_p = np.stack([top_max, beta_max, np.full(n, math.log(hi_r)), np.full(n, hi_g)], axis=1)
    f, J = _model_and_jac(tau, p)
    r = Y - f
    W = np.broadcast_to(w, Y.shape).copy()
    eye = np.eye(4)[None]
    for _round in range(n_reweight):
        # Huber weights from the current residuals, then LM to convergence on that objective
        s = _robust_sigma(r, w)
        z = np.abs(r) / s[:, None]
        W = w[None] * np.where(z <= HUBER_C, 1.0, HUBER_C / np.maximum(z, 1e-300))
        lam = np.full(n, 1e-2)
        active = np.ones(n, bool)
        for _it in range(n_iter):
            a = np.nonzero(active)[0]
            if a.size == 0:
                break
            Wa, ra = W[a], r[a]
            cost = (Wa * ra * ra).sum(axis=1)
            A, gvec = _normal_equations(Wa, J[:, a], ra)
            Dg = np.einsum("nii->ni", A) + 1e-12
            Al = A + lam[a, None, None] * (Dg[:, :, None] * eye)
            try:
                step = np.linalg.solve(Al, gvec[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(m_, g_, rcond=None)[0] for m_, g_ in zip(Al, gvec)])
            pn = np.clip(p[a] + step, lo_p[a], hi_p[a])
            fn, Jn = _model_and_jac(tau, pn)
            rn = Y[a] - fn
            cost_n = (Wa * rn * rn).sum(axis=1)
            acc = np.isfinite(cost_n) & (cost_n <= cost)
            ia = a[acc]
            p[ia], f[ia], r[ia] = pn[acc], fn[acc], rn[acc]
            J[:, ia] = Jn[:, acc]
            lam[a] = np.where(acc, np.maximum(lam[a] / 3.0, 1e-7), np.minimum(lam[a] * 4.0, 1e7))
            # converged: an accepted step that no longer lowers the cost, or the damping saturates
            gain = (cost - cost_n) / np.maximum(cost, 1e-300)
            done = (acc & (gain < 1e-9)) | (~acc & (lam[a] >= 1e6))
            active[a[done]] = False
    return p, W, J, r


def _uncertainties(tau, Y, w, W, J, r, p) -> tuple[dict, np.ndarray]:
    """Physical parameters with standard errors (from the weighted normal matrix) and R^2."""
    A = _normal_equations(W, J)
    s2 = (W * r * r).sum(axis=1) / max(len(tau) - 4, 1)
    cov = np.full_like(A, np.nan)
    okA = np.isfinite(A).all(axis=(1, 2))
    if okA.any():
        cov[okA] = np.linalg.pinv(A[okA], hermitian=True)
    se = np.sqrt(np.maximum(np.einsum("nii->ni", cov), 0.0) * s2[:, None])
    ybar = (w[None] * Y).sum(axis=1) / w.sum()
    sst = (w[None] * (Y - ybar[:, None]) ** 2).sum(axis=1)
    ssr_fin = (w[None] * r * r).sum(axis=1)
    r2 = 1.0 - ssr_fin / np.where(sst > 0, sst, np.nan)
    top, bet, lnr, gam = p.T
    rate = np.exp(lnr)
    # baseline = top - contrast: var = var(top) + var(contrast) - 2 cov
    se_b = np.sqrt(np.maximum(cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1], 0.0) * s2)
    return {"baseline": top - bet, "contrast": bet, "rate": rate, "stretching": gam, "fit_r2": r2,
            "baseline_stderr": se_b, "contrast_stderr": se[:, 1], "rate_stderr": rate * se[:, 2],
            "stretching_stderr": se[:, 3]}, r2


def _status(tau, Y, w, r, p, r2, lag0, beta_max) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit status per curve (codes of :data:`STATUS_NAMES`), and the masks of the curves with no
    significant decay in the window whose diagonal stands out (faster than the first lag) or not
    (slower than the window)."""
    L = len(tau)
    _, bet, lnr, gam = p.T
    rate = np.exp(lnr)
    st = np.full(len(Y), STATUS_OK, np.int8)
    dec_first = 1.0 - np.exp(-2.0 * (rate * tau.min()) ** gam)
    dec_last = 1.0 - np.exp(-2.0 * (rate * tau.max()) ** gam)
    # the visible decay (from the first to the last lag) against the noise of one lag's mean
    sig = _robust_sigma(r, w)
    visible = bet * (dec_last - dec_first)
    flat = visible < 3.0 * sig / math.sqrt(max(L / 8.0, 1.0))
    # baseline pinned at the map's lowest pixel: the data do not show where the decay ends, so
    # the rate is an upper bound (a lower baseline would need a slower rate)
    pinned = np.isfinite(beta_max) & (bet >= beta_max * (1 - 1e-3))
    st[(dec_last < NO_DECAY_FRACTION) | pinned] = STATUS_NO_DECAY
    st[dec_first > FIRST_LAG_FRACTION] = STATUS_FIRST_LAG
    fast = np.zeros(len(Y), bool)
    if np.any(flat):
        # no significant decay inside the window: faster than the first lag if the diagonal
        # (lag 0) stands out above the plateau, else slower than the window
        plateau = Y[:, : max(3, L // 16)].mean(axis=1)
        spread = np.maximum(sig * 3.0, 1e-12)
        if lag0 is not None:
            fast = lag0 - plateau > spread
        st[flat & fast] = STATUS_FIRST_LAG
        st[flat & ~fast] = STATUS_NO_DECAY
    bad = ~(np.isfinite(p).all(axis=1) & np.isfinite(r2))
    st[bad] = STATUS_FAILED
    return st, flat & fast, flat & ~fast


# --------------------------------------------------------------------------- all of it
def measure_dynamics(maps, time_step_s=None, *, exclude_lag0: bool = True, max_lag=None, n_windows: int = 4,
                     n_iter: int = 20) -> dict:
    """g2, aged g2 and the stretched-exponential fit of a batch of C2 maps.

    Parameters
    ----------
    maps : (N, L, L) float, C2 maps (raw or min-max normalised)
    time_step_s : seconds per C2 pixel (dataset attr ``c2_time_step_s``); None -> pixel units
    exclude_lag0 : exclude lag 0 from the stored g2 and from the fit
    max_lag : last lag (pixels) used in the fit; default L - 8 (at least 8 pairs per lag)
    n_windows : age windows of the aged g2

    Returns
    -------
    dict with the arrays of ``/results/dynamics`` (see RULES / docs/dynamics.md):
    ``relaxation_rate``, ``rate_stderr``, ``stretching``, ``stretching_stderr``, ``contrast``,
    ``contrast_stderr``, ``baseline``, ``baseline_stderr``, ``fit_r2`` (N,) float32,
    ``fit_status`` (N,) int8, ``g2`` (N, L') float32, ``g2_lag`` (L',) float32, ``g2_count``
    (L',) int32, ``aged_g2`` (N, W, Lw) float32 (its lags are the first Lw entries of
    ``g2_lag``: 1..L/W - 1 pixels), ``aged_g2_age`` (W,) float32, ``units`` {name: unit} and
    ``fit_max_lag`` (float, the last lag fitted, in g2_lag's unit).
    """
    m = _as_maps(maps)
    L = m.shape[-1]
    if time_step_s is not None and not (np.isfinite(time_step_s) and time_step_s > 0):
        raise ValueError(f"time_step_s must be a positive number, got {time_step_s}")
    dt = float(time_step_s) if time_step_s is not None else 1.0
    lag_all, g_all, c_all = g2_from_c2(m, exclude_lag0=False)
    # all lags with at least 8 pairs averaged (weighted by their count): slow maps need the
    # longest lags (six simulated sets of 216 maps of 128 px: Spearman with the true rate
    # 0.917-0.990 with lags up to L - 8, 0.888-0.986 with lags up to 3 L / 4)
    max_lag = int(max_lag) if max_lag is not None else max(L - 8, min(L - 1, 5))
    if not 5 <= max_lag <= L - 1:
        raise ValueError(f"max_lag must be 5..{L - 1} pixels, got {max_lag}")
    sel = (lag_all >= 1) & (lag_all <= max_lag)
    fit = fit_g2(lag_all[sel] * dt, g_all[:, sel], c_all[sel], lag0=g_all[:, 0], floor=m.min(axis=(1, 2)),
                 n_iter=n_iter)
    keep = slice(1, None) if exclude_lag0 else slice(None)
    # small maps: fewer windows rather than an error (each window needs >= 3 pixels)
    age, alag, ag = aged_g2(m, max(1, min(int(n_windows), L // 3)), exclude_lag0=exclude_lag0)
    t_unit, r_unit = ("s", "1/s") if time_step_s is not None else ("pixel", "1/pixel")
    out = {
        "relaxation_rate": fit["rate"], "rate_stderr": fit["rate_stderr"],
        "stretching": fit["stretching"], "stretching_stderr": fit["stretching_stderr"],
        "contrast": fit["contrast"], "contrast_stderr": fit["contrast_stderr"],
        "baseline": fit["baseline"], "baseline_stderr": fit["baseline_stderr"], "fit_r2": fit["fit_r2"],
    }
    out = {k: np.asarray(v, np.float32) for k, v in out.items()}
    out.update(fit_status=fit["fit_status"].astype(np.int8), g2=g_all[:, keep].astype(np.float32),
               g2_lag=(lag_all[keep] * dt).astype(np.float32), g2_count=c_all[keep].astype(np.int32),
               aged_g2=ag.astype(np.float32), aged_g2_age=(age * dt).astype(np.float32))
    out["units"] = {"relaxation_rate": r_unit, "rate_stderr": r_unit, "g2_lag": t_unit, "aged_g2_age": t_unit, "stretching": "1", "contrast": "g2 units", "baseline": "g2 units"}
    out["fit_max_lag"] = float(max_lag * dt)
    return out
