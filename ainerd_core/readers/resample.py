"""One-map operations shared by every reader: symmetrise, diagonal fix, resample, normalise.

Resampling to ``size`` x ``size`` (256 for the network):

- **larger maps** are reduced by exact *area averaging*: every output pixel is the mean of the
  input area it covers, input pixels that straddle an output boundary contributing with the
  fraction of their area inside. For sizes that are multiples of ``size`` this is the plain
  block mean; for other sizes (1000, 300, ...) it is the same integral with fractional edge
  weights (one pass of sums over whole rows plus two fractional edge rows, O(n^2) per map).
  The mean of the map is preserved exactly. Decimation (keeping every k-th pixel) is never used: it aliases the
  speckle noise and throws away counts.
- **smaller maps** are enlarged by *bilinear interpolation between pixel centres* (input pixel
  i is centred on i + 1/2 in units of input pixels; output positions outside the outermost
  centres take the edge value). No new detail is invented; a 128-pixel map becomes a smooth
  256-pixel one.
- maps that already have ``size`` pixels are left unchanged.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..mapstack import check_maps


def symmetrise_upper(half: np.ndarray) -> np.ndarray:
    """Full C2 from a map whose upper triangle (diagonal included) is stored.

    ``full = h + h.T`` with the diagonal halved, i.e. the upper triangle mirrored onto the
    lower one. Anything stored below the diagonal is ignored, so a file that happens to store
    the full symmetric map gives the same result instead of a doubled one.
    """
    h = np.asarray(half)
    upper = np.triu(h)
    full = np.add(upper, upper.T, dtype=np.float64)
    full[np.diag_indices_from(full)] = np.diagonal(h)
    return full


def fix_diagonal(c2: np.ndarray) -> np.ndarray:
    """Replace the (often spiky) diagonal by the mean of its two neighbours on the first
    off-diagonal: ``c2[i, i] = (c2[i-1, i] + c2[i, i+1]) / 2``; the two corner pixels have
    one neighbour and take its value. Works on a copy; the map must be symmetric."""
    c2 = np.array(c2, dtype=np.float64, copy=True)
    n = c2.shape[0]
    if n < 2:
        return c2
    band = c2[np.arange(n - 1), np.arange(1, n)]
    total = np.zeros(n)
    total[:-1] += band
    total[1:] += band
    count = np.full(n, 2.0)
    count[[0, -1]] = 1.0
    c2[np.diag_indices(n)] = total / count
    return c2


def _area_rows(a: np.ndarray, size: int) -> np.ndarray:
    """Area-average the rows (axis 0) of a 2-D array from n to ``size`` (n > size).

    Output row i covers input rows [e_i, e_{i+1}) with e_i = i n / size. Its integral is the
    sum of the whole rows floor(e_i) .. floor(e_{i+1}) - 1 (one ``reduceat`` pass), minus the
    part of row floor(e_i) before e_i, plus the part of row floor(e_{i+1}) before e_{i+1}.
    """
    n = a.shape[0]
    if n % size == 0:
        return a.reshape(size, n // size, *a.shape[1:]).mean(axis=1)
    edges = np.arange(size + 1) * (n / size)
    idx = np.floor(edges).astype(np.int64)
    frac = (edges - idx)[:, None]
    sums = np.add.reduceat(a, idx[:-1], axis=0, dtype=np.float64)
    last = np.minimum(idx, n - 1)  # the final edge is n itself, with fraction 0
    sums -= frac[:-1] * a[last[:-1]]
    sums += frac[1:] * a[last[1:]]
    return sums / (n / size)


def _interp_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation between pixel centres along ``axis`` from n to ``size`` (n < size)."""
    a = np.moveaxis(a, axis, 0)
    n = a.shape[0]
    if n == 1:
        out = np.repeat(a, size, axis=0)
        return np.moveaxis(out, 0, axis)
    pos = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    w = (pos - i0)[(slice(None),) + (None,) * (a.ndim - 1)]
    out = a[i0] * (1.0 - w) + a[i0 + 1] * w
    return np.moveaxis(out, 0, axis)


def resample(c2: np.ndarray, size: int = 256) -> np.ndarray:
    """Resample a square map to ``size`` x ``size`` (float64); see the module docstring."""
    c2 = np.asarray(c2, dtype=np.float64)
    n = c2.shape[0]
    if n == size:
        return c2.copy()
    if n > size:
        return np.ascontiguousarray(_area_rows(np.ascontiguousarray(_area_rows(c2, size).T), size).T)
    return _interp_axis(_interp_axis(c2, 0, size), 1, size)


def check_map(path, c2: np.ndarray, what: str = "C2 map", upper_triangle: bool = False) -> np.ndarray:
    """One raw map (any square size, any range): :func:`ainerd_core.mapstack.check_maps` with
    ``single=True``; with ``upper_triangle`` only the stored triangle must be finite."""
    return check_maps(c2, path, what=what, size=None, normalised=False, single=True,
                      upper_triangle=upper_triangle, dtype=None)


def prepare_map(c2: np.ndarray, *, size: int = 256, diagonal_fix: bool = False,
                upper_triangle: bool = False) -> tuple[np.ndarray, float, float]:
    """The whole per-map pipeline on a checked raw map.

    symmetrise (if only the upper triangle is stored) -> diagonal fix (optional, at full
    resolution) -> resample to ``size`` -> min-max normalise. Returns the normalised float32
    map and the raw minimum and maximum after resampling (kept as metadata, since
    normalisation discards the absolute contrast).
    """
    full = symmetrise_upper(c2) if upper_triangle else np.asarray(c2, dtype=np.float64)
    if diagonal_fix:
        full = fix_diagonal(full)
    small = resample(full, size)
    lo, hi = float(small.min()), float(small.max())
    span = hi - lo
    out = ((small - lo) / span if span > 0 else np.zeros_like(small)).astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out, lo, hi


def prepare_target(arr, where="target", size: int = 256, max_side: int = 8192) -> np.ndarray:
    """A user-supplied map (an uploaded .npy, a blind-evaluation target) as the network sees it.

    Singleton axes are dropped; the map must be a finite, real, square 2-d array with a side of
    8 to ``max_side`` pixels; it is resampled to ``size`` x ``size`` with :func:`resample` (area
    averaging) and min-max normalised. Raises :class:`InputError` naming ``where``.

    Returns
    -------
    numpy.ndarray, float32 (size, size) in [0, 1]
    """
    from ..dataset import normalise_map

    a = np.squeeze(np.asarray(arr))
    if np.iscomplexobj(a):
        raise InputError(where, f"the map must hold real numbers, got {a.dtype}")
    a = check_map(where, a, what="the map")
    if not 8 <= a.shape[0] <= max_side:
        raise InputError(where, f"the map's side {a.shape[0]} is outside 8..{max_side} pixels")
    return normalise_map(resample(a.astype(np.float64), size).astype(np.float32))
