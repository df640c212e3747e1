"""Analysis of a latent space: clustering, ordering by dynamics, stability, UMAP, Figure-3 tables.

Everything here works on in-memory arrays (latents are small: 13,000 x 64 float32 is 3 MB);
map-derived features are computed by :func:`map_profile_features` from batches, so callers
stream the maps. ``ainerd_core.precompute`` chains these functions and writes ``/results``.

Conventions
-----------
* Cluster labels are renumbered so that cluster 0 = slowest dynamics, the last cluster =
  fastest; noise of density methods stays -1.
* The ordering feature ("slowness", high = slow) is minus log10 of the fitted relaxation rate
  of each map's g2 (:mod:`ainerd_core.dynamics`, computed by precompute; on latents-only data
  from the decoded maps when the decoder is known). Without maps and without a decoder the
  order is unknown: no time-based or latent proxy is used (it would be circular against the
  time axis of the timeline figure). The diagonal-profile features below are kept for
  diagnostics only: after min-max normalisation their band area is U-shaped in the true rate.
"""
from __future__ import annotations

import importlib
import json
import warnings
from typing import Iterable, Mapping

import numpy as np

K_RANGE = tuple(range(2, 13))
SUGGEST_RANGE = (4, 8)
K_RULE = ("suggested k = the k in 4..8 with the highest silhouette score (ties -> smaller k); "
          "4-6 is the published optimum, the sweep 2..12 is shown so users can judge the elbow")
SILHOUETTE_SAMPLE = 3000
MAX_FIT = 3000  # subsample size for the O(N^2) algorithms


# --------------------------------------------------------------------------- map features
def diagonal_profile(maps: np.ndarray) -> np.ndarray:
    """Mean of each map along its diagonals: profile[b, d] = mean_i C2[b, i, i + d].

    Parameters
    ----------
    maps : (B, L, L) float array (symmetric C2 maps; the upper triangle is used)

    Returns
    -------
    (B, L) float32: lag 0 is the main diagonal, lag d the d-th off-diagonal.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    L = maps.shape[-1]
    out = np.empty((maps.shape[0], L), np.float32)
    for d in range(L):
        out[:, d] = np.diagonal(maps, offset=d, axis1=1, axis2=2).mean(axis=-1)
    return out


def profile_features(profile: np.ndarray) -> dict[str, np.ndarray]:
    """Dynamics features of diagonal profiles (B, L).

    ``slowness``: mean of the profile over lags 1..L-1 (equal weight per lag; the area under the
    decay curve / L): a broad band (slow) gives a high value, a thin band (fast) a low one.
    ``half_lag``: first lag (pixels, linearly interpolated) where the profile, measured from its
    baseline (minimum over lags >= 1), falls to half its value at lag 1; L if it never does
    (decay slower than the map), 0.5 if the profile is already flat at lag 1 (decay faster than
    one pixel: lag-1 excess < 5 % of the lag-0 excess; a profile flat from lag 0 on counts as
    never decaying).
    """
    p = np.asarray(profile, dtype=np.float64)
    B, L = p.shape
    slowness = p[:, 1:].mean(axis=1)
    base = p[:, 1:].min(axis=1)
    top = p[:, 1] - base
    half = np.full(B, float(L))
    for b in range(B):
        lag0 = p[b, 0] - base[b]
        if top[b] <= 1e-12 or top[b] <= 0.05 * lag0:
            half[b] = 0.5 if lag0 > 1e-6 else float(L)  # thinner than a pixel / no decay at all
            continue
        q = (p[b, 1:] - base[b]) / top[b]  # q[0] = 1 at lag 1
        below = np.nonzero(q <= 0.5)[0]
        if below.size:
            j = below[0]  # lag j + 1
            if j == 0:
                half[b] = 1.0
            else:
                q0, q1 = q[j - 1], q[j]
                half[b] = j + (q0 - 0.5) / (q0 - q1) if q0 != q1 else j + 1.0
    return {"slowness": slowness.astype(np.float32), "half_lag": half.astype(np.float32)}


def map_profile_features(maps: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`profile_features` of a batch of maps."""
    return profile_features(diagonal_profile(maps))


