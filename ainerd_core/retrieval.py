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
PCA, with the paired bootstrap 95 % interval of each mean difference (resampling targets).

Baselines (:data:`BASELINES`): raw pixels, exact PCA-64 of the raw pixels, and *smoothed
pixels* - every map through a Gaussian filter of ``--smooth-sigma`` pixels (default 2) and
renormalised to [0, 1]. The last is there because speckle noise is what hurts raw-pixel
distances most: a latent that "beats raw pixels" may only be denoising. Every other space
(the latent, ``--embedding`` ones) is tested against all three.

External ground truth (``--truth-csv FILE``, ``--relevance SPEC``): a CSV with one row per map
(an ``index`` column of 0-based dataset rows, else the rows in dataset order) and any columns
of labels or numbers. ``SPEC`` is a comma-separated list of ``column:rule`` that must *all*
hold for two maps to be relevant to each other: ``eq`` (same label / value), ``abs=x``
(|a - b| <= x), ``ratio=r`` (max(a/b, b/a) <= r, positive values), ``log=x`` (|log10 a -
log10 b| <= x). Without ``--relevance`` a CSV's ``group`` (or ``label``) column is used with
``eq``. A cell that is empty or not a number (for numeric rules) makes that map relevant to
nothing, and it is never a target. ``--relevance`` also works on a dataset's own ``/truth``
fields (e.g. ``relaxation_rate:ratio=1.8,burst:eq``). ``--targets all`` uses every map.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from .errors import InputError

KS = (10, 50, 300)
BASELINES = ("raw", "pca", "smoothed")   # spaces every learned embedding is tested against
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


RULE_KINDS = ("eq", "abs", "ratio", "log")


def parse_relevance(spec: str) -> list[tuple[str, str, float | None]]:
    """``'rate:ratio=1.8,fringe:abs=0.5,aging:eq'`` -> [(column, kind, value)], validated."""
    out = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        col, sep, rule = part.rpartition(":")
        if not sep or not col:
            raise InputError("--relevance", f"{part!r} is not column:rule (rules: eq, abs=x, ratio=r, log=x)")
        kind, _, val = rule.partition("=")
        kind = kind.strip().lower()
        if kind not in RULE_KINDS:
            raise InputError("--relevance", f"unknown rule {kind!r} in {part!r} (rules: eq, abs=x, ratio=r, log=x)")
        if kind == "eq":
            if val:
                raise InputError("--relevance", f"'eq' takes no value ({part!r})")
            out.append((col.strip(), kind, None))
            continue
        try:
            x = float(val)
        except ValueError:
            raise InputError("--relevance", f"{part!r}: {kind} needs a number, e.g. {kind}=1.8") from None
        if not np.isfinite(x) or x < 0 or (kind == "ratio" and x < 1):
            raise InputError("--relevance", f"{part!r}: {'ratio must be >= 1' if kind == 'ratio' else 'tolerance must be >= 0'}")
        out.append((col.strip(), kind, x))
    if not out:
        raise InputError("--relevance", "no rule given")
    return out


def relevance_from_rules(columns: dict, rules, targets: np.ndarray) -> np.ndarray:
    """(T, N) bool: maps relevant to each target when every rule holds (see the module docstring).
    ``columns`` maps names to (N,) arrays (numbers or labels); missing values relate to nothing."""
    targets = np.asarray(targets, dtype=np.int64)
    n = len(next(iter(columns.values())))
    rel = np.ones((len(targets), n), bool)
    for col, kind, val in rules:
        if col not in columns:
            raise InputError("--relevance", f"no column {col!r} (have: {', '.join(sorted(columns))})")
        v = np.asarray(columns[col])
        if kind == "eq":
            if v.dtype.kind in "fc":
                ok = np.isfinite(v)
            else:
                v = v.astype(str)
                ok = np.char.str_len(np.char.strip(v)) > 0
            r = v[targets][:, None] == v[None, :]
        else:
            try:
                v = v.astype(np.float64)
            except (TypeError, ValueError):
                raise InputError("--relevance", f"column {col!r} is not numeric, rule {kind} needs numbers") from None
            ok = np.isfinite(v)
            if kind == "abs":
                r = np.abs(v[targets][:, None] - v[None, :]) <= val + 1e-12
            else:
                ok &= v > 0
                lv = np.log10(np.where(ok, v, 1.0))
                tol = np.log10(val) if kind == "ratio" else val
                r = np.abs(lv[targets][:, None] - lv[None, :]) <= tol + 1e-12
        rel &= r & ok[None, :] & ok[targets][:, None]
    rel[np.arange(len(targets)), targets] = False
    return rel


