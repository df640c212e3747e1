"""``python -m ainerd_core benchmark-retrieval DATASET``: precision@k of latent vs raw vs PCA neighbours.

Only datasets with simulator ground truth (``/truth``) can be scored. For a target map, another
map is *relevant* when (:data:`RULE`):

* their true relaxation rates differ by less than ``rate_tol`` in log10 (default 0.1, a factor
  1.26; ``/truth/relaxation_rate``),
* both or neither show fringes (``fringe_visibility >= fringe_min``, default 0.1; falls back to
  ``fringe_frequency > 0`` when there is no visibility), and
* both or neither are in a burst of fast dynamics (``/truth/burst``).

Targets are a seeded random sample of the maps; each target's K nearest neighbours (self
excluded) in each space are scored: precision@k = relevant among the first k / k. Reported: mean
over targets with a percentile bootstrap 95 % CI (resampling targets), the chance level (mean
share of relevant maps among all others), and a paired permutation test (sign flips of the
per-target differences, ``scipy.stats.permutation_test``, two-sided) latent vs raw and latent vs
PCA.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from .errors import InputError

KS = (10, 50, 300)
RULE = ("relevant = |log10 relaxation_rate difference| < {rate_tol:g} and same fringe presence "
        "(fringe_visibility >= {fringe_min:g}) and same burst state; self excluded")


def relevance(truth: dict, targets: np.ndarray, rate_tol: float = 0.1, fringe_min: float = 0.1) -> np.ndarray:
    """(T, N) bool: which maps are relevant to each target (see :data:`RULE`)."""
    targets = np.asarray(targets, dtype=np.int64)
    lr = np.log10(np.asarray(truth["relaxation_rate"], dtype=np.float64))
    rel = np.abs(lr[targets][:, None] - lr[None, :]) < rate_tol
    if "fringe_visibility" in truth:
        f = np.asarray(truth["fringe_visibility"], dtype=float) >= fringe_min
        rel &= f[targets][:, None] == f[None, :]
    elif "fringe_frequency" in truth:
        f = np.asarray(truth["fringe_frequency"], dtype=float) > 0
        rel &= f[targets][:, None] == f[None, :]
    if "burst" in truth:
        b = np.asarray(truth["burst"]).astype(bool)
        rel &= b[targets][:, None] == b[None, :]
    rel[np.arange(len(targets)), targets] = False
    return rel


def precision_at_k(neighbour_index: np.ndarray, relevant: np.ndarray, ks=KS) -> np.ndarray:
    """(T, len(ks)) precision of the first k neighbours of each target (k capped at K)."""
    idx = np.asarray(neighbour_index, dtype=np.int64)
    hits = np.take_along_axis(relevant, idx, axis=1)  # (T, K)
    out = np.empty((idx.shape[0], len(ks)))
    for j, k in enumerate(ks):
        kk = min(k, idx.shape[1])
        out[:, j] = hits[:, :kk].mean(axis=1) if kk else np.nan
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (resampling the entries)."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_permutation_p(a: np.ndarray, b: np.ndarray, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(a - b) = 0 (labels swapped within pairs)."""
    from scipy.stats import permutation_test

    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if np.allclose(a, b):
        return 1.0
    res = permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                           vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                           rng=np.random.default_rng(seed))
    return float(res.pvalue)