# --------------------------------------------------------------------------- clustering
def order_labels(labels: np.ndarray, slowness: np.ndarray) -> np.ndarray:
    """Renumber labels so that 0 = highest median slowness (slowest dynamics); -1 stays -1.

    ``slowness`` (N,): high = slow, e.g. minus log10 fitted relaxation rate (the median of a
    monotone transform orders clusters as the median rate does). NaN entries are ignored."""
    labels = np.asarray(labels)
    slowness = np.asarray(slowness, dtype=np.float64)
    out = np.full(labels.shape, -1, dtype=np.int32)
    ids = [c for c in np.unique(labels) if c >= 0]
    means = []
    for c in ids:
        v = slowness[labels == c]
        v = v[np.isfinite(v)]
        means.append(float(np.median(v)) if v.size else -np.inf)
    for new, i in enumerate(np.argsort(means, kind="stable")[::-1]):
        out[labels == ids[i]] = new
    return out


def kmeans_fit(x: np.ndarray, k: int, seed: int, n_init: int = 10):
    """The one k-means of the project (sweep, chosen k, stability, re-clustering on /clusters):
    scikit-learn's KMeans on float32 latents, ``n_init`` restarts, ``random_state=seed``."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=int(k), n_init=int(n_init), random_state=int(seed)).fit(np.asarray(x, dtype=np.float32))


def kmeans_labels(x: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
    """Raw (not renumbered) k-means labels (N,) int32 of :func:`kmeans_fit`."""
    return kmeans_fit(x, k, seed, n_init).labels_.astype(np.int32)


def recluster(x: np.ndarray, k: int, algorithm: str, order_feature=None, *, seed: int = 0, n_init: int = 10
              ) -> np.ndarray:
    """Labels (N,) int32 of ``algorithm`` (``'kmeans'`` or a name of :func:`other_algorithms`) at
    ``k`` on latents ``x`` (N, D), renumbered by ``order_feature`` (N,) like precompute's labels
    (0 = highest = slowest). With precompute's ``seed`` and ``n_init`` (``/results`` attrs), k-means
    gives precompute's labels at the same k."""
    x = np.asarray(x, dtype=np.float32)
    if algorithm == "kmeans":
        lab = kmeans_labels(x, k, seed, n_init)
    else:
        labs, _ = other_algorithms(x, k, seed=seed, names=(algorithm,))
        lab = labs[algorithm]
    if order_feature is not None:
        lab = order_labels(lab, np.asarray(order_feature, dtype=np.float64))
    return np.asarray(lab, dtype=np.int32)


def kmeans_sweep(x: np.ndarray, ks: Iterable[int] = K_RANGE, seed: int = 0, n_init: int = 10,
                 silhouette_sample: int = SILHOUETTE_SAMPLE) -> dict:
    """k-means for each k: inertia, silhouette (on a seeded sample of at most
    ``silhouette_sample`` points), Davies-Bouldin, Calinski-Harabasz, and the labels."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    x = np.asarray(x, dtype=np.float32)
    ks = [k for k in ks if 2 <= k < x.shape[0]]
    out = {"k": np.asarray(ks, dtype=np.int32), "inertia": [], "silhouette": [],
           "davies_bouldin": [], "calinski_harabasz": [], "labels": {}}
    sample = min(silhouette_sample, x.shape[0])
    for k in ks:
        km = kmeans_fit(x, k, seed, n_init)
        lab = km.labels_.astype(np.int32)
        out["labels"][k] = lab
        out["inertia"].append(float(km.inertia_))
        if np.unique(lab).size > 1:
            out["silhouette"].append(float(silhouette_score(x, lab, sample_size=sample, random_state=seed)))
            out["davies_bouldin"].append(float(davies_bouldin_score(x, lab)))
            out["calinski_harabasz"].append(float(calinski_harabasz_score(x, lab)))
        else:
            out["silhouette"].append(np.nan)
            out["davies_bouldin"].append(np.nan)
            out["calinski_harabasz"].append(np.nan)
    for key in ("inertia", "silhouette", "davies_bouldin", "calinski_harabasz"):
        out[key] = np.asarray(out[key], dtype=np.float64)
    return out


def suggest_k(sweep: Mapping, lo: int = SUGGEST_RANGE[0], hi: int = SUGGEST_RANGE[1]) -> int:
    """The rule of :data:`K_RULE`: best silhouette for k in lo..hi (falls back to all k)."""
    ks = np.asarray(sweep["k"])
    sil = np.asarray(sweep["silhouette"], dtype=float)
    mask = (ks >= lo) & (ks <= hi) & np.isfinite(sil)
    if not mask.any():
        mask = np.isfinite(sil)
    if not mask.any():
        return int(ks[0])
    cand = ks[mask]
    return int(cand[np.argmax(sil[mask])])  # argmax takes the first (smallest k) on ties


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) int32: the row of ``centroids`` (C, D) nearest (Euclidean) to each row of ``x`` (N, D).

    A centroid with NaN (a cluster left empty) is never nearest."""
    x, c = np.asarray(x, dtype=np.float64), np.asarray(centroids, dtype=np.float64)
    d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return np.argmin(np.where(np.isnan(d), np.inf, d), axis=1).astype(np.int32)


