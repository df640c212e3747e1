"""Exact Euclidean nearest neighbours of C2 maps in latent, raw-pixel and PCA-64 space.

Raw-pixel space is 65,536-d: 13,000 maps are 3.4 GB as float32, so maps are never all in memory.
All-pairs raw neighbours (:func:`raw_knn`) hold one block of ``block_rows`` maps (2048 maps =
512 MB) and stream the later maps past it in chunks of ``col_batch``; squared distances come from
``|a|^2 + |b|^2 - 2 a.b`` with one float32 BLAS matrix product per (block, chunk), and each pair
is computed once (the block x later-chunk products update both sides' top-K lists). For N maps
this is N^2 P flops (~11 TFLOP at N = 13,000) and about N / (2 block_rows) + 1 reads of the file.

Float32 distances carry ~1e-6 relative rounding of |a|^2 (|a|^2 <= 65,536 for maps in [0, 1]),
so neighbours whose squared distances differ by less than ~0.05 may swap places.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .mapstack import MapSource, check_maps
from .results import SPACES

# the smoothed-pixels baseline of the retrieval benchmark: Gaussian sigma in pixels. Speckle noise
# hurts raw-pixel distances most; on held-out settings of the randomised generator smoothing at
# 2 px lifted raw-pixel P@10 from 0.16-0.19 to 0.37-0.39 (docs/model.md), above the latent.
SMOOTH_SIGMA_PX = 2.0
_REPRESENTATION = {"latent": "latent", "pca": "pca", "raw": "maps", "smoothed": "maps"}  # what each space needs
PIXEL_SPACES = ("raw", "smoothed")   # spaces streamed from the stored maps


# --------------------------------------------------------------------------- top-K bookkeeping
class TopK:
    """Running K smallest squared distances per row."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.d = np.full((n, k), np.inf, np.float32)
        self.i = np.full((n, k), -1, np.int32)

    def update(self, rows: slice, d2: np.ndarray, cols: np.ndarray) -> None:
        """Merge candidate columns ``cols`` (c,) with squared distances ``d2`` (r, c) into ``rows``."""
        k = self.k
        all_d = np.concatenate([self.d[rows], d2.astype(np.float32, copy=False)], axis=1)
        all_i = np.concatenate([self.i[rows], np.broadcast_to(cols.astype(np.int32), d2.shape)], axis=1)
        if all_d.shape[1] > k:
            part = np.argpartition(all_d, k - 1, axis=1)[:, :k]
            all_d = np.take_along_axis(all_d, part, axis=1)
            all_i = np.take_along_axis(all_i, part, axis=1)
        self.d[rows], self.i[rows] = all_d, all_i

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(index (N, K) int32, distance (N, K) float32), nearest first (ties: lower index first)."""
        order = np.lexsort((self.i, self.d), axis=1)
        d = np.take_along_axis(self.d, order, axis=1)
        i = np.take_along_axis(self.i, order, axis=1)
        return i, np.sqrt(np.maximum(d, 0)).astype(np.float32)


def _sq_dist(a: np.ndarray, b: np.ndarray, na: np.ndarray, nb: np.ndarray, keep=None) -> np.ndarray:
    d2 = a @ b.T
    if keep is not None:  # the dot products a.b, e.g. into a Gram matrix for exact PCA
        keep(d2)
    d2 *= -2
    d2 += na[:, None]
    d2 += nb[None, :]
    np.maximum(d2, 0, out=d2)
    return d2


# --------------------------------------------------------------------------- in-memory spaces
def knn_array(x: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact K nearest neighbours (self excluded) of every row of a small-dimensional array
    (latents, PCA scores), in float64. Returns (index (N, K) int32, distance (N, K) float32)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    k = int(min(k, n - 1))
    if k < 1:
        return np.empty((n, 0), np.int32), np.empty((n, 0), np.float32)
    nx = (x * x).sum(1)
    idx = np.empty((n, k), np.int32)
    dist = np.empty((n, k), np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        d2 = _sq_dist(x[s:e], x, nx[s:e], nx)
        d2[np.arange(e - s), np.arange(s, e)] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < n else np.argsort(d2, axis=1)
        pd = np.take_along_axis(d2, part, axis=1)
        order = np.lexsort((part, pd), axis=1)
        idx[s:e] = np.take_along_axis(part, order, axis=1)
        dist[s:e] = np.sqrt(np.take_along_axis(pd, order, axis=1))
    return idx, dist


# --------------------------------------------------------------------------- raw pixels
def squared_norms(source: MapSource, batch_size: int = 256) -> np.ndarray:
    out = np.empty(source.n, np.float32)
    for s, b in source.batches(batch_size):
        out[s:s + len(b)] = np.einsum("ij,ij->i", b, b)
    return out


def raw_knn(maps, k: int, sqnorms: np.ndarray | None = None, block_rows: int = 2048, col_batch: int = 256,
            on_block=None, gram: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact K nearest neighbours (self excluded) of every map in raw-pixel space.

    ``on_block(start, block)`` is called once per row block (every map exactly once), e.g. to
    project the maps onto a PCA while they are in memory. ``gram`` (N, N), if given, receives
    every dot product x_i . x_j the distances are made of (both triangles): the Gram matrix that
    :class:`ExactPCA` needs, at no extra cost. See the module docstring for the cost.
    """
    src = maps if isinstance(maps, MapSource) else MapSource(maps)
    n = src.n
    k = int(min(k, n - 1))
    if k < 1:
        return np.empty((n, 0), np.int32), np.empty((n, 0), np.float32)
    col_batch = max(1, min(col_batch, block_rows))
    block_rows = max(col_batch, (block_rows // col_batch) * col_batch)
    if sqnorms is None:
        sqnorms = squared_norms(src, col_batch)
    sqnorms = np.asarray(sqnorms, np.float32)
    top = TopK(n, k)
    for i0 in range(0, n, block_rows):
        i1 = min(n, i0 + block_rows)
        a = np.ascontiguousarray(src.read(i0, i1))
        na = sqnorms[i0:i1]
        if on_block is not None:
            on_block(i0, a)
        # columns inside the block: update the block's rows only
        for j0 in range(i0, i1, col_batch):
            j1 = min(i1, j0 + col_batch)
            keep = None if gram is None else _gram_keeper(gram, i0, i1, j0, j1)
            d2 = _sq_dist(a, a[j0 - i0:j1 - i0], na, sqnorms[j0:j1], keep)
            r = np.arange(j0 - i0, j1 - i0)
            d2[r, r - (j0 - i0)] = np.inf  # self
            top.update(slice(i0, i1), d2, np.arange(j0, j1))
        # later columns: each pair once, both directions
        for j0 in range(i1, n, col_batch):
            j1 = min(n, j0 + col_batch)
            b = src.read(j0, j1)
            keep = None if gram is None else _gram_keeper(gram, i0, i1, j0, j1, both=True)
            d2 = _sq_dist(a, b, na, sqnorms[j0:j1], keep)
            top.update(slice(i0, i1), d2, np.arange(j0, j1))
            top.update(slice(j0, j1), np.ascontiguousarray(d2.T), np.arange(i0, i1))
    return top.result()


def _gram_keeper(gram: np.ndarray, i0: int, i1: int, j0: int, j1: int, both: bool = False):
    def keep(dot: np.ndarray) -> None:
        gram[i0:i1, j0:j1] = dot
        if both:
            gram[j0:j1, i0:i1] = dot.T
    return keep


def _orth(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of a tall array: CholeskyQR2 in float64 (two rounds of
    Q = A R^-1 with R from the Cholesky factor of A^T A), i.e. matrix products instead of a
    LAPACK QR (a 65,536 x 80 Householder QR took 1-5 s on the busy 2-core machine). Falls back to
    numpy's QR if the Gram matrix is numerically singular."""
    q = np.asarray(a, dtype=np.float64)
    try:
        for _ in range(2):
            r = np.linalg.cholesky(q.T @ q).T  # upper triangular, A = Q R
            q = q @ np.linalg.inv(r)
    except np.linalg.LinAlgError:
        q = np.linalg.qr(np.asarray(a, dtype=np.float64))[0]
    return q


class StreamingPCA:
    """Randomized PCA (Halko et al. 2011) of flat maps that never sit in memory together.

    Passes over the maps: (1) ``Y = Xc @ Omega`` plus the mean (:meth:`add_sketch`, can share the
    first read with other work); ``n_iter`` power iterations of two passes each
    (:meth:`power_iterations`); (final) ``B = Q^T Xc`` (:meth:`add_projection`, can share the
    read of :func:`raw_knn`); then :meth:`finish` takes the SVD of the small ``B``. Xc = X - mean;
    Omega is a seeded Gaussian (P, C + oversample) matrix. Every product is a float32 BLAS call.
    sklearn's IncrementalPCA was measured at 18-28 s per 256-map batch at P = 65,536 on this
    machine (a full SVD per batch), too slow for 13,000 maps.
    """

    def __init__(self, n: int, p: int, n_components: int = 64, oversample: int = 16, n_iter: int = 1, seed: int = 0):
        self.n, self.p = n, p
        self.c = int(min(n_components, n, p))
        self.l = int(min(self.c + oversample, n, p))
        self.n_iter = n_iter
        rng = np.random.default_rng(seed)
        self.omega = rng.standard_normal((p, self.l)).astype(np.float32)
        self.y = np.empty((n, self.l), np.float32)
        self.sum = np.zeros(p, np.float64)
        self.sqnorm_total = 0.0
        self.q = None
        self.b = None

    # pass 1
    def add_sketch(self, start: int, flat: np.ndarray) -> None:
        self.y[start:start + len(flat)] = flat @ self.omega
        self.sum += flat.sum(axis=0, dtype=np.float64)
        self.sqnorm_total += float(np.einsum("ij,ij->", flat, flat, dtype=np.float64))

    def _finish_sketch(self) -> None:
        self.mean = (self.sum / self.n).astype(np.float32)
        y = self.y - (self.mean @ self.omega)[None, :]
        self.q = _orth(y).astype(np.float32)
        del self.y, self.omega

    def power_iterations(self, src: "MapSource", batch_size: int = 256) -> None:
        if self.q is None:
            self._finish_sketch()
        for _ in range(self.n_iter):
            z = np.zeros((self.p, self.l), np.float64)
            for s, b in src.batches(batch_size):
                z += b.T @ self.q[s:s + len(b)]
            z -= np.outer(self.mean, self.q.sum(axis=0))  # Xc^T Q
            z = _orth(z).astype(np.float32)
            y = np.empty((self.n, self.l), np.float32)
            for s, b in src.batches(batch_size):
                y[s:s + len(b)] = b @ z
            y -= (self.mean @ z)[None, :]
            self.q = _orth(y).astype(np.float32)

    # final pass
    def add_projection(self, start: int, flat: np.ndarray) -> None:
        if self.q is None:
            self._finish_sketch()
        if self.b is None:
            self.b = np.zeros((self.l, self.p), np.float64)
        self.b += self.q[start:start + len(flat)].T @ flat

    def finish(self) -> None:
        """Components (C, P), mean (P,), scores (N, C) float32 and explained variance ratio."""
        b = self.b - np.outer(self.q.sum(axis=0), self.mean)  # Q^T Xc, (l, P)
        # SVD of the wide B through the small l x l matrix B B^T = U S^2 U^T (a matrix product and
        # a tiny eigh instead of a LAPACK SVD of l x 65,536)
        w, u = np.linalg.eigh(b @ b.T)
        order = np.argsort(w)[::-1]
        w, u = np.maximum(w[order], 0), u[:, order]
        sv = np.sqrt(w)
        vt = (u.T @ b) / np.where(sv > 0, sv, 1)[:, None]
        self.components_ = vt[:self.c].astype(np.float32)
        self.mean_ = self.mean
        self.scores_ = (self.q @ (u[:, :self.c] * sv[:self.c])).astype(np.float32)
        total = self.sqnorm_total - self.n * float(self.mean.astype(np.float64) @ self.mean.astype(np.float64))
        self.explained_variance_ratio_ = (sv[:self.c] ** 2 / total) if total > 0 else np.zeros(self.c)
        del self.b


def fit_pca_stream(maps, n_components: int = 64, batch_size: int = 256, on_batch=None, n_iter: int = 1,
                   seed: int = 0):
    """:class:`StreamingPCA` of the flattened maps in one go (sketch pass, power iterations,
    projection pass). ``on_batch(start, batch)`` sees every batch of the first pass.
    Returns (fitted StreamingPCA with components_, mean_, scores_, explained_variance_ratio_;
    squared norms (N,) float32)."""
    src = maps if isinstance(maps, MapSource) else MapSource(maps)
    pca = StreamingPCA(src.n, src.p, n_components, n_iter=n_iter, seed=seed)
    norms = np.empty(src.n, np.float32)
    for s, b in src.batches(batch_size):
        norms[s:s + len(b)] = np.einsum("ij,ij->i", b, b)
        if on_batch is not None:
            on_batch(s, b)
        pca.add_sketch(s, b)
    pca.power_iterations(src, batch_size)
    for s, b in src.batches(batch_size):
        pca.add_projection(s, b)
    pca.finish()
    return pca, norms


# Exact PCA. The randomized sketch above with 1 power iteration shared only ~70 % of its top-10
# neighbours with exact PCA on a 600-map benchmark (issue 12): a weaker baseline than it claims.
# The exact PCA costs nothing extra next to the all-pairs raw neighbours, which already form
# every dot product x_i . x_j: keep them (the Gram matrix G, N x N), centre it, and take its top
# eigenvectors; PCA scores are U_k sqrt(lambda_k), and one more pass gives the components
# Xc^T U_k / sqrt(lambda_k) (needed to project uploaded maps). Memory: 8 N^2 bytes (13,000 maps:
# 1.35 GB), so above EXACT_PCA_MAX_N maps the randomized PCA with more power iterations is used.
EXACT_PCA_MAX_N = 16384
DENSE_EIGH_MAX_N = 4096   # above this, Lanczos (scipy eigsh, converged to machine precision) on G
PCA_RULE_EXACT = ("exact PCA ({c} components): eigenvectors of the centred Gram matrix of all {n} flattened maps "
                  "(dot products from the raw-neighbour pass), components by one more pass; explained variance "
                  "in attr pca_explained_variance")
PCA_RULE_RANDOMIZED = ("randomized PCA ({c} components, oversampling 16, {it} power iterations, seeded), streamed: "
                       "{n} maps are above the exact-PCA limit of {limit}; explained variance in attr "
                       "pca_explained_variance")


class ExactPCA:
    """Exact PCA of N flat maps (P pixels) through their N x N Gram matrix.

    Use: :meth:`add_sketch` on every batch of a first pass (mean, total variance; the name is kept
    so precompute's first pass works for either PCA); fill :attr:`gram` (N, N) float64 with the
    dot products x_i . x_j, either by ``raw_knn(..., gram=pca.gram)`` or :meth:`compute_gram`;
    then :meth:`finish` (``src``) decomposes the centred Gram matrix and reads the maps once
    more for the components. Results as :class:`StreamingPCA`: ``components_`` (C, P),
    ``mean_`` (P,), ``scores_`` (N, C) float32, ``explained_variance_ratio_`` (C,). Signs: each
    component's largest-|.| score is positive (deterministic).
    """

    exact = True

    def __init__(self, n: int, p: int, n_components: int = 64):
        self.n, self.p = n, p
        self.c = int(min(n_components, max(n - 1, 1), p))
        self.gram = np.zeros((n, n), np.float64)
        self.sum = np.zeros(p, np.float64)
        self.sqnorm_total = 0.0

    def add_sketch(self, start: int, flat: np.ndarray) -> None:
        self.sum += flat.sum(axis=0, dtype=np.float64)
        self.sqnorm_total += float(np.einsum("ij,ij->", flat, flat, dtype=np.float64))

    def power_iterations(self, src: "MapSource", batch_size: int = 256) -> None:
        """Nothing to iterate (kept so callers can treat both PCAs alike)."""

    def add_projection(self, start: int, flat: np.ndarray) -> None:
        """Nothing to do per block (the Gram matrix comes from ``raw_knn(..., gram=)``)."""

    def compute_gram(self, src: "MapSource", block_rows: int = 2048) -> None:
        """Fill :attr:`gram` by streaming the maps (when no raw-neighbour pass provides it):
        float64 products of mean-centred float32 blocks, ~N / block_rows + 1 reads."""
        mean = (self.sum / self.n).astype(np.float32)
        for i0 in range(0, self.n, block_rows):
            i1 = min(self.n, i0 + block_rows)
            a = src.read(i0, i1) - mean
            for j0 in range(i0, self.n, block_rows):
                j1 = min(self.n, j0 + block_rows)
                b = a if j0 == i0 else src.read(j0, j1) - mean
                g = a.astype(np.float64) @ b.astype(np.float64).T
                self.gram[i0:i1, j0:j1] = g
                self.gram[j0:j1, i0:i1] = g.T
        self._centred = True

    def finish(self, src: "MapSource" = None, batch_size: int = 256) -> None:
        """Decompose the centred Gram matrix; one pass over ``src`` for the components."""
        n, c = self.n, self.c
        mean = self.sum / n
        g = self.gram
        if not getattr(self, "_centred", False):
            # Gc = H G H, H = I - 11^T/N, in place (float64)
            r = g.mean(axis=1)
            g -= r[:, None]
            g -= r[None, :]
            g += r.mean()
        g += g.T  # exact symmetry (float32 products of the two triangles can differ in the last bit)
        g *= 0.5
        if n <= DENSE_EIGH_MAX_N:
            w, u = np.linalg.eigh(g)
            w, u = w[::-1][:c], u[:, ::-1][:, :c]
        else:
            from scipy.sparse.linalg import eigsh

            v0 = np.random.default_rng(0).standard_normal(n)
            w, u = eigsh(g, k=c, which="LA", v0=v0, tol=0)
            order = np.argsort(w)[::-1]
            w, u = w[order], u[:, order]
        total = float(np.trace(g))
        del self.gram, g
        w = np.maximum(w, 0)
        sv = np.sqrt(w)
        flip = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
        u = u * np.where(flip == 0, 1, flip)
        self.scores_ = (u * sv).astype(np.float32)
        self.mean_ = mean.astype(np.float32)
        self.explained_variance_ratio_ = w / total if total > 0 else np.zeros(len(w))
        self.components_ = None
        if src is not None:
            z = np.zeros((self.p, len(w)), np.float64)
            for s, b in src.batches(batch_size):
                z += b.T.astype(np.float64) @ u[s:s + len(b)]
            z -= np.outer(mean, u.sum(axis=0))           # Xc^T U
            z /= np.where(sv > 0, sv, 1)[None, :]
            self.components_ = np.ascontiguousarray(z.T).astype(np.float32)


def fit_pca(maps, n_components: int = 64, batch_size: int = 256, seed: int = 0, n_iter: int = 4):
    """The honest PCA baseline: :class:`ExactPCA` up to :data:`EXACT_PCA_MAX_N` maps (streamed
    Gram matrix), else :func:`fit_pca_stream` with ``n_iter`` power iterations. Returns (fitted
    PCA, squared norms (N,) float32, rule text)."""
    src = maps if isinstance(maps, MapSource) else MapSource(maps)
    if src.n > EXACT_PCA_MAX_N:
        pca, norms = fit_pca_stream(src, n_components, batch_size, n_iter=n_iter, seed=seed)
        return pca, norms, PCA_RULE_RANDOMIZED.format(c=pca.c, it=n_iter, n=src.n, limit=EXACT_PCA_MAX_N)
    pca = ExactPCA(src.n, src.p, n_components)
    norms = np.empty(src.n, np.float32)
    for s, b in src.batches(batch_size):
        norms[s:s + len(b)] = np.einsum("ij,ij->i", b, b)
        pca.add_sketch(s, b)
    pca.compute_gram(src)
    pca.finish(src, batch_size)
    return pca, norms, PCA_RULE_EXACT.format(c=pca.c, n=src.n)


def neighbour_overlap(idx_a: np.ndarray, idx_b: np.ndarray, k: int = 10) -> float:
    """Mean share of common maps among the first k neighbours of each row (1 = same top-k sets)."""
    a, b = np.asarray(idx_a)[:, :k], np.asarray(idx_b)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def subspace_angles_deg(comp_a: np.ndarray, comp_b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between the row spaces of two (C, P) component sets."""
    from scipy.linalg import subspace_angles

    return np.degrees(subspace_angles(np.asarray(comp_a, np.float64).T, np.asarray(comp_b, np.float64).T))[::-1]


def pca_transform(components: np.ndarray, mean: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Project flat maps (b, P) onto stored PCA components (C, P) -> (b, C) float32."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    return ((x - mean) @ np.asarray(components, np.float32).T).astype(np.float32)


# --------------------------------------------------------------------------- any target
def _source_parts(source):
    """Normalise a source into (dataset or None, dict of arrays)."""
    from .dataset import Dataset, open_dataset

    if isinstance(source, (str, Path)):
        source = open_dataset(source)
    if isinstance(source, Dataset):
        ds = source
        parts = {"latent": ds.read_result("latent"), "pca": ds.read_result("similarity/pca_scores"),
                 "pca_components": ds.read_result("similarity/pca_components"),
                 "pca_mean": ds.read_result("similarity/pca_mean")}
        if parts["latent"] is None and ds.latents is not None:
            parts["latent"] = ds.latents
        parts["maps"] = ds if ds.has_maps else None
        return ds, parts
    parts = dict(source)
    return None, parts


def _target_vector(target, space, parts, ds, model):
    """(flat target vector in the space, index of the target in the dataset or None)."""
    if isinstance(target, (int, np.integer)):
        i = int(target)
        if space == "latent":
            return np.asarray(parts["latent"][i], np.float64), i
        if space == "pca":
            return np.asarray(parts["pca"][i], np.float64), i
        return MapSource(parts["maps"]).read(i, i + 1)[0], i
    arr = check_maps(target, None, what="a target map", size=None, normalised=False, single=True)
    if space == "latent":
        if model is None:
            raise InputError(None, "an uploaded map needs the model to be encoded into latent space")
        from .model import encode

        return encode(model, arr[None])[0].astype(np.float64), None
    if space == "pca":
        return pca_transform(parts["pca_components"], parts["pca_mean"], arr[None])[0].astype(np.float64), None
    return arr.reshape(-1), None


def nearest_neighbours(source, target, space: str = "latent", k: int = 10, *, model=None,
                       batch_size: int = 256, on_batch=None, smooth_sigma_px: float = SMOOTH_SIGMA_PX
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean K nearest neighbours of one target among a dataset's maps.

    Parameters
    ----------
    source : Dataset, path, or dict
        A precomputed dataset (uses ``/results/latent``, ``similarity/pca_*`` and streams ``/c2``
        for raw), or a dict with ``latent`` (N, D), ``maps`` (N, 256, 256) array or Dataset,
        ``pca`` (N, C) scores, ``pca_components`` (C, P), ``pca_mean`` (P,).
    target : int or (256, 256) array
        A map of the dataset (excluded from its own neighbours) or an uploaded normalised map
        (encoded with ``model`` for latent space, projected for PCA, compared pixel-wise for raw).
    space : 'latent', 'raw', 'pca' or 'smoothed' (:func:`smoothed_rows` of the pixels)
    k : number of neighbours
    batch_size : maps read at a time in pixel spaces (one batch of float32 maps in memory)
    on_batch : callable ``(maps_done, n_maps)``, optional
        Called after each batch in pixel spaces (the progress of a search that streams the file).
    smooth_sigma_px : Gaussian sigma of the smoothed space, pixels

    Returns
    -------
    (index (k,) int64, distance (k,) float32), nearest first.
    """
    if space not in SPACES:
        raise InputError(None, f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    ds, parts = _source_parts(source)
    need = _REPRESENTATION[space]
    if parts.get(need) is None:
        where = ds.path if ds is not None else None
        raise InputError(where, f"no {space} representation available (run precompute"
                                f"{'; it needs C2 maps' if need == 'maps' else ''})")
    if space in PIXEL_SPACES:
        return nearest_pixel_neighbours(parts, target, k, (space,), batch_size=batch_size, on_batch=on_batch,
                                        smooth_sigma_px=smooth_sigma_px, _ds=ds)[space]
    vec, self_idx = _target_vector(target, space, parts, ds, model)
    x = np.asarray(parts[need], np.float64)
    return _nearest(((x - vec) ** 2).sum(1), self_idx, k)


def nearest_pixel_neighbours(source, target, k: int = 10, spaces=PIXEL_SPACES, *, batch_size: int = 256,
                             on_batch=None, smooth_sigma_px: float = SMOOTH_SIGMA_PX, _ds=None) -> dict:
    """:func:`nearest_neighbours` in several pixel spaces ('raw', 'smoothed') with every stored
    map read once: ``{space: (index (k,) int64, distance (k,) float32)}``."""
    ds, parts = (_ds, source) if _ds is not None else _source_parts(source)
    if parts.get("maps") is None:
        raise InputError(ds.path if ds is not None else None,
                         f"no {' / '.join(spaces)} representation available (run precompute; it needs C2 maps)")
    vec, self_idx = _target_vector(target, "raw", parts, ds, None)
    src = MapSource(parts["maps"])
    prep = _pixel_space_maps(spaces, src.side, smooth_sigma_px)
    tv = {sp: prep[sp](vec.astype(np.float32)[None])[0] for sp in spaces}
    d2 = {sp: np.empty(src.n, np.float64) for sp in spaces}
    for start, b in src.batches(batch_size):
        for sp in spaces:
            diff = prep[sp](b) - tv[sp]
            d2[sp][start:start + len(b)] = np.einsum("ij,ij->i", diff, diff)
        if on_batch is not None:
            on_batch(start + len(b), src.n)
    return {sp: _nearest(d2[sp], self_idx, k) for sp in spaces}


def pixel_neighbours_across(datasets, at: tuple[int, int], k: int = 10, space: str = "smoothed", *,
                            batch_size: int = 256, on_batch=None, smooth_sigma_px: float = SMOOTH_SIGMA_PX
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact K nearest neighbours, in one pixel space, of map ``at = (d, i)`` (map i of
    ``datasets[d]``) among the maps of all ``datasets`` (itself excluded); each file is streamed
    once. Every dataset must hold maps of the same size.

    Returns
    -------
    (dataset position (k,) int64, map index (k,) int64, distance (k,) float32), nearest first.
    """
    if space not in PIXEL_SPACES:
        raise InputError(None, f"unknown pixel space {space!r}; choose one of {', '.join(PIXEL_SPACES)}")
    sources = [MapSource(ds) for ds in datasets]
    sides = {src.side for src in sources}
    if len(sides) > 1:
        raise InputError(None, f"the datasets' maps differ in size ({' / '.join(map(str, sorted(sides)))} px)")
    d, i = int(at[0]), int(at[1])
    target = sources[d].read(i, i + 1)[0].reshape(sources[d].side, sources[d].side)
    total, done = sum(src.n for src in sources), 0
    found = []
    for j, ds in enumerate(datasets):
        def progress(n_done, _n, base=done):
            if on_batch is not None:
                on_batch(base + n_done, total)

        idx, dist = nearest_pixel_neighbours({"maps": ds}, i if j == d else target, k, (space,),
                                             batch_size=batch_size, on_batch=progress,
                                             smooth_sigma_px=smooth_sigma_px)[space]
        found += [(float(dv), j, int(m)) for m, dv in zip(idx, dist)]
        done += sources[j].n
    found.sort()
    found = found[:k]
    return (np.array([j for _, j, _ in found], np.int64), np.array([m for _, _, m in found], np.int64),
            np.array([dv for dv, _, _ in found], np.float32))


def _pixel_space_maps(spaces, side: int, smooth_sigma_px: float) -> dict:
    """``{space: rows (b, side*side) -> vectors of that space}`` for pixel spaces."""
    every = {"raw": lambda rows: rows, "smoothed": lambda rows: smoothed_rows(rows, side, smooth_sigma_px)}
    return {space: every[space] for space in spaces}


def _nearest(d2: np.ndarray, self_idx: int | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest squared distances (self excluded), nearest first, ties by index."""
    if self_idx is not None:
        d2[self_idx] = np.inf
    k = int(min(k, len(d2) - (self_idx is not None)))
    order = np.lexsort((np.arange(len(d2)), d2))[:k]
    return order.astype(np.int64), np.sqrt(d2[order]).astype(np.float32)


def smoothed_stride(sigma_px: float) -> int:
    """Sampling step (pixels) of the smoothed space: the filter removes the detail a finer grid
    would hold (measured: P@10 within 0.001 of the full grid at sigma 2 px, docs/model.md 1b)."""
    return max(1, int(sigma_px))


def smoothed_rows(rows: np.ndarray, side: int, sigma_px: float) -> np.ndarray:
    """The *smoothed pixels* baseline of flat maps ``rows`` (b, side*side): a Gaussian filter of
    ``sigma_px`` pixels (SciPy's default ``reflect`` edges), every :func:`smoothed_stride`-th
    pixel kept, and the project's per-map min-max normalisation to [0, 1]. Returns (b, m*m),
    m = ceil(side / stride) (128 x 128 at the default 2 px)."""
    from scipy.ndimage import gaussian_filter

    from .dataset import normalise_map

    step = smoothed_stride(sigma_px)
    maps = gaussian_filter(np.asarray(rows, np.float32).reshape(-1, side, side), (0, sigma_px, sigma_px))
    return normalise_map(maps[:, ::step, ::step]).reshape(len(maps), -1)


def smoothed_knn(maps, k: int, sigma_px: float = SMOOTH_SIGMA_PX, block_rows: int = 2048
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact K nearest neighbours of every map in smoothed-pixel space: each map is read and
    smoothed once (:func:`smoothed_rows`) into memory (N x 64 KB at 2 px), then :func:`raw_knn`."""
    src = maps if isinstance(maps, MapSource) else MapSource(maps)
    side = len(range(0, src.side, smoothed_stride(sigma_px)))
    smooth = np.empty((src.n, side, side), np.float32)
    for start, rows in src.batches(256):
        smooth[start:start + len(rows)] = smoothed_rows(rows, src.side, sigma_px).reshape(-1, side, side)
    return raw_knn(smooth, k, block_rows=block_rows)


def neighbours_of_targets(source, targets, space: str, k: int, batch_size: int = 256,
                          smooth_sigma_px: float = SMOOTH_SIGMA_PX) -> tuple[np.ndarray, np.ndarray]:
    """K nearest neighbours (self excluded) of several dataset maps at once; for the raw and
    smoothed spaces (:func:`smoothed_rows`) the maps are streamed once for all targets.
    Returns (index (T, K) int64, distance (T, K))."""
    ds, parts = _source_parts(source)
    targets = np.asarray(targets, dtype=np.int64)
    if space in PIXEL_SPACES:
        return pixel_neighbours_of_targets(parts, targets, k, (space,), batch_size=batch_size,
                                           smooth_sigma_px=smooth_sigma_px, _ds=ds)[space]
    need = _REPRESENTATION[space]
    if parts.get(need) is None:
        raise InputError(ds.path if ds is not None else None, f"no {space} representation available")
    x = np.asarray(parts[need], np.float64)
    nx = (x * x).sum(1)
    return _nearest_rows(_sq_dist(x[targets], x, nx[targets], nx), targets, k)


def pixel_neighbours_of_targets(source, targets, k: int, spaces=PIXEL_SPACES, *, batch_size: int = 256,
                                smooth_sigma_px: float = SMOOTH_SIGMA_PX, _ds=None) -> dict:
    """:func:`neighbours_of_targets` in several pixel spaces with every stored map read once:
    ``{space: (index (T, K) int64, distance (T, K))}``."""
    ds, parts = (_ds, source) if _ds is not None else _source_parts(source)
    if parts.get("maps") is None:
        raise InputError(ds.path if ds is not None else None,
                         f"no {' / '.join(spaces)} representation available")
    targets = np.asarray(targets, dtype=np.int64)
    src = MapSource(parts["maps"])
    prep = _pixel_space_maps(spaces, src.side, smooth_sigma_px)
    stacked = np.stack([src.read(int(t), int(t) + 1)[0] for t in targets])
    tv = {sp: prep[sp](stacked) for sp in spaces}
    nt = {sp: np.einsum("ij,ij->i", tv[sp], tv[sp]) for sp in spaces}
    d2 = {sp: np.empty((len(targets), src.n), np.float32) for sp in spaces}
    for s, b in src.batches(batch_size):
        for sp in spaces:
            bp = prep[sp](b)
            d2[sp][:, s:s + len(b)] = _sq_dist(tv[sp], bp, nt[sp], np.einsum("ij,ij->i", bp, bp))
    return {sp: _nearest_rows(d2[sp], targets, k) for sp in spaces}


def _nearest_rows(d2: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_nearest` for every row of ``d2`` (T, N), row r's target ``targets[r]`` excluded."""
    got = [_nearest(row, int(t), k) for row, t in zip(d2, targets)]
    return np.stack([i for i, _ in got]), np.stack([d for _, d in got])


def distance_distributions(distance: np.ndarray, ranks=(1, 10, 100)) -> dict[int, np.ndarray]:
    """The r-th neighbour distance of every map, for each rank r <= K (1-based): the data of the
    '1st / 10th / 100th neighbour distance' histograms."""
    distance = np.asarray(distance)
    return {r: distance[:, r - 1] for r in ranks if r <= distance.shape[1]}