def benchmark(source, truth: dict, *, n_targets: int = 100, seed: int = 0, ks=KS, rate_tol: float = 0.1,
              fringe_min: float = 0.1, n_boot: int = 2000) -> dict:
    """Score latent / raw / PCA neighbours against ground truth (see the module docstring).

    ``source`` is what :func:`ainerd_core.similarity.neighbours_of_targets` takes (a Dataset or a
    dict with ``latent``, ``maps``, ``pca``); spaces without a representation are left out.
    Returns a JSON-able dict (the table stored as ``/results`` attr ``retrieval_json``).
    """
    from .similarity import _source_parts, neighbours_of_targets

    _, parts = _source_parts(source)
    n = len(np.asarray(truth["relaxation_rate"]))
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(n, size=min(n_targets, n), replace=False))
    rel = relevance(truth, targets, rate_tol, fringe_min)
    kmax = min(max(ks), n - 1)
    table = {"rule": RULE.format(rate_tol=rate_tol, fringe_min=fringe_min), "n_maps": int(n),
             "n_targets": int(len(targets)), "seed": int(seed), "ks": [int(k) for k in ks],
             "ks_effective": [int(min(k, kmax)) for k in ks],
             "chance": float(rel.sum(1).mean() / max(n - 1, 1)), "spaces": {}, "tests": {}}
    per_target = {}
    for space, key in (("latent", "latent"), ("raw", "maps"), ("pca", "pca")):
        if parts.get(key) is None:
            continue
        idx, _ = neighbours_of_targets(parts, targets, space, kmax)
        prec = precision_at_k(idx, rel, ks)
        per_target[space] = prec
        table["spaces"][space] = {str(k): {"mean": float(prec[:, j].mean()),
                                           "ci_low": bootstrap_ci(prec[:, j], n_boot, seed)[0],
                                           "ci_high": bootstrap_ci(prec[:, j], n_boot, seed)[1]}
                                  for j, k in enumerate(ks)}
    for other in ("raw", "pca"):
        if "latent" in per_target and other in per_target:
            table["tests"][f"latent_vs_{other}"] = {
                str(k): {"mean_difference": float((per_target["latent"][:, j] - per_target[other][:, j]).mean()),
                         "p_value": paired_permutation_p(per_target["latent"][:, j], per_target[other][:, j], seed=seed)}
                for j, k in enumerate(ks)}
    return table


def format_table(table: dict) -> str:
    """The benchmark as a text table."""
    ks = table["ks"]
    lines = [f"retrieval benchmark: {table['n_targets']} targets of {table['n_maps']} maps; {table['rule']}",
             f"chance level (share of relevant maps) {table['chance']:.3f}",
             f"{'space':8s}" + "".join(f"  {'P@' + str(k):>22s}" for k in ks)]
    for space, row in table["spaces"].items():
        cells = "".join(f"  {row[str(k)]['mean']:.3f} [{row[str(k)]['ci_low']:.3f}, {row[str(k)]['ci_high']:.3f}]".rjust(24)
                        for k in ks)
        lines.append(f"{space:8s}{cells}")
    for name, row in table["tests"].items():
        cells = "".join(f"  {row[str(k)]['mean_difference']:+.3f} p={row[str(k)]['p_value']:.4f}".rjust(24) for k in ks)
        lines.append(f"{name:8s}{cells}" if len(name) <= 8 else f"{name}\n{'':8s}{cells}")
    if table["ks_effective"] != table["ks"]:
        lines.append(f"note: only {table['ks_effective'][-1]} neighbours exist; k capped")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset with ground truth (/truth), e.g. a simulated one")
    parser.add_argument("--targets", type=int, default=100, help="number of random target maps (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the target sample and resampling (default 0)")
    parser.add_argument("--model", default=None,
                        help="checkpoint to encode the maps when the dataset has no precomputed or shipped latents")
    parser.add_argument("--rate-tol", type=float, default=0.1, help="log10 relaxation-rate tolerance (default 0.1)")
    parser.add_argument("--fringe-min", type=float, default=0.1, help="fringe visibility counted as fringes (default 0.1)")
    parser.add_argument("--json", default=None, help="also write the table as JSON to this file")


def run(args) -> int:
    from .dataset import open_dataset
    from .similarity import fit_pca_stream

    if args.targets < 1:
        raise InputError("--targets", f"must be >= 1, got {args.targets}")
    with open_dataset(args.dataset) as ds:
        truth = ds.truth
        if truth is None or "relaxation_rate" not in truth:
            raise InputError(args.dataset, "no ground truth (/truth/relaxation_rate): the benchmark needs a simulated dataset")
        latent = ds.read_result("latent")
        if latent is None:
            latent = ds.latents
        if latent is None and ds.has_maps:
            from .model import encode, load_model

            latent = encode(load_model(args.model), ds)
        pca = ds.read_result("similarity/pca_scores")
        if pca is None and ds.has_maps:
            pca = fit_pca_stream(ds, 64, seed=args.seed)[0].scores_
        parts = {"latent": latent, "maps": ds if ds.has_maps else None, "pca": pca}
        table = benchmark(parts, truth, n_targets=args.targets, seed=args.seed, rate_tol=args.rate_tol,
                          fringe_min=args.fringe_min)
    print(format_table(table))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)
    return 0