def pca_plane(x: np.ndarray) -> np.ndarray:
    """(N, 2) float64 scores of the rows of ``x`` (N, D) on its first two principal components
    (exact SVD of the centred data), each axis signed so that its largest absolute score is
    positive: the same data always gives the same picture."""
    centred = np.asarray(x, dtype=np.float64)
    centred = centred - centred.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    plane = centred @ vt[:2].T
    plane *= np.sign(plane[np.argmax(np.abs(plane), axis=0), [0, 1]])
    return plane


def _nearest_centroid_extend(x, fit_idx, fit_labels):
    """Labels for all points: each point gets the label of the nearest centroid of the fitted
    clusters (fitted points keep their own label)."""
    ids = np.unique(fit_labels[fit_labels >= 0])
    cent = np.stack([x[fit_idx][fit_labels == c].mean(axis=0) for c in ids])
    d = ((x[:, None, :] - cent[None]) ** 2).sum(-1) if x.shape[0] * len(ids) < 5e6 else \
        np.concatenate([((x[s:s + 4096, None, :] - cent[None]) ** 2).sum(-1) for s in range(0, len(x), 4096)])
    out = ids[np.argmin(d, axis=1)].astype(np.int32)
    out[fit_idx] = fit_labels
    return out


def _nearest_point_extend(x, fit_idx, fit_labels):
    """Labels for all points: the label (noise included) of the nearest fitted point."""
    from scipy.spatial import cKDTree

    _, j = cKDTree(x[fit_idx]).query(x, k=1)
    out = fit_labels[j].astype(np.int32)
    out[fit_idx] = fit_labels
    return out


