"""Datasets whose ``/results/dynamics/*`` follow the contract, for the dashboard's dynamics views.

:func:`with_dynamics` copies a precomputed dataset and, when its results hold no dynamics yet,
adds them: with :func:`ainerd_core.dynamics.measure_dynamics` when that module exists, else
with a small contract-shaped stand-in (:func:`_measure_stand_in`: g2 = diagonal means of C2
over lags 1..n-1, one bounded ``scipy.optimize.curve_fit`` of the stretched exponential per
map). The ordering attrs (``order_rule``, ``order_spearman_json``, ``dynamics_source``) are
added the same way. A latents-only dataset gets ``dynamics_source = "none"`` and an order rule
that says the order is unknown.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

from ainerd_core.dataset import open_dataset, write_results


def _stretched(tau, rate, stretching, contrast, baseline):
    return baseline + contrast * np.exp(-2.0 * np.power(np.abs(rate * tau), stretching))


def _measure_stand_in(maps: np.ndarray, time_step_s: float | None) -> dict:
    from scipy.optimize import curve_fit

    n_maps, n = maps.shape[0], maps.shape[1]
    lag_px = np.arange(1, n)
    g2 = np.stack([np.diagonal(maps, offset=int(d), axis1=1, axis2=2).mean(axis=-1) for d in lag_px], 1)
    step = time_step_s if time_step_s else 1.0
    lag = (lag_px * step).astype(np.float32)
    out = {k: np.full(n_maps, np.nan, np.float32) for k in
           ("relaxation_rate", "rate_stderr", "stretching", "stretching_stderr", "contrast", "contrast_stderr",
            "baseline", "baseline_stderr", "fit_r2")}
    status = np.full(n_maps, 3, np.int8)
    for i in range(n_maps):
        y = g2[i].astype(np.float64)
        base = float(np.median(y[-n // 8:]))
        amp = max(float(y[0] - base), 1e-3)
        below = np.nonzero(y < base + amp / np.e)[0]
        t_e = float(lag[below[0]]) if below.size else float(lag[-1])
        p0 = [1.0 / max(t_e, step), 1.0, amp, base]
        try:
            p, cov = curve_fit(_stretched, lag, y, p0=p0, bounds=([1e-6 / step, 0.3, 0.0, -1.0], [10.0 / step, 2.0, 2.0, 2.0]),
                               maxfev=4000)
        except (RuntimeError, ValueError):
            continue
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
        resid = y - _stretched(lag, *p)
        r2 = 1.0 - float((resid ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-30))
        for key, v, e in zip(("relaxation_rate", "stretching", "contrast", "baseline"), p, err):
            out[key][i] = v
            out["rate_stderr" if key == "relaxation_rate" else f"{key}_stderr"][i] = e
        out["fit_r2"][i] = r2
        status[i] = 0 if p[0] * lag[-1] > 1.0 else 1
    out.update(fit_status=status, g2=g2.astype(np.float32), g2_lag=lag,
               g2_count=(n - lag_px).astype(np.int32))
    half = n // 2
    aged = np.stack([np.stack([np.diagonal(m[a:a + half, a:a + half], offset=int(d)).mean() for d in lag_px[:half - 1]])
                     for m in maps for a in (0, half // 2, half)]).reshape(n_maps, 3, half - 1)
    out["aged_g2"] = np.concatenate([aged, np.full((n_maps, 3, n - half), np.nan)], 2).astype(np.float32)
    out["aged_g2_age"] = (np.array([half / 2, half, 1.5 * half]) * step).astype(np.float32)
    return out


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok])[0]) if ok.sum() > 2 else float("nan")


def with_dynamics(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` and make sure its results hold the dynamics of the contract."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    with open_dataset(dst) as ds:
        names = ds.result_names()
        if "dynamics/relaxation_rate" in names:
            return dst
        results = {n: ds.read_result(n) for n in names}
        attrs = dict(ds.result_attrs)
        step = ds.attrs.get("c2_time_step_s")
        maps = np.stack([m for _, b in ds.iter_maps(256) for m in b]) if ds.has_maps else None
    if maps is None:
        attrs.update(order_rule="unknown: latents only and no decoder is known, so no dynamics were measured; "
                                "cluster numbers are not ordered",
                     order_spearman_json=json.dumps({}), dynamics_source="none")
        write_results(dst, results, attrs)
        return dst
    if importlib.util.find_spec("ainerd_core.dynamics") is not None:
        from ainerd_core.dynamics import measure_dynamics

        dyn = measure_dynamics(maps, time_step_s=step)
    else:
        dyn = _measure_stand_in(maps, step)
    for key, value in dyn.items():
        results[f"dynamics/{key}"] = value
    rate = np.asarray(dyn["relaxation_rate"], np.float64)
    results["dynamics/score_filled"] = ~np.isfinite(rate)
    rho = {}
    for k in (3, 5, 8):
        lab = results.get(f"labels_k{k}")
        if lab is not None:
            rho[str(k)] = _spearman(np.asarray(lab, np.float64), rate)
    attrs.update(order_rule="clusters numbered by median fitted relaxation rate: 0 = slowest",
                 order_spearman_json=json.dumps(rho), dynamics_source="maps")
    write_results(dst, results, attrs)
    return dst
