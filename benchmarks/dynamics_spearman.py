"""Fitted rates and cluster order against the simulator's truth, per simulator setting.

    .venv/bin/python -m benchmarks.dynamics_spearman [--size 128] [--times 12] [--seeds 31 32 33]
                                                     [--json out.json] [--markdown]

For every setting (the demo's physics, fringes off / weaker, noise up to noise floors near 0.4
after normalisation, contrast and baseline, aging exponents, and settings drawn at random
across all options) and every seed: simulate ``times x 18`` maps, measure them with
:func:`ainerd_core.dynamics.measure_dynamics`, and report

* Spearman(fitted relaxation rate, true relaxation rate) over all maps (statuses included:
  bounded rates keep their order);
* Spearman(cluster label, true rate) at k = 3, 5, 8: k-means on stand-in latents (8 x 8 block
  means of each map, 64 numbers), clusters renumbered 0 = slowest median fitted rate (as
  precompute does with the model's latents);
* the share of maps per fit status and the median noise floor of the fastest 20 % of maps.

Prints one line per setting (mean and minimum over the seeds); ``--markdown`` prints the table
used in docs/dynamics.md. The true rate is the simulator's diffusive rate q^2 <D(t)>; fringes and
the velocity spread within a sector decorrelate the maps further (see docs/dynamics.md).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from scipy.stats import spearmanr

from ainerd_core import analysis as A
from ainerd_core import dynamics as D
from ainerd_core.dataset import open_dataset
from ainerd_core.simulate import SimConfig, simulate
from benchmarks.common import write_json


def drawn(seed: int) -> dict:
    rng = np.random.default_rng([seed, 99])
    return dict(contrast=float(rng.uniform(0.03, 0.6)), baseline_offset=float(rng.uniform(0.0, 1.0)),
                noise_scale=float(np.exp(rng.uniform(np.log(0.5), np.log(8.0)))),
                alpha=float(rng.uniform(-1.2, -0.6)), fringe_strength=float(rng.uniform(0.0, 0.1)))


SETTINGS = {
    "demo physics (fringe strength 1)": {},
    "fringes off (strength 0)": dict(fringe_strength=0.0),
    "fringe strength 0.1": dict(fringe_strength=0.1),
    "fringe strength 0.25": dict(fringe_strength=0.25),
    "fringe strength 0.5": dict(fringe_strength=0.5),
    "noise x4, fringes 0.05": dict(noise_scale=4.0, fringe_strength=0.05),
    "noise x8 (floor ~0.4), fringes 0.05": dict(noise_scale=8.0, fringe_strength=0.05),
    "contrast 0.03, baseline +1, fringes 0.05": dict(contrast=0.03, baseline_offset=1.0, fringe_strength=0.05),
    "contrast 0.6, fringes 0.05": dict(contrast=0.6, fringe_strength=0.05),
    "alpha -0.5, fringes 0.05": dict(alpha=-0.5, fringe_strength=0.05),
    "alpha -1.2, fringes 0.05": dict(alpha=-1.2, fringe_strength=0.05),
    "alpha -1.5, demo fringes": dict(alpha=-1.5),
    "drawn across all options (fringes <= 0.1)": "drawn",
}


def pooled(maps: np.ndarray) -> np.ndarray:
    n, L = maps.shape[0], maps.shape[-1]
    b = L // 8
    return maps.reshape(n, 8, b, 8, b).mean(axis=(2, 4)).reshape(n, 64)


def one(path: Path, kw: dict, seed: int, size: int, times: int) -> dict:
    simulate(path, SimConfig(times=times, sectors=18, size=size, seed=seed, **kw))
    with open_dataset(path) as ds:
        maps = ds.read_maps(np.arange(ds.n_maps))
        truth, dt = ds.truth, ds.attrs["c2_time_step_s"]
    res = D.measure_dynamics(maps, dt)
    rate, true = res["relaxation_rate"], truth["relaxation_rate"]
    out = {"fit": float(spearmanr(rate, true).statistic)}
    x = pooled(maps)
    for k in (3, 5, 8):
        lab = A.order_labels(A.kmeans_labels(x, k, seed=0, n_init=4), -np.log10(rate))
        out[f"k{k}"] = float(spearmanr(lab, true).statistic)
    st = np.bincount(res["fit_status"], minlength=4) / len(rate)
    out.update({f"status_{i}": float(v) for i, v in enumerate(st)})
    fast = true >= np.quantile(true, 0.8)
    out["floor"] = float(np.median(truth["noise_floor"][fast]))
    out["r2_median"] = float(np.nanmedian(res["fit_r2"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--times", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[31, 32, 33])
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    table = {}
    for name, kw in SETTINGS.items():
        rows = [one(tmp / "s.h5", drawn(seed) if kw == "drawn" else kw, seed, args.size, args.times)
                for seed in args.seeds]
        agg = {key: (float(np.mean([r[key] for r in rows])), float(np.min([r[key] for r in rows]))) for key in rows[0]}
        table[name] = agg
        print(f"{name:45s} fit {agg['fit'][0]:.3f} (min {agg['fit'][1]:.3f})  labels k3 {agg['k3'][0]:.2f} "
              f"k5 {agg['k5'][0]:.2f} k8 {agg['k8'][0]:.2f} (min {min(agg['k3'][1], agg['k5'][1], agg['k8'][1]):.2f})  "
              f"no-decay {agg['status_1'][0]:.0%} first-lag {agg['status_2'][0]:.0%} failed {agg['status_3'][0]:.0%}  "
              f"floor {agg['floor'][0]:.2f}  R2 {agg['r2_median'][0]:.2f}", flush=True)
    if args.markdown:
        print(f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), {args.times} x 18 maps of {args.size} px "
              "each; mean (min) over the seeds\n")
        print("| setting | Spearman(fitted, true rate) | label k=3 | label k=5 | label k=8 | no decay / first lag | "
              "noise floor (fast maps) | median R^2 |")
        print("|---|---|---|---|---|---|---|---|")
        for name, a in table.items():
            print(f"| {name} | {a['fit'][0]:.3f} ({a['fit'][1]:.3f}) | {a['k3'][0]:.2f} ({a['k3'][1]:.2f}) | "
                  f"{a['k5'][0]:.2f} ({a['k5'][1]:.2f}) | {a['k8'][0]:.2f} ({a['k8'][1]:.2f}) | "
                  f"{a['status_1'][0]:.0%} / {a['status_2'][0]:.0%} | {a['floor'][0]:.2f} | {a['r2_median'][0]:.2f} |")
    write_json(args.json, {"size": args.size, "times": args.times, "seeds": args.seeds, "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