def other_algorithms(x: np.ndarray, k: int, seed: int = 0, max_fit: int = MAX_FIT,
                     names: Iterable[str] = ("spectral", "agglomerative", "birch", "gmm", "hdbscan", "optics")
                     ) -> tuple[dict[str, np.ndarray], dict]:
    """Labels of other clustering algorithms on the same latents.

    Spectral, agglomerative (Ward), HDBSCAN and OPTICS are O(N^2) in time or memory: above
    ``max_fit`` points they are fitted on a seeded random subsample of ``max_fit`` points and
    extended to all points (spectral, agglomerative: nearest centroid of the fitted clusters;
    HDBSCAN, OPTICS: label of the nearest fitted point, noise included). BIRCH (n_clusters=k)
    and the Gaussian mixture (k components, diagonal covariance) are fitted on all points.
    Returns (labels per name, info per name: sizes, n_fit, extension rule).
    """
    from sklearn.cluster import HDBSCAN, OPTICS, AgglomerativeClustering, Birch, SpectralClustering
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=max_fit, replace=False)) if n > max_fit else np.arange(n)
    xs = x[fit_idx]
    labels: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    min_cluster = max(5, len(fit_idx) // 100)
    for name in names:
        ext = "none (fitted on all points)"
        if name == "spectral":
            nn = min(10, len(fit_idx) - 1)
            with warnings.catch_warnings():  # "graph is not fully connected" on well-separated data
                warnings.simplefilter("ignore", UserWarning)
                fit = SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=nn,
                                         random_state=seed, assign_labels="kmeans").fit_predict(xs)
            lab, ext = _nearest_centroid_extend(x, fit_idx, fit), "nearest centroid"
        elif name == "agglomerative":
            fit = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(xs)
            lab, ext = _nearest_centroid_extend(x, fit_idx, fit), "nearest centroid"
        elif name == "birch":
            with warnings.catch_warnings():  # "fewer subclusters than k": reported in the sizes
                warnings.simplefilter("ignore")
                lab = Birch(n_clusters=k).fit_predict(x)
        elif name == "gmm":
            lab = GaussianMixture(n_components=k, covariance_type="diag", random_state=seed).fit(x).predict(x)
        elif name == "hdbscan":
            fit = HDBSCAN(min_cluster_size=min_cluster, copy=True).fit_predict(xs)
            lab, ext = _nearest_point_extend(x, fit_idx, fit), "label of the nearest fitted point"
        elif name == "optics":
            fit = OPTICS(min_samples=min_cluster).fit_predict(xs)
            lab, ext = _nearest_point_extend(x, fit_idx, fit), "label of the nearest fitted point"
        else:
            raise ValueError(f"unknown algorithm {name!r}")
        lab = np.asarray(lab, dtype=np.int32)
        n_fit = len(fit_idx) if name in ("spectral", "agglomerative", "hdbscan", "optics") else n
        labels[name] = lab
        info[name] = {"n_fit": int(n_fit), "extension": ext if n_fit < n else "none (fitted on all points)"}
    return labels, info


def cluster_sizes(labels: np.ndarray) -> dict:
    """{'n_clusters', 'noise', 'sizes' (descending)} of one labelling."""
    labels = np.asarray(labels)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    return {"n_clusters": int(ids.size), "noise": int((labels < 0).sum()),
            "sizes": sorted((int(c) for c in counts), reverse=True)}


def stability(x: np.ndarray, reference: np.ndarray, k: int, seed: int = 0, n_seeds: int = 10,
              n_boot: int = 20, n_init: int = 10) -> dict[str, np.ndarray]:
    """Adjusted Rand index of k-means against ``reference`` labels.

    ``ari_seeds``: k-means with random_state seed+1 .. seed+n_seeds (same n_init) on all points.
    ``ari_bootstrap``: k-means fitted on a bootstrap resample (seeded), then assigned to all points
    (nearest centroid), compared with the reference on all points.
    """
    from sklearn.metrics import adjusted_rand_score

    x = np.asarray(x, dtype=np.float32)
    seeds = [adjusted_rand_score(reference, kmeans_labels(x, k, seed + 1 + i, n_init)) for i in range(n_seeds)]
    rng = np.random.default_rng(seed + 1000)
    boots = []
    for b in range(n_boot):
        idx = rng.integers(0, x.shape[0], x.shape[0])
        km = kmeans_fit(x[idx], k, seed + b, n_init)
        boots.append(adjusted_rand_score(reference, km.predict(x)))
    return {"ari_seeds": np.asarray(seeds), "ari_bootstrap": np.asarray(boots)}


# --------------------------------------------------------------------------- UMAP
_CACHE_ENABLED = False


def enable_numba_cache() -> int:
    """Turn on numba's on-disk cache for umap-learn's jitted functions.

    pynndescent already compiles with ``cache=True``; umap-learn's own layout functions do not,
    which costs ~7 s of JIT per process. ``Dispatcher.enable_caching()`` before their first call
    stores the machine code next to the package (``__pycache__``) or under ``NUMBA_CACHE_DIR``,
    so later processes load it instead (measured: first UMAP of 900 points 7.3 s cold, 1.0 s warm).
    Returns the number of functions switched.
    """
    global _CACHE_ENABLED
    if _CACHE_ENABLED:
        return 0
    from numba.core.registry import CPUDispatcher

    n = 0
    for modname in ("umap.umap_", "umap.layouts", "umap.utils", "umap.distances", "umap.spectral", "umap.sparse"):
        try:
            mod = importlib.import_module(modname)
        except Exception:  # pragma: no cover - optional modules
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, CPUDispatcher) and not obj._cache.__class__.__name__ == "FunctionCache":
                try:
                    obj.enable_caching()
                    n += 1
                except Exception:  # pragma: no cover - e.g. uncachable closures
                    pass
    _CACHE_ENABLED = True
    return n


