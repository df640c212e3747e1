"""``python -m ainerd_core precompute DATASET``: everything the dashboard shows, into ``/results``.

Stages (each timed and printed; seconds stored as :class:`ainerd_core.results.Timings`):

1. maps pass  one streaming read of ``/c2`` (if any): latents from the model (unless the dataset
              carries ``/latents``, which are copied), the dynamics of every map (g2, aged g2,
              stretched-exponential fit: :mod:`ainerd_core.dynamics`, ``/results/dynamics/*``),
              the raw-pixel PCA mean and squared norms. Latents-only data with a
              known decoder: the dynamics of the decoded maps (reconstructions).
2. kmeans     sweep k = 2..12 (inertia, silhouette, Davies-Bouldin, Calinski-Harabasz), the
              suggested k, labels at the chosen k and at k = 3, 5, 8, renumbered 0 = slowest
              median fitted relaxation rate (k-means' own numbers when the order is unknown).
3. algorithms spectral, agglomerative, BIRCH, Gaussian mixture, HDBSCAN, OPTICS.
4. stability  ARI across 10 seeds and bootstrap resamples.
5. similarity exact K nearest neighbours in latent, raw-pixel (chunked BLAS, all pairs) and
              exact PCA-64 space (the raw pass keeps the Gram matrix the exact PCA is taken from).
6. umap       seeded UMAP of the latents, and of the raw pixels (PCA-50 first).
7. tables     Figure-3 tables, stress minima, flow/vorticity share over the UMAP plane.
8. retrieval  precision@k benchmark (datasets with ground truth only).
9. dynamics   dynamics score = log10 fitted relaxation rate (cross-validated ridge regression
              from the latents fills failed fits).
10. model     reconstructions, latent-noise maps, learning curve (with a model and maps);
              novelty (:mod:`ainerd_core.novelty`) of every map -> /results/novelty/*.

Everything is written with one :func:`ainerd_core.results.write_results` call at the end (checked
against the declared contract), so
``/results`` is replaced atomically and a failed run leaves the old results in place.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import analysis as A
from . import dynamics as D
from .errors import InputError
from .mapstack import MAP_SIZE
from .results import K_SET, Timings

DEFAULT_NEIGHBOURS = 100
MAPS_PASS = "1. maps pass (latents, features, PCA fit)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (.h5); /results is replaced")
    parser.add_argument("--model", default=None,
                        help="autoencoder checkpoint (default: the shipped data/demo_weights.pt if present)")
    parser.add_argument("--k", type=int, default=5, help="k-means clusters to use (0 = the suggested k); default 5")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    parser.add_argument("--neighbours", type=int, default=DEFAULT_NEIGHBOURS,
                        help=f"nearest neighbours stored per map and space (default {DEFAULT_NEIGHBOURS})")
    parser.add_argument("--n-init", type=int, default=10, help="k-means restarts (default 10)")
    parser.add_argument("--bootstrap", type=int, default=20, help="bootstrap resamples for stability (default 20)")
    parser.add_argument("--max-fit", type=int, default=A.MAX_FIT,
                        help=f"subsample for spectral/agglomerative/HDBSCAN/OPTICS (default {A.MAX_FIT})")
    parser.add_argument("--tolerance", type=float, default=10.0,
                        help="degrees around the flow / vorticity axis that count as that class (default 10)")
    parser.add_argument("--grid", type=int, default=64, help="flow-share grid nodes per side (default 64)")
    parser.add_argument("--share-radius", type=float, default=None,
                        help="flow-share neighbourhood radius in UMAP units (default 5%% of the plane)")
    parser.add_argument("--stress-sigma", type=float, default=30.0, help="stress smoothing, Gaussian sigma in s (default 30)")
    parser.add_argument("--prominence", type=float, default=None,
                        help="stress minima prominence, Pa (default: max of 5%% of the smoothed curve's 5-95 "
                             "percentile span and 3 x its noise)")
    parser.add_argument("--targets", type=int, default=100, help="retrieval benchmark targets (default 100)")
    parser.add_argument("--no-raw-neighbours", action="store_true",
                        help="skip all-pairs raw-pixel neighbours (PCA is still computed)")
    parser.add_argument("--block-rows", type=int, default=2048,
                        help="maps held in memory per block of the raw-neighbour product (default 2048 = 512 MB)")
    parser.add_argument("--latent-sweep", default=None,
                        help="JSON written by 'latent-sweep --out' to copy into model/latent_sweep (default: "
                             "<model stem>.latent_sweep.json or latent_sweep.json beside the model, if present)")
    parser.add_argument("--no-model", action="store_true",
                        help="do not load any model (the dataset must carry /latents; no model diagnostics)")
    parser.add_argument("--quiet", action="store_true", help="print nothing")


def run(args) -> int:
    precompute(args.dataset, model_path=args.model, k=args.k, seed=args.seed, neighbours=args.neighbours,
               n_init=args.n_init, n_boot=args.bootstrap, max_fit=args.max_fit, tolerance=args.tolerance,
               grid=args.grid, share_radius=args.share_radius, stress_sigma=args.stress_sigma,
               prominence=args.prominence, targets=args.targets, raw_neighbours=not args.no_raw_neighbours,
               block_rows=args.block_rows, latent_sweep=args.latent_sweep,
               use_model=not args.no_model, verbose=not args.quiet)
    return 0


class _Clock:
    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.timings: dict[str, float] = {}
        self.parts: dict[str, dict[str, float]] = {}

    def say(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        self.say(f"[{name}] ...")
        yield
        dt = time.perf_counter() - t0
        self.timings[name] = self.timings.get(name, 0.0) + dt
        self.say(f"[{name}] {dt:.2f} s")

    def add_part(self, stage: str, part: str, dt: float) -> None:
        """Seconds of one part of a stage (stored apart: parts overlap their stage)."""
        parts = self.parts.setdefault(stage, {})
        parts[part] = parts.get(part, 0.0) + dt


def _load_model(model_path, clock: _Clock):
    """The model, or None (with a printed note) when no path was given and no demo weights ship."""
    try:
        from . import model as M
    except ImportError as exc:  # pragma: no cover - torch missing
        if model_path is not None:
            raise InputError(model_path, f"cannot load models: {exc}") from None
        clock.say(f"note: no model ({exc}); model-dependent stages are skipped")
        return None
    if model_path is None:
        weights = Path(getattr(M, "DEMO_WEIGHTS", "data/demo_weights.pt"))
        if not weights.exists():
            clock.say(f"note: no --model and no shipped weights at {weights}; model-dependent stages are skipped")
            return None
    return M.load_model(model_path)


class _DynamicsCollector:
    """Streams :func:`ainerd_core.dynamics.measure_dynamics` over batches of maps into
    preallocated (N, ...) arrays (memory bounded by the batch, not by N)."""

    def __init__(self, n: int, time_step_s):
        self.n, self.dt = n, time_step_s
        self.arrays: dict[str, np.ndarray] = {}
        self.axes: dict[str, np.ndarray] = {}
        self.units: dict[str, str] = {}
        self.fit_max_lag = float("nan")

    def add(self, start: int, maps) -> None:
        out = D.measure_dynamics(maps, self.dt)
        self.units, self.fit_max_lag = out.pop("units"), out.pop("fit_max_lag")
        for key, val in out.items():
            if key in ("g2_lag", "g2_count", "aged_g2_age"):
                self.axes[key] = val
                continue
            if key not in self.arrays:
                dtype = np.float16 if key == "aged_g2" else val.dtype  # (N, W, L): half the bytes
                self.arrays[key] = np.empty((self.n,) + val.shape[1:], dtype)
            self.arrays[key][start:start + len(val)] = val

    def result(self) -> dict:
        return {**self.arrays, **self.axes}


def _shipped_decoder_for(ds, clock):
    """The shipped demo weights, when the dataset's own ``model_sha256`` attribute says they made
    its latents; else None (a decoder that did not make the latents would decode nonsense)."""
    want = ds.attrs.get("model_sha256")
    if not isinstance(want, str) or not want:
        return None
    try:
        from . import model as M
    except ImportError:  # pragma: no cover - torch missing
        return None
    weights = Path(M.DEMO_WEIGHTS)
    if not weights.exists() or M.checkpoint_sha256(weights) != want:
        clock.say("note: the dataset's model_sha256 does not match the shipped weights: no decoder, order unknown")
        return None
    return M.load_model(weights)


def _import_analysis_libraries() -> None:
    import scipy.signal  # noqa: F401
    import scipy.spatial  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.mixture  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    A.enable_numba_cache()  # imports umap (numba, pynndescent)


@dataclass(frozen=True)
class _Options:
    """The validated parameters of one run (see :func:`precompute`)."""

    k: int = 5
    seed: int = 0
    neighbours: int = DEFAULT_NEIGHBOURS
    n_init: int = 10
    n_boot: int = 20
    max_fit: int = A.MAX_FIT
    tolerance: float = 10.0
    grid: int = 64
    share_radius: float | None = None
    stress_sigma: float = 30.0
    prominence: float | None = None
    targets: int = 100
    raw_neighbours: bool = True
    block_rows: int = 2048
    latent_sweep: object = None

    def validate(self) -> None:
        """Raise :class:`InputError` naming the command-line option of the first bad value."""
        if self.k < 0 or self.k == 1:
            raise InputError("--k", f"k must be 0 (suggested) or >= 2, got {self.k}")
        for opt, value, low in (("--neighbours", self.neighbours, 1), ("--n-init", self.n_init, 1),
                                ("--bootstrap", self.n_boot, 0), ("--max-fit", self.max_fit, 10),
                                ("--grid", self.grid, 2), ("--targets", self.targets, 1),
                                ("--block-rows", self.block_rows, 1)):
            if value < low:
                raise InputError(opt, f"must be >= {low}, got {value}")
        if self.share_radius is not None and not self.share_radius > 0:
            raise InputError("--share-radius", f"must be > 0, got {self.share_radius}")
        if not self.stress_sigma > 0:
            raise InputError("--stress-sigma", f"must be > 0, got {self.stress_sigma}")


@dataclass
class _Run:
    """What the stages of one run share: the options, the open dataset and model, the
    ``/results`` arrays (``res``) and attributes (``attrs``) built so far, and the intermediate
    products one stage hands to the next."""

    path: Path
    opts: _Options
    clock: _Clock
    ds: object = None
    model: object = None
    res: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    through_segment: object = None
    n: int = 0
    meta: object = None
    time_: np.ndarray | None = None   # (N,) float64, s
    latent: np.ndarray | None = None  # (N, latent) float32
    dt_c2: float | None = None        # seconds per C2 pixel, when known
    dyn: _DynamicsCollector | None = None
    dyn_source: str = "none"
    pca: object = None
    norms: np.ndarray | None = None   # (N,) float32 squared pixel norms
    order_feature: np.ndarray | None = None  # (N,) high = slow
    chosen: int = 0
    labels: np.ndarray | None = None
    extra_k: dict = field(default_factory=dict)  # k in K_SET -> (N,) labels
    pca_scores: np.ndarray | None = None
    omp_limit: object = None

    def ordered(self, lab) -> np.ndarray:
        """Labels renumbered 0 = slowest (k-means' own numbers when the order is unknown)."""
        if self.order_feature is None:
            return np.asarray(lab, np.int32)
        return A.order_labels(lab, self.order_feature)


def precompute(path, *, model_path=None, model=None, k: int = 5, seed: int = 0,
               neighbours: int = DEFAULT_NEIGHBOURS, n_init: int = 10, n_boot: int = 20,
               max_fit: int = A.MAX_FIT, tolerance: float = 10.0, grid: int = 64, share_radius=None,
               stress_sigma: float = 30.0, prominence=None, targets: int = 100, raw_neighbours: bool = True,
               block_rows: int = 2048, latent_sweep=None, use_model: bool = True, verbose: bool = True) -> dict:
    """Run every stage on the dataset at ``path`` and replace its ``/results``.

    ``model`` (an already loaded autoencoder) takes precedence over ``model_path``;
    ``use_model=False`` ignores the shipped weights (the dataset must carry ``/latents``). Returns the
    results dict that was written (plus ``'_attrs'``).
    """
    from threadpoolctl import threadpool_limits

    from .results import write_results

    opts = _Options(k=k, seed=seed, neighbours=neighbours, n_init=n_init, n_boot=n_boot, max_fit=max_fit,
                    tolerance=tolerance, grid=grid, share_radius=share_radius, stress_sigma=stress_sigma,
                    prominence=prominence, targets=targets, raw_neighbours=raw_neighbours,
                    block_rows=block_rows, latent_sweep=latent_sweep)
    clock = _Clock(verbose)
    t_all = time.perf_counter()
    opts.validate()
    run = _Run(Path(path), opts, clock, attrs={"seed": int(seed), "n_init": int(n_init)})
    try:
        with clock.stage("0. open + model"):
            _open(run, model_path, model, use_model)
        _read_inputs(run, use_model)
        if run.ds.has_maps:
            with clock.stage(MAPS_PASS):
                _maps_pass(run)
        _store_latents(run)
        _decoded_dynamics(run)
        _dynamics_score(run)
        # Small-matrix work runs on ONE BLAS/OpenMP thread: on 2 busy cores, 2 OpenBLAS/OpenMP
        # threads spin-wait (measured on the shared dev machine: k-means sweep of 180 points
        # 13.8 s with 2 threads vs 1.8 s with 1; a 13,000-point k-means 5.5 s vs 0.25 s). Only
        # the all-pairs raw-pixel product (stage 5c) and torch (stages 1, 10) use every thread.
        with clock.stage("1b. import sklearn, umap"):
            _import_analysis_libraries()  # threadpoolctl only limits libraries already loaded
        run.omp_limit = threadpool_limits(1)
        with clock.stage("2. kmeans sweep"):
            _kmeans(run)
        with clock.stage("3. other algorithms"):
            _other_algorithms(run)
        with clock.stage("4. stability"):
            _stability(run)
        _neighbours(run)
        _umap(run)
        with clock.stage("7. tables, stress minima, flow share"):
            _tables(run)
        _retrieval(run)
        with clock.stage("9. dynamics order check"):
            _order_check(run)
        run.omp_limit.restore_original_limits()  # torch keeps its own threads
        if run.model is not None:
            with clock.stage("10. model diagnostics"):
                _model_diagnostics(run.model, run.ds, run.latent, seed, run.res, run.attrs, clock, latent_sweep)
        if run.model is not None and run.ds.has_maps:
            with clock.stage("10b. novelty"):
                _novelty(run)
    finally:
        if run.omp_limit is not None:
            run.omp_limit.restore_original_limits()
        if run.ds is not None:
            run.ds.close()

    res, attrs = run.res, run.attrs
    # the stored total covers everything up to the write (it cannot time its own write)
    attrs.update(Timings(dict(clock.timings), clock.parts, time.perf_counter() - t_all).to_attrs())
    with clock.stage("11. write"):
        write_results(run.path, res, attrs, through_segment=run.through_segment)
    total = time.perf_counter() - t_all
    clock.say(f"precompute: {run.n} maps, k = {attrs['k']}, total {total:.1f} s -> {run.path}")
    res["_attrs"] = attrs
    return res


def _open(run: _Run, model_path, model, use_model: bool) -> None:
    """Stage 0: open the dataset (refusing a malformed one) and find the model, if any."""
    from .dataset import open_dataset

    run.ds = ds = open_dataset(run.path)  # refuses a file whose n_maps, /meta/time or /c2 shape is wrong
    run.through_segment = ds.last_segment  # a live watcher may append while we compute
    if ds.has_maps:
        ds.check_maps(size=MAP_SIZE)  # the autoencoder's input; values are checked as maps are read
    if model is None and use_model and (ds.has_maps or model_path is not None):
        model = _load_model(model_path, run.clock)  # latents-only data needs no model
    elif model is None and use_model and not ds.has_maps and ds.latents is not None:
        model = _shipped_decoder_for(ds, run.clock)  # only when the dataset names its checksum
    run.model = model
    run.attrs["model"] = str(getattr(model, "checkpoint_path", "given")) if model is not None else "none"
    if getattr(model, "checkpoint_path", None) and Path(model.checkpoint_path).is_file():
        # the checksum lets the dashboard find the same checkpoint after a folder moves
        from .results import checkpoint_sha256

        run.attrs["model_sha256"] = checkpoint_sha256(model.checkpoint_path)


def _read_inputs(run: _Run, use_model: bool) -> None:
    """The map count, metadata, shipped latents and C2 time step; refuses data nothing can encode."""
    ds = run.ds
    run.n = n = ds.n_maps
    if n < 4:
        raise InputError(run.path, f"precompute needs at least 4 maps, the dataset has {n}")
    run.meta = ds.meta
    run.time_ = np.asarray(run.meta["time"], dtype=np.float64)
    shipped = ds.latents
    if shipped is None and (run.model is None or not ds.has_maps):
        raise InputError(run.path, "no /latents in the dataset and no model to encode its maps: pass --model PATH"
                         + (" (or drop --no-model)" if not use_model else ""))
    run.latent = None if shipped is None else np.asarray(shipped, np.float32)
    run.attrs["latent_source"] = "dataset /latents" if shipped is not None else "model"
    dt_c2 = ds.attrs.get("c2_time_step_s")
    run.dt_c2 = float(dt_c2) if dt_c2 is not None and np.isfinite(float(dt_c2)) and float(dt_c2) > 0 else None


def _maps_pass(run: _Run) -> None:
    """Stage 1: one streaming read of ``/c2``: latents (unless shipped), the dynamics of every map,
    the squared pixel norms and the PCA sketch (exact PCA from the Gram matrix of the raw pass,
    unless too many maps for an N x N matrix)."""
    from . import similarity as S

    ds, n, model = run.ds, run.n, run.model
    need_encode = run.latent is None
    if need_encode:
        from .model import BULK_MIN_MAPS
        from .model import encode as _encode
    lat_parts = np.empty((n, model.latent_size), np.float32) if need_encode else None
    run.dyn = dyn = _DynamicsCollector(n, run.dt_c2)
    sub = {"encode": 0.0, "dynamics": 0.0, "pca_sketch": 0.0}
    src = S.MapSource(ds)
    run.pca = pca = (S.ExactPCA(n, src.p, 64) if n <= S.EXACT_PCA_MAX_N
                     else S.StreamingPCA(n, src.p, 64, n_iter=4, seed=run.opts.seed))
    run.norms = norms = np.empty(n, np.float32)
    side = ds.map_size
    for s, flat in src.batches(256):
        maps = flat.reshape(len(flat), side, side)
        t0 = time.perf_counter()
        if need_encode:
            # the dataset's size, not this piece's, decides the bulk encoder path
            lat_parts[s:s + len(maps)] = _encode(model, maps, batch_size=64, bulk=n >= BULK_MIN_MAPS)
        t1 = time.perf_counter()
        dyn.add(s, maps)
        t2 = time.perf_counter()
        norms[s:s + len(flat)] = np.einsum("ij,ij->i", flat, flat)
        pca.add_sketch(s, flat)
        sub["encode"] += t1 - t0
        sub["dynamics"] += t2 - t1
        sub["pca_sketch"] += time.perf_counter() - t2
    if need_encode:
        run.latent = lat_parts
    run.dyn_source = "maps"
    for key, v in sub.items():
        run.clock.add_part(MAPS_PASS, key, v)
    run.clock.say("    " + ", ".join(f"{key} {v:.2f} s" for key, v in sub.items()))


def _store_latents(run: _Run) -> None:
    if run.latent.shape[0] != run.n:
        raise InputError(run.path, f"latents have {run.latent.shape[0]} rows for {run.n} maps")
    run.res["latent"] = run.latent.astype(np.float32)


def _decoded_dynamics(run: _Run) -> None:
    """Stage 1c: latents-only data with a decoder: the dynamics of the decoded maps (reconstructions)."""
    model, latent = run.model, run.latent
    if run.dyn is not None or model is None:
        return
    if latent.shape[1] != model.latent_size:
        run.clock.say(f"    note: latents have {latent.shape[1]} dimensions, the model {model.latent_size}: "
                      "cannot decode them, the cluster order is unknown")
        return
    with run.clock.stage("1c. dynamics of the decoded latents"):
        from .model import decode as _decode

        run.dyn = _DynamicsCollector(run.n, run.dt_c2)
        for s in range(0, run.n, 64):
            run.dyn.add(s, _decode(model, latent[s:s + 64], batch_size=64))
        run.dyn_source = "decoded latents (reconstruction)"


def _dynamics_score(run: _Run) -> None:
    """``/results/dynamics/*``, the dynamics score (log10 fitted rate, failed fits filled from the
    latents) and the ordering feature the cluster labels are renumbered by."""
    res, attrs, dyn, latent = run.res, run.attrs, run.dyn, run.latent
    attrs["dynamics_source"] = run.dyn_source
    if dyn is None:
        attrs["order_rule"] = D.ORDER_UNKNOWN
        attrs["order_feature_name"] = "none (order unknown)"
        return
    dres = dyn.result()
    for key, val in dres.items():
        if key != "units":
            res[f"dynamics/{key}"] = val
    rate = dres["relaxation_rate"].astype(np.float64)
    failed = (dres["fit_status"] == 3) | ~(rate > 0)
    score = np.where(failed, np.nan, np.log10(np.where(rate > 0, rate, 1.0)))
    r_cv = float("nan")
    if (~failed).sum() >= 10:
        pred, r_cv = A.dynamics_regression(latent[~failed], score[~failed], seed=run.opts.seed)
        if failed.any():
            score[failed] = A.ridge_fill(latent[~failed], score[~failed], latent[failed])
    elif failed.any():
        score[failed] = np.nanmedian(score) if (~failed).any() else 0.0
    res["dynamics_score"] = score.astype(np.float32)
    res["dynamics/score_filled"] = failed
    run.order_feature = -score  # high = slow, as A.order_labels expects
    res["order_feature"] = run.order_feature.astype(np.float32)
    unit = dyn.units["relaxation_rate"]
    from_maps = run.dyn_source == "maps"
    attrs["dynamics_units_json"] = json.dumps(dyn.units)
    attrs["dynamics_fit_max_lag"] = dyn.fit_max_lag
    attrs["order_feature_name"] = (f"minus log10 fitted relaxation rate ({unit}; dynamics_score negated): "
                                   "high = slow")
    attrs["order_rule"] = D.ORDER_RULE + ("" if from_maps else " (measured on the decoded latents: reconstructions)")
    attrs["dynamics_score_rule"] = (
        f"log10 of the fitted relaxation rate ({unit}) of the stretched-exponential g2 fit "
        f"({'maps' if from_maps else 'decoded latents: reconstructions'}); "
        f"{int(failed.sum())} failed fit(s) filled by a ridge regression (standardised latents, RidgeCV "
        "alpha 1e-3..1e3) fitted on the others (dynamics/score_filled); higher = faster")
    attrs["dynamics_score_r"] = float(r_cv)
    attrs["dynamics_status_counts_json"] = json.dumps(
        {name: int((dres["fit_status"] == c).sum()) for c, name in enumerate(D.STATUS_NAMES)})


def _kmeans(run: _Run) -> None:
    """Stage 2: the k sweep, the suggested k, labels at the chosen k and at K_SET, and the
    renumbered centroids live mode classifies new maps against."""
    o, res, latent, n = run.opts, run.res, run.latent, run.n
    sweep = A.kmeans_sweep(latent, A.K_RANGE, seed=o.seed, n_init=o.n_init)
    suggested = A.suggest_k(sweep)
    chosen = suggested if o.k == 0 else int(o.k)
    if chosen >= n:
        raise InputError("--k", f"k = {chosen} needs more than {n} maps")

    def labels_at(kk):
        lab = sweep["labels"].get(kk)
        if lab is None:
            lab = A.kmeans_labels(latent, kk, o.seed, o.n_init)
        return run.ordered(lab)

    run.chosen, run.labels = chosen, labels_at(chosen)
    res["labels"] = run.labels
    run.extra_k = {kk: labels_at(kk) for kk in K_SET if kk < n}
    for kk, lab in run.extra_k.items():
        res[f"labels_k{kk}"] = lab
    # frozen reference for live mode (ainerd_core.watch): centroids in the renumbered order
    # (a converged k-means centroid is the mean of its members)
    for kk, lab in {chosen: run.labels, **run.extra_k}.items():
        res[f"kmeans/centroids_k{kk}"] = np.stack(
            [latent[lab == c].mean(axis=0) if np.any(lab == c) else np.full(latent.shape[1], np.nan)
             for c in range(kk)]).astype(np.float32)
    for key in ("k", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz"):
        res[f"kmeans/{key}"] = sweep[key]
    run.attrs.update(k=chosen, suggested_k=suggested, k_rule=A.K_RULE)
    run.clock.say(f"    suggested k = {suggested} ({A.K_RULE.split(';')[0]}); using k = {chosen}")


def _other_algorithms(run: _Run) -> None:
    """Stage 3: the other clustering algorithms at the chosen k, renumbered like k-means."""
    algo, info = A.other_algorithms(run.latent, run.chosen, seed=run.opts.seed, max_fit=run.opts.max_fit)
    summary = {}
    for name, lab in algo.items():
        lab = run.ordered(lab)
        run.res[f"algorithms/{name}"] = lab
        summary[name] = {**A.cluster_sizes(lab), **info[name]}
    summary["kmeans"] = {**A.cluster_sizes(run.labels), "n_fit": run.n, "extension": "none (fitted on all points)"}
    run.attrs["algorithms_json"] = A.to_json(summary)


def _stability(run: _Run) -> None:
    """Stage 4: ARI of the chosen labels across seeds and bootstrap resamples."""
    o = run.opts
    st = A.stability(run.latent, run.labels, run.chosen, seed=o.seed, n_seeds=10, n_boot=o.n_boot, n_init=o.n_init)
    run.res["stability/ari_seeds"] = st["ari_seeds"]
    run.res["stability/ari_bootstrap"] = st["ari_bootstrap"]
    run.clock.say(f"    ARI seeds min {st['ari_seeds'].min():.3f}, bootstrap median "
                  f"{np.median(st['ari_bootstrap']) if len(st['ari_bootstrap']) else float('nan'):.3f}")


def _neighbours(run: _Run) -> None:
    """Stage 5: exact K nearest neighbours in latent space and (with maps) raw-pixel, smoothed-pixel
    (unless ``--no-raw-neighbours``) and PCA-64 space."""
    from threadpoolctl import threadpool_limits

    from . import similarity as S

    o, res, clock, pca, n = run.opts, run.res, run.clock, run.pca, run.n
    with clock.stage("5a. latent neighbours"):
        res["similarity/latent_index"], res["similarity/latent_distance"] = S.knn_array(run.latent, o.neighbours)
    if not run.ds.has_maps:
        return
    exact = getattr(pca, "exact", False)
    src = S.MapSource(run.ds)
    with clock.stage("5b. PCA power iteration"):
        pca.power_iterations(src)
    if o.raw_neighbours:
        with clock.stage("5c. raw neighbours (all pairs) + PCA projection"):
            run.omp_limit.restore_original_limits()  # the one big BLAS job: every thread
            ri, rd = S.raw_knn(src, o.neighbours, sqnorms=run.norms, block_rows=o.block_rows,
                               on_block=pca.add_projection, gram=pca.gram if exact else None)
            run.omp_limit = threadpool_limits(1)
            res["similarity/raw_index"], res["similarity/raw_distance"] = ri, rd
        with clock.stage("5c'. smoothed-pixel neighbours (all pairs)"):
            run.omp_limit.restore_original_limits()
            si, sd = S.smoothed_knn(src, o.neighbours, S.SMOOTH_SIGMA_PX, block_rows=o.block_rows)
            run.omp_limit = threadpool_limits(1)
            res["similarity/smoothed_index"], res["similarity/smoothed_distance"] = si, sd
            run.attrs["smooth_sigma_px"] = S.SMOOTH_SIGMA_PX
    else:
        with clock.stage("5c. PCA projection"):
            if exact:
                pca.compute_gram(src, o.block_rows)
            for s, b in src.batches(256):
                pca.add_projection(s, b)
    with clock.stage("5d. PCA neighbours"):
        pca.finish(src) if exact else pca.finish()
        run.pca_scores = pca.scores_
        res["similarity/pca_index"], res["similarity/pca_distance"] = S.knn_array(run.pca_scores, o.neighbours)
        res["similarity/pca_components"], res["similarity/pca_mean"] = pca.components_, pca.mean_
        res["similarity/pca_scores"] = run.pca_scores
        run.attrs["pca_explained_variance"] = float(np.sum(pca.explained_variance_ratio_))
        run.attrs["pca_rule"] = (S.PCA_RULE_EXACT.format(c=pca.c, n=n) if exact else
                                 S.PCA_RULE_RANDOMIZED.format(c=pca.c, it=4, n=n, limit=S.EXACT_PCA_MAX_N))


def _umap(run: _Run) -> None:
    """Stage 6: seeded UMAP of the latents, and of the raw pixels (their PCA-50) when there are maps."""
    with run.clock.stage("6a. umap (latent)"):
        run.res["umap"] = A.umap_embed(run.latent, seed=run.opts.seed)
    if run.pca_scores is not None:
        with run.clock.stage("6b. umap (raw pixels, PCA-50)"):
            run.res["umap_raw"] = A.umap_embed(run.pca_scores[:, :50], seed=run.opts.seed)


def _tables(run: _Run) -> None:
    """Stage 7: the Figure-3 tables, the stress minima and the flow/vorticity share over the UMAP plane."""
    from .geometry import sector_class

    o, res, attrs, meta, time_ = run.opts, run.res, run.attrs, run.meta, run.time_
    times, tidx = A.time_index(time_)
    res["tables/times"], res["tables/time_index"] = times, tidx
    res["tables/counts"] = A.counts_per_time(tidx, run.labels, times.size, run.chosen)
    for kk, lab in run.extra_k.items():
        res[f"tables/counts_k{kk}"] = A.counts_per_time(tidx, lab, times.size, kk)
    sectors, mat = A.sector_time_matrix(np.asarray(meta["sector"]), tidx, run.labels, times.size)
    res["tables/sectors"], res["tables/sector_time_labels"] = sectors, mat
    rheo = run.ds.rheology
    if rheo is not None and "shear_stress" in rheo:
        lo = max(0.0, float(time_.min()))
        hi = float(time_.max())
        tmin, prom, rule = A.stress_minima(rheo["time"], rheo["shear_stress"], t_range=(lo, hi),
                                           sigma_s=o.stress_sigma, prominence=o.prominence)
        res["stress_minima/time"] = tmin
        attrs["stress_minima_prominence"] = prom
        attrs["stress_minima_rule"] = rule + f"; window {lo:g}..{hi:g} s (after cessation, within the maps' times)"
    flow_axis = float(run.ds.attrs.get("flow_axis_deg", 90.0))
    classes = sector_class(np.asarray(meta["phi"], dtype=float), flow_axis, o.tolerance)
    res["sector_class"] = classes
    gx, gy, share, radius = A.flow_share_grid(res["umap"], classes, grid=o.grid, radius=o.share_radius)
    res["flow_share/x"], res["flow_share/y"], res["flow_share/share"] = gx, gy, share
    attrs.update(flow_share_radius=radius, sector_tolerance_deg=float(o.tolerance), flow_axis_deg=flow_axis)


def _retrieval(run: _Run) -> None:
    """Stage 8: precision@k benchmark (datasets with a ground-truth relaxation rate only)."""
    truth = run.ds.truth
    if truth is None or "relaxation_rate" not in truth:
        return
    with run.clock.stage("8. retrieval benchmark"):
        from .retrieval import benchmark, format_table

        parts = {"latent": run.latent, "maps": run.ds if run.ds.has_maps else None, "pca": run.pca_scores}
        table = benchmark(parts, truth, n_targets=run.opts.targets, seed=run.opts.seed)
        run.attrs["retrieval_json"] = json.dumps(table)
        run.clock.say(format_table(table))


def _order_check(run: _Run) -> None:
    """Stage 9: Spearman(cluster label, fitted rate) per k, and of the dynamics score against truth."""
    res, attrs = run.res, run.attrs
    if run.dyn is None:
        attrs["order_spearman_json"] = A.to_json({})
        return
    from scipy.stats import spearmanr

    rate = np.asarray(res["dynamics/relaxation_rate"], np.float64)
    fitted = np.asarray(res["dynamics/fit_status"]) != 3
    rho = {}
    for kk, lab in sorted({run.chosen: run.labels, **run.extra_k}.items()):
        m = fitted & (lab >= 0)
        rho[str(kk)] = (float(spearmanr(lab[m], rate[m]).statistic)
                        if m.sum() > 2 and np.ptp(lab[m]) > 0 and np.ptp(rate[m]) > 0 else float("nan"))
    attrs["order_spearman_json"] = A.to_json(rho)
    run.clock.say("    Spearman(cluster label, fitted rate): " + ", ".join(f"k={k_} {v:.3f}" for k_, v in rho.items()))
    truth = run.ds.truth
    if truth is not None and "relaxation_rate" in truth:
        t_rho = float(spearmanr(res["dynamics_score"], truth["relaxation_rate"]).statistic)
        attrs["dynamics_score_spearman_truth"] = t_rho
        run.clock.say(f"    Spearman(dynamics score, true relaxation rate) {t_rho:.3f}")


def _novelty(run: _Run) -> None:
    """Stage 10b: novelty of every map (:mod:`ainerd_core.novelty`) and the reference it was measured
    against (stored for uploads and live mode)."""
    from . import novelty as NV

    model, ds, latent, seed, res, attrs = run.model, run.ds, run.latent, run.opts.seed, run.res, run.attrs
    own = attrs.get("latent_source") == "model"  # shipped /latents may come from another model
    stored = getattr(model, "checkpoint_info", {}).get("novelty_reference")
    if own and stored is None:
        # one decode of every map serves both the dataset-built reference and the scores
        errors, _ = NV.recon_errors(model, ds, latent)
        ref = NV.reference_from_arrays(latent, errors, seed=seed)
        nov = NV.novelty_of_maps(model, ds, ref, latents=latent, errors=errors)
    else:
        ref = NV.reference_for(model, ds, seed=seed)
        nov = NV.novelty_of_maps(model, ds, ref, latents=latent if own else None)
    for key in ("score", "recon_quantile", "knn_quantile", "recon_error", "knn_distance"):
        res[f"novelty/{key}"] = nov[key]
    for key in ("bank", "recon", "knn", "combined"):  # the reference, for uploads and live mode
        res[f"novelty/reference_{key}"] = np.asarray(NV._as_np(ref[key]), np.float32)
    attrs["novelty_k"] = int(ref.get("k", NV.DEFAULT_K))
    attrs.update(novelty_source=nov["source"], novelty_threshold=NV.NOVEL_THRESHOLD,
                 novelty_rule=NV.RULE.format(k=int(ref.get("k", NV.DEFAULT_K)), thr=NV.NOVEL_THRESHOLD))
    run.clock.say(f"    novelty: {int(nov['novel'].sum())} of {run.n} maps >= {NV.NOVEL_THRESHOLD}")


def _model_diagnostics(model, ds, latent, seed, res, attrs, clock, latent_sweep_path=None) -> None:
    """Reconstructions of held-out maps, latent-noise maps, learning curve, latent sweep
    (through :mod:`ainerd_core.diagnostics`)."""
    from . import diagnostics as D

    info = getattr(model, "checkpoint_info", {}) or {}
    sigma = 0.3
    if ds.has_maps:
        rec = D.reconstructions(model, ds, n=16, seed=seed)
        res["model/recon_index"] = np.asarray(rec["index"], np.int32)
        res["model/recon_input"] = np.asarray(rec["input"], np.float32)
        res["model/recon_output"] = np.asarray(rec["output"], np.float32)
        attrs["recon_pool"] = ("model's held-out test split of this dataset" if D.has_held_out_split(model, ds.n_maps)
                               else "dataset's maps (the model was not trained on this dataset)")
    heldout = D.held_out_text(info)
    if heldout:
        attrs["model_heldout"] = heldout
    if attrs.get("latent_source") != "model":
        clock.say("    note: the latents did not come from this model: no latent-noise maps")
    elif latent.shape[1] == model.latent_size:
        noise = D.latent_noise(model, latent, sigma=sigma, n=16, seed=seed)
        res["model/noise_maps"] = np.asarray(noise["maps"], np.float32)
        attrs["noise_sigma"] = sigma
        attrs["noise_center_index"] = int(noise["index"])
    else:
        clock.say(f"    note: latents have {latent.shape[1]} dimensions, the model {model.latent_size}: no noise maps")
    curve = info.get("learning_curve") or {}
    if not curve:
        cpath = getattr(model, "checkpoint_path", None)
        side = Path(cpath).with_name(Path(cpath).stem + ".curve.json") if cpath else None
        if side is not None and side.exists():
            try:
                curve = json.loads(side.read_text())
                curve = curve.get("learning_curve", curve) if isinstance(curve, dict) else {}
            except (OSError, ValueError):
                curve = {}
    curve, curve_note = D.curve_as_mse(curve, info)
    for key in ("epoch", "train_loss", "val_loss"):
        if key in curve and len(curve[key]):
            res[f"model/learning_curve/{key}"] = np.asarray(curve[key], np.float64)
    if curve.get("epoch") and info.get("best_epoch") is not None:
        attrs["model_best_epoch"] = int(info["best_epoch"])
    if curve_note:
        attrs["learning_curve_note"] = curve_note
    sweep = _latent_sweep(model, info, latent_sweep_path, attrs.get("model_sha256"))
    if sweep.get("skipped"):
        attrs["latent_sweep_note"] = sweep["skipped"]
        clock.say(f"    note: {sweep['skipped']}")
    for key in ("latent_size", "test_mse"):
        if key in sweep:
            res[f"model/latent_sweep/{key}"] = np.asarray(sweep[key], np.float64)
    if "latent_size" in sweep:
        attrs["latent_sweep_schedule"] = D.sweep_schedule_text(sweep)


def _latent_sweep(model, info, explicit=None, model_sha=None) -> dict:
    """The latent-size sweep (``latent-sweep --out`` JSON): ``explicit`` path, else inside the
    checkpoint, else a JSON beside it (``<stem>.latent_sweep.json`` or ``latent_sweep.json``).

    A sweep warm-started from a checkpoint describes those weights only: it is used when its
    recorded ``schedule.init_sha256`` equals ``model_sha`` (the model's file checksum). Otherwise
    (other weights, or a checksum not recorded) a sweep found beside the model is left out and
    ``{"skipped": reason}`` is returned; an ``explicit`` one is an InputError. A sweep trained from
    random initialisation (no ``init_from``) is not tied to any weights and is always used."""
    cands = []
    if explicit is not None:
        if not Path(explicit).exists():
            raise InputError(explicit, "no such latent-sweep JSON file")
        cands.append(Path(explicit))
    elif isinstance(info.get("latent_sweep"), dict):
        return info["latent_sweep"]
    path = getattr(model, "checkpoint_path", None)
    if path and explicit is None:
        p = Path(path)
        cands += [p.with_name(p.stem + ".latent_sweep.json"), p.parent / "latent_sweep.json"]
    for cand in cands:
        if cand.exists():
            try:
                obj = json.loads(cand.read_text())
            except (OSError, ValueError):
                if explicit is not None:
                    raise InputError(cand, "not a readable JSON file") from None
                continue
            sweep = obj.get("latent_sweep", obj) if isinstance(obj, dict) else {}
            if isinstance(sweep, dict) and "latent_size" in sweep:
                other = _sweep_from_other_weights(sweep, model_sha)
                if other and explicit is not None:
                    raise InputError(cand, other)
                return {"skipped": f"{cand.name} not shown: {other}"} if other else sweep
    return {}


def _sweep_from_other_weights(sweep: dict, model_sha) -> str | None:
    """Why a latent-size sweep does not describe the model with checksum ``model_sha`` (None: it does)."""
    sch = sweep.get("schedule") or {}
    if not sch.get("init_from"):
        return None
    got = sch.get("init_sha256")
    if not got:
        return "the sweep was warm-started from weights whose checksum it does not record"
    if got != model_sha:
        return (f"the sweep was warm-started from other weights (sha256 {str(got)[:12]}), not from this model"
                f" (sha256 {str(model_sha)[:12] if model_sha else 'unknown'})")
    return None
