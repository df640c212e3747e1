"""Dynamics fit speed: the batched fit of ainerd_core.dynamics against a plain per-map
``scipy.optimize.curve_fit`` loop, measured in the same run, at 900 and 13,000 maps.

    .venv/bin/python -m benchmarks.dynamics_fit [--dataset data/demo.h5] [--sizes 900 13000]
                                                [--baseline-maps 150] [--json out.json]

Maps: the C2 maps of ``--dataset`` (default: a fresh demo simulation, 50 times x 18 sectors x
256 px, in a temporary folder); larger sizes cycle through them (the fit caches nothing, so
timing repeated maps is timing new ones). Three timings per size:

* ``measure``: :func:`ainerd_core.dynamics.measure_dynamics` end to end, streamed in batches
  of 256 maps as precompute does (g2 from C2, aged g2, fit, uncertainties, statuses);
* ``fit``: :func:`ainerd_core.dynamics.fit_g2` alone on the same g2 curves (one call per batch);
* ``curve_fit``: the plain baseline, one ``scipy.optimize.curve_fit`` per curve (same model,
  bounds, count weights as sigma, a start from the data), timed on ``--baseline-maps`` curves
  and extrapolated linearly to the size (said so in the output).

Ratio = baseline seconds / batched fit seconds (wall clock; process CPU seconds are printed too,
because on a shared machine the wall clock also counts other processes). Also prints how
closely the two fits agree (median |log rate ratio| over the baseline subset, among curves
both fitted).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from ainerd_core import dynamics as D
from ainerd_core.dataset import open_dataset
from benchmarks.common import write_json


def load_maps(dataset: str | None) -> tuple[np.ndarray, float | None]:
    if dataset is None:
        from ainerd_core.simulate import SimConfig, simulate

        tmp = Path(tempfile.mkdtemp()) / "bench_dynamics.h5"
        simulate(tmp, SimConfig())
        dataset = tmp
    with open_dataset(dataset) as ds:
        if not ds.has_maps:
            raise SystemExit(f"{dataset}: no C2 maps")
        maps = ds.read_maps(np.arange(ds.n_maps))
        dt = ds.attrs.get("c2_time_step_s")
    return maps, (float(dt) if dt else None)


def batches(maps: np.ndarray, n: int, size: int = 256):
    """(start, batch) covering n maps, cycling through the pool."""
    pool = len(maps)
    for s in range(0, n, size):
        idx = (np.arange(s, min(s + size, n)) % pool)
        yield s, maps[idx]


def curve_fit_loop(tau: np.ndarray, g2: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, int]:
    """The plain baseline: one scipy curve_fit per curve. Returns (rates, failures)."""
    from scipy.optimize import curve_fit

    sigma = 1.0 / np.sqrt(counts)
    lo_r, hi_r = D.RATE_LO_FACTOR / tau.max(), D.RATE_HI_FACTOR / tau.min()
    rates = np.full(len(g2), np.nan)
    failed = 0
    for i, y in enumerate(g2):
        base0 = float(np.mean(y[-len(y) // 8:]))
        beta0 = max(float(y[0]) - base0, 1e-6)
        half = np.nonzero(y - base0 < 0.5 * beta0)[0]
        rate0 = float(np.clip(0.35 / tau[half[0]] if half.size else lo_r * 2, lo_r * 1.01, hi_r * 0.99))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, _ = curve_fit(D.stretched_exponential, tau, y, p0=(rate0, 1.0, beta0, base0), sigma=sigma,
                                 bounds=([lo_r, D.STRETCH_BOUNDS[0], 0.0, -np.inf],
                                         [hi_r, D.STRETCH_BOUNDS[1], np.inf, np.inf]), maxfev=2000)
            rates[i] = p[0]
        except (RuntimeError, ValueError):
            failed += 1
    return rates, failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=None, help="dataset with C2 maps (default: a fresh demo simulation)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[900, 13000])
    ap.add_argument("--baseline-maps", type=int, default=150, help="curves timed with the curve_fit loop (default 150)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    maps, dt = load_maps(args.dataset)
    L = maps.shape[-1]
    print(f"pool: {len(maps)} maps of {L} px, time step {dt} s/pixel; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    # baseline once, on the first --baseline-maps curves (per-curve cost is what scales)
    lag, g_all, counts = D.g2_from_c2(maps[: args.baseline_maps], exclude_lag0=False)
    max_lag = L - 8
    sel = (lag >= 1) & (lag <= max_lag)
    tau = lag[sel] * (dt or 1.0)
    t0, c0 = time.perf_counter(), time.process_time()
    base_rates, base_failed = curve_fit_loop(tau, g_all[:, sel], counts[sel])
    t_base = (time.perf_counter() - t0) / len(base_rates)
    c_base = (time.process_time() - c0) / len(base_rates)
    ours = D.fit_g2(tau, g_all[:, sel], counts[sel], lag0=g_all[:, 0])
    both = np.isfinite(base_rates) & (ours["fit_status"] != D.STATUS_FAILED)
    agree = float(np.median(np.abs(np.log(ours["rate"][both] / base_rates[both])))) if both.any() else float("nan")
    print(f"curve_fit loop: {t_base * 1e3:.1f} ms per curve (CPU {c_base * 1e3:.1f} ms) ({len(base_rates)} curves, {base_failed} failed); "
          f"agreement with the batched fit: median |ln(rate ratio)| = {agree:.3f}")
    out = {"map_size": L, "baseline_ms_per_curve": t_base * 1e3, "baseline_curves": len(base_rates),
           "baseline_failed": base_failed, "median_abs_log_rate_ratio": agree, "sizes": {}}
    for n in args.sizes:
        t_measure = t_fit = c_measure = c_fit = 0.0
        n_status = np.zeros(4, int)
        for _, b in batches(maps, n):
            t0, c0 = time.perf_counter(), time.process_time()
            res = D.measure_dynamics(b, dt)
            t_measure += time.perf_counter() - t0
            c_measure += time.process_time() - c0
            n_status += np.bincount(res["fit_status"], minlength=4)
            lag_b, g_b, c_b = D.g2_from_c2(b, exclude_lag0=False)
            t0, c0 = time.perf_counter(), time.process_time()
            D.fit_g2(tau, g_b[:, sel], c_b[sel], lag0=g_b[:, 0])
            t_fit += time.perf_counter() - t0
            c_fit += time.process_time() - c0
        t_plain = t_base * n
        row = {"measure_s": t_measure, "fit_s": t_fit, "curve_fit_s_extrapolated": t_plain,
               "measure_cpu_s": c_measure, "fit_cpu_s": c_fit, "curve_fit_cpu_s_extrapolated": c_base * n,
               "ratio_fit_cpu": c_base * n / c_fit,
               "ratio_fit": t_plain / t_fit, "ratio_measure": t_plain / t_measure,
               "status_counts": dict(zip(D.STATUS_NAMES, map(int, n_status)))}
        out["sizes"][str(n)] = row
        print(f"{n:6d} maps: measure_dynamics {t_measure:6.1f} s (g2 + aged g2 + fit), batched fit {t_fit:6.1f} s; "
              f"curve_fit loop {t_plain:7.1f} s (extrapolated from {len(base_rates)} curves) -> "
              f"fit x{row['ratio_fit']:.0f} faster, end to end x{row['ratio_measure']:.0f}; CPU s: measure "
              f"{c_measure:.1f}, fit {c_fit:.1f}, curve_fit {c_base * n:.1f} (x{row['ratio_fit_cpu']:.0f})")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