def umap_embed(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """Seeded 2-d UMAP (n_jobs=1, deterministic for a given seed), float32 (N, 2)."""
    enable_numba_cache()
    import umap

    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < 4:
        return np.zeros((n, 2), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist,
                        random_state=seed, n_jobs=1).fit_transform(x)
    return np.asarray(emb, dtype=np.float32)


# --------------------------------------------------------------------------- Figure-3 tables
def time_index(time: np.ndarray, decimals: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Distinct acquisition times (rounded to ``decimals``) and each map's row among them."""
    t = np.round(np.asarray(time, dtype=np.float64), decimals)
    times, idx = np.unique(t, return_inverse=True)
    return times, idx.astype(np.int32)


def counts_per_time(tidx: np.ndarray, labels: np.ndarray, n_times: int, k: int) -> np.ndarray:
    """(T, k) int32: maps of each cluster at each time (noise -1 not counted)."""
    out = np.zeros((n_times, k), np.int32)
    ok = labels >= 0
    np.add.at(out, (tidx[ok], labels[ok]), 1)
    return out


def sector_time_matrix(sector: np.ndarray, tidx: np.ndarray, labels: np.ndarray, n_times: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(sectors present (S,), (S, T) int32 label of each (sector, time); -1 = no map). Where
    several maps share a (sector, time) (several q bins) the most frequent label wins (ties ->
    smallest label)."""
    sectors = np.unique(np.asarray(sector)).astype(np.int32)
    srow = np.searchsorted(sectors, sector)
    mat = np.full((sectors.size, n_times), -1, np.int32)
    kmax = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 1
    votes = np.zeros((sectors.size, n_times, kmax), np.int32)
    ok = labels >= 0
    np.add.at(votes, (srow[ok], tidx[ok], labels[ok]), 1)
    has = votes.sum(-1) > 0
    mat[has] = np.argmax(votes, axis=-1)[has]
    return sectors, mat


def stress_minima(time: np.ndarray, stress: np.ndarray, *, t_range: tuple[float, float] | None = None,
                  sigma_s: float = 30.0, prominence: float | None = None) -> tuple[np.ndarray, float, str]:
    """Times of the local minima of the smoothed shear stress.

    The log is resampled onto a uniform grid (median sampling interval) within ``t_range``
    (default: all), smoothed with a Gaussian of standard deviation ``sigma_s`` seconds
    (``scipy.ndimage.gaussian_filter1d``, mode 'nearest'), and the minima are the peaks of the
    negated curve (``scipy.signal.find_peaks``) with at least ``prominence`` Pa of prominence
    (default: the larger of 5 % of the 5-95 percentile span of the smoothed curve in the window,
    counted from where it first reaches its median, and
    3 x the robust noise of the log around it). Returns (times, prominence used,
    description of the rule).
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    t = np.asarray(time, dtype=np.float64)
    s = np.asarray(stress, dtype=np.float64)
    order = np.argsort(t)
    t, s = t[order], s[order]
    if t_range is not None:
        keep = (t >= t_range[0]) & (t <= t_range[1])
        t, s = t[keep], s[keep]
    rule = f"gaussian smoothing sigma {sigma_s:g} s on a uniform grid, find_peaks on -stress"
    if t.size < 3:
        return np.empty(0), float(prominence or 0.0), rule
    dt = float(np.median(np.diff(t)))
    dt = dt if dt > 0 else (t[-1] - t[0]) / max(t.size - 1, 1)
    grid = np.arange(t[0], t[-1] + dt / 2, dt) if dt > 0 else t
    smooth = gaussian_filter1d(np.interp(grid, t, s), sigma=max(sigma_s / dt, 1e-6), mode="nearest")
    if prominence is None:
        # robust default: 5 % of the 5-95 percentile span of the smoothed curve (the stress
        # spike while shear still runs must not set the scale), at least 3 x the noise left
        # after smoothing (1.4826 x median absolute residual of the log around the curve)
        resid = s - np.interp(t, grid, smooth)
        noise = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        # the span is taken after the curve first reaches its median: the fast relaxation right
        # after cessation (kPa) would otherwise hide dips of a few Pa
        settled = smooth[int(np.argmax(smooth <= np.median(smooth))):]
        p5, p95 = np.percentile(settled, [5, 95])
        prominence = max(0.05 * float(p95 - p5), 3.0 * noise)
    peaks, _ = find_peaks(-smooth, prominence=max(prominence, 1e-12))
    return grid[peaks].astype(np.float64), float(prominence), rule + f", prominence {prominence:g} Pa"


# --------------------------------------------------------------------------- flow share
def flow_share_grid(xy: np.ndarray, classes: np.ndarray, grid: int = 64, radius: float | None = None,
                    margin: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Share of flow-sector points minus share of vorticity-sector points near each grid node.

    The grid spans the bounding box of ``xy`` plus ``margin`` of its extent on every side;
    "near" = within ``radius`` (default: 5 % of the larger extent). ``share[iy, ix]`` =
    (n_flow - n_vorticity) / n_all of the points within the radius of node (x[ix], y[iy]),
    in [-1, 1]; NaN where no point is near. Returns (x (G,), y (G,), share (G, G), radius).
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=np.float64)
    classes = np.asarray(classes).astype(str)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    ext = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - margin * ext, hi + margin * ext
    if radius is None:
        radius = 0.05 * float(ext.max())
    gx = np.linspace(lo[0], hi[0], grid)
    gy = np.linspace(lo[1], hi[1], grid)
    nodes = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)  # row-major: y rows

    def count(mask):
        if not mask.any():
            return np.zeros(len(nodes))
        return cKDTree(xy[mask]).query_ball_point(nodes, r=radius, return_length=True).astype(float)

    n_all = count(np.ones(len(xy), bool))
    n_flow = count(classes == "flow")
    n_vort = count(classes == "vorticity")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_all > 0, (n_flow - n_vort) / n_all, np.nan)
    return gx.astype(np.float32), gy.astype(np.float32), share.reshape(grid, grid).astype(np.float32), float(radius)


# --------------------------------------------------------------------------- dynamics score
def dynamics_regression(latents: np.ndarray, target: np.ndarray, seed: int = 0, folds: int = 5
                        ) -> tuple[np.ndarray, float]:
    """Cross-validated ridge regression latents -> target (standardised latents, alpha chosen by
    RidgeCV inside each fold). Returns (out-of-fold predictions, Pearson r with the target)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(latents, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    folds = max(2, min(folds, len(y)))
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(model, x, y, cv=KFold(folds, shuffle=True, random_state=seed))
    r = float(np.corrcoef(pred, y)[0, 1]) if np.std(pred) > 0 and np.std(y) > 0 else float("nan")
    return pred.astype(np.float32), r


def ridge_fill(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """Predictions for ``x_new`` of the ridge regression (standardised inputs, RidgeCV alpha
    1e-3..1e3) fitted on (x_fit, y_fit): fills the dynamics score of maps whose fit failed."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    model.fit(np.asarray(x_fit, np.float64), np.asarray(y_fit, np.float64))
    return model.predict(np.asarray(x_new, np.float64)).astype(np.float32)


def to_json(obj) -> str:
    """JSON text of nested dicts/lists with numpy scalars and NaN (as null)."""
    def conv(o):
        if isinstance(o, dict):
            return {str(k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if isinstance(o, np.ndarray):
            return conv(o.tolist())
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (float, np.floating)):
            return None if not np.isfinite(o) else float(o)
        return o
    return json.dumps(conv(obj))