def complete_rows(columns: dict, rules) -> np.ndarray:
    """(N,) bool: maps with a usable value in every column a rule uses (the possible targets)."""
    n = len(next(iter(columns.values())))
    ok = np.ones(n, bool)
    for col, kind, _ in rules:
        if col not in columns:
            raise InputError("--relevance", f"no column {col!r} (have: {', '.join(sorted(columns))})")
        v = np.asarray(columns[col])
        if kind == "eq" and v.dtype.kind not in "fc":
            ok &= np.char.str_len(np.char.strip(v.astype(str))) > 0
        else:
            try:
                f = v.astype(np.float64)
            except (TypeError, ValueError):
                continue  # relevance_from_rules reports it
            ok &= np.isfinite(f) & ((f > 0) if kind in ("ratio", "log") else True)
    return ok


def read_truth_csv(path, n_maps: int) -> dict[str, np.ndarray]:
    """Columns of a per-map ground-truth CSV as (N,) arrays in dataset row order (numbers where a
    column parses as numbers, else strings). Rows by an ``index`` column (0-based) if present,
    else one row per map in order; maps without a row get missing values."""
    import csv

    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise InputError(path, "not a text CSV file") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise InputError(path, "needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise InputError(path, "header names must be non-empty and unique")
    body = rows[1:]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise InputError(path, f"line {i + 2} has {len(r)} fields, the header has {len(header)}")
    cols = {h: [r[j].strip() for r in body] for j, h in enumerate(header)}
    if "index" in cols:
        try:
            index = np.array([int(x) for x in cols.pop("index")])
        except ValueError:
            raise InputError(path, "column 'index' must hold integers (0-based dataset rows)") from None
        if index.size and (index.min() < 0 or index.max() >= n_maps):
            raise InputError(path, f"column 'index' has rows outside 0..{n_maps - 1}")
        if len(np.unique(index)) != len(index):
            raise InputError(path, "column 'index' repeats a row")
    else:
        if len(body) != n_maps:
            raise InputError(path, f"has {len(body)} rows for {n_maps} maps (add an 'index' column to give a subset)")
        index = np.arange(n_maps)
    out = {}
    for name, vals in cols.items():
        try:
            num = np.array([float(x) if x else np.nan for x in vals])
            full = np.full(n_maps, np.nan)
        except ValueError:
            num = np.array(vals, dtype=object)
            full = np.full(n_maps, "", dtype=object)
        full[index] = num
        out[name] = full if full.dtype.kind == "f" else full.astype(str)
    return out


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a - b), resampling the pairs (targets) together."""
    return bootstrap_ci(np.asarray(a, float) - np.asarray(b, float), n_boot, seed, level)


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


def benchmark(source, truth: dict, *, n_targets: int | None = 100, seed: int = 0, ks=KS, rate_tol: float = 0.1,
              fringe_min: float = 0.1, n_boot: int = 2000, rules=None, extra_spaces: dict | None = None,
              smooth_sigma_px: float | None = None) -> dict:
    """Score latent / raw / PCA neighbours against ground truth (see the module docstring).

    ``source`` is what :func:`ainerd_core.similarity.neighbours_of_targets` takes (a Dataset or a
    dict with ``latent``, ``maps``, ``pca``); spaces without a representation are left out.
    ``truth`` holds (N,) columns; with ``rules`` (:func:`parse_relevance` output or its text) the
    relevance is :func:`relevance_from_rules`, else the simulator rule :data:`RULE`.
    ``n_targets=None`` makes every (complete) map a target. ``extra_spaces`` ({name: (N, D)})
    adds embeddings scored like the latent (e.g. another checkpoint's latents); every space
    is compared with every baseline by a paired permutation test and a paired bootstrap 95 % CI.
    ``smooth_sigma_px`` (default :data:`~ainerd_core.similarity.SMOOTH_SIGMA_PX`; 0 leaves it
    out) adds the smoothed-pixels baseline: raw pixels after a Gaussian filter of that many
    pixels and min-max renormalisation (:func:`ainerd_core.similarity.smoothed_rows`).
    Returns a JSON-able dict (the table stored as ``/results`` attr ``retrieval_json``).
    """
    from .similarity import (SMOOTH_SIGMA_PX, _source_parts, neighbours_of_targets,
                             pixel_neighbours_of_targets)

    sigma = SMOOTH_SIGMA_PX if smooth_sigma_px is None else check_sigma(smooth_sigma_px)
    _, parts = _source_parts(source)
    if isinstance(rules, str):
        rules = parse_relevance(rules)
    n = len(np.asarray(next(iter(truth.values()))))
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(complete_rows(truth, rules)) if rules else np.arange(n)
    if pool.size < 2:
        raise InputError("--relevance", "fewer than 2 maps have values for every rule's column")
    if n_targets is None or n_targets >= pool.size:
        targets = pool
    else:
        targets = np.sort(rng.choice(pool, size=n_targets, replace=False))
    if rules:
        rel = relevance_from_rules(truth, rules, targets)
        rule_text = "relevant = " + " and ".join(
            f"{c} {'equal' if k == 'eq' else f'within {k} {v:g}'}" for c, k, v in rules) + "; self excluded"
    else:
        rel = relevance(truth, targets, rate_tol, fringe_min)
        rule_text = RULE.format(rate_tol=rate_tol, fringe_min=fringe_min)
    kmax = min(max(ks), n - 1)
    table = {"rule": rule_text, "n_maps": int(n),
             "n_targets": int(len(targets)), "seed": int(seed), "ks": [int(k) for k in ks],
             "ks_effective": [int(min(k, kmax)) for k in ks],
             "chance": float(rel.sum(1).mean() / max(n - 1, 1)), "smooth_sigma_px": float(sigma),
             "spaces": {}, "tests": {}}
    per_target = {}
    spaces = [("latent", "latent", parts)] + [(name, "latent", {"latent": x}) for name, x in (extra_spaces or {}).items()]
    spaces += [("raw", "maps", parts), ("pca", "pca", parts)] + ([("smoothed", "maps", parts)] if sigma > 0 else [])
    pixel_spaces = tuple(space for space, key, _ in spaces if key == "maps")
    # the stored maps are read once for every pixel space (reading dominates their cost)
    pixel = (pixel_neighbours_of_targets(parts, targets, kmax, pixel_spaces, smooth_sigma_px=sigma)
             if parts.get("maps") is not None else {})
    for space, key, src in spaces:
        if src.get(key) is None:
            continue
        kind = "latent" if key == "latent" else space
        idx = (pixel[space] if key == "maps" else neighbours_of_targets(src, targets, kind, kmax))[0]
        prec = precision_at_k(idx, rel, ks)
        per_target[space] = prec
        cis = [bootstrap_ci(prec[:, j], n_boot, seed) for j in range(len(ks))]
        table["spaces"][space] = {str(k): {"mean": float(prec[:, j].mean()), "ci_low": cis[j][0], "ci_high": cis[j][1]}
                                  for j, k in enumerate(ks)}
    for space in [s for s in per_target if s not in BASELINES]:
        for other in BASELINES:
            if other not in per_target:
                continue
            a, b = per_target[space], per_target[other]
            row = {}
            for j, k in enumerate(ks):
                lo, hi = paired_bootstrap_ci(a[:, j], b[:, j], n_boot, seed)
                row[str(k)] = {"mean_difference": float((a[:, j] - b[:, j]).mean()), "ci_low": lo, "ci_high": hi,
                               "p_value": paired_permutation_p(a[:, j], b[:, j], seed=seed)}
            table["tests"][f"{space}_vs_{other}"] = row
    return table


def check_sigma(sigma_px) -> float:
    """``--smooth-sigma`` validated: a finite number of pixels >= 0."""
    try:
        value = float(sigma_px)
    except (TypeError, ValueError):
        raise InputError("--smooth-sigma", f"must be a number of pixels, got {sigma_px!r}") from None
    if not np.isfinite(value) or value < 0:
        raise InputError("--smooth-sigma", f"must be >= 0 pixels, got {sigma_px!r}")
    return value


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
    lines.append("paired differences: mean [paired bootstrap 95 % CI] p (paired permutation)")
    for name, row in table["tests"].items():
        cells = "".join(f"  {row[str(k)]['mean_difference']:+.3f} [{row[str(k)].get('ci_low', float('nan')):+.3f}, "
                        f"{row[str(k)].get('ci_high', float('nan')):+.3f}] p={row[str(k)]['p_value']:.4f}".rjust(36)
                        for k in ks)
        lines.append(f"{name}\n{'':8s}{cells}")
    if table["ks_effective"] != table["ks"]:
        lines.append(f"note: only {table['ks_effective'][-1]} neighbours exist; k capped")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset with ground truth (/truth), e.g. a simulated one")
    parser.add_argument("--targets", default="100", help="number of random target maps, or 'all' (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the target sample and resampling (default 0)")
    parser.add_argument("--model", default=None,
                        help="checkpoint to encode the maps when the dataset has no precomputed or shipped latents")
    parser.add_argument("--rate-tol", type=float, default=0.1, help="log10 relaxation-rate tolerance (default 0.1)")
    parser.add_argument("--fringe-min", type=float, default=0.1, help="fringe visibility counted as fringes (default 0.1)")
    parser.add_argument("--truth-csv", default=None,
                        help="external ground truth: CSV of per-map labels / numbers (an 'index' column of 0-based "
                             "rows, or one row per map in order)")
    parser.add_argument("--relevance", default=None,
                        help="relevance rules on CSV columns (or /truth fields), all must hold, e.g. "
                             "'rate:ratio=1.8,fringe:abs=0.5,aging:eq' (rules eq, abs=x, ratio=r, log=x); "
                             "default with a CSV: group:eq (or label:eq)")
    parser.add_argument("--ks", default=None, help="comma-separated k values (default 10,50,300)")
    parser.add_argument("--embedding", action="append", default=[], metavar="NAME=FILE.npy",
                        help="score another (N, D) embedding beside the latent (repeatable)")
    parser.add_argument("--smooth-sigma", type=float, default=None, metavar="PX",
                        help="Gaussian sigma (pixels) of the smoothed-pixels baseline (default 2; 0 leaves it out)")
    parser.add_argument("--json", default=None, help="also write the table as JSON to this file")


def run(args) -> int:
    from .dataset import open_dataset
    from .similarity import fit_pca

    if str(args.targets).strip().lower() == "all":
        n_targets = None
    else:
        try:
            n_targets = int(args.targets)
        except ValueError:
            raise InputError("--targets", f"must be a number or 'all', got {args.targets!r}") from None
        if n_targets < 1:
            raise InputError("--targets", f"must be >= 1, got {n_targets}")
    ks = KS
    if args.ks:
        try:
            ks = tuple(int(k) for k in args.ks.split(","))
        except ValueError:
            raise InputError("--ks", f"must be comma-separated integers, got {args.ks!r}") from None
        if not ks or min(ks) < 1:
            raise InputError("--ks", "values must be >= 1")
    rules = parse_relevance(args.relevance) if args.relevance else None
    sigma = None if args.smooth_sigma is None else check_sigma(args.smooth_sigma)
    with open_dataset(args.dataset) as ds:
        truth = ds.truth
        if args.truth_csv:
            truth = read_truth_csv(args.truth_csv, ds.n_maps)
            if rules is None:
                col = next((c for c in ("group", "label") if c in truth), None)
                if col is None:
                    raise InputError(args.truth_csv, "no 'group' or 'label' column: say which columns make maps "
                                                     "relevant with --relevance")
                rules = [(col, "eq", None)]
        elif rules is None and (truth is None or "relaxation_rate" not in truth):
            raise InputError(args.dataset, "no ground truth (/truth/relaxation_rate): the benchmark needs a simulated "
                                           "dataset or --truth-csv")
        if truth is None:
            raise InputError(args.dataset, "no ground truth (/truth): pass --truth-csv")
        extra = {}
        for item in args.embedding:
            name, sep, file = item.partition("=")
            if not sep or not name or name in ("latent",) + BASELINES:
                raise InputError("--embedding", f"expected NAME=FILE.npy with a new name, got {item!r}")
            arr = np.load(file)
            if arr.ndim != 2 or arr.shape[0] != ds.n_maps:
                raise InputError(file, f"must be ({ds.n_maps}, D), got {arr.shape}")
            extra[name] = arr
        latent = None if args.model else ds.read_result("latent")  # an explicit --model is always used
        if latent is None and not args.model:
            latent = ds.latents
        if latent is None and ds.has_maps:
            from .model import checkpoint_sha256, encode, load_model

            model = load_model(args.model)
            latent = encode(model, ds)
            print(f"latent: {model.checkpoint_path} (sha256 {checkpoint_sha256(model.checkpoint_path)[:12]})")
        pca = ds.read_result("similarity/pca_scores")
        if not str(ds.result_attrs.get("pca_rule", "")).startswith("exact"):
            pca = None  # an older randomized PCA is not the exact baseline: recompute
        if pca is None and ds.has_maps:
            pca = fit_pca(ds, 64, seed=args.seed)[0].scores_
        parts = {"latent": latent, "maps": ds if ds.has_maps else None, "pca": pca}
        table = benchmark(parts, truth, n_targets=n_targets, seed=args.seed, rate_tol=args.rate_tol,
                          fringe_min=args.fringe_min, rules=rules, ks=ks, extra_spaces=extra,
                          smooth_sigma_px=sigma)
    print(format_table(table))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)
    return 0
