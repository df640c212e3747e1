"""Stacks of C2 maps: the one validation function, and one way to read maps from a file or an array.

:func:`check_maps` is to a stack of C2 maps what scikit-learn's ``check_array`` is to a matrix:
every place that takes maps from outside (the dataset writer and reader, the encoder, the
similarity search, the readers of stacks, beamline files and uploaded targets, precompute)
calls it, so the same bad input gets the same one-line :class:`~ainerd_core.errors.InputError`
naming the file everywhere.

:class:`MapSource` serves maps of a :class:`~ainerd_core.dataset.Dataset` (streamed from the
file) or of an in-memory array, sequentially as flat rows (similarity, PCA) or by index as
images (training), optionally keeping a subset in memory.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .errors import InputError

MAP_SIZE = 256
# values of a min-max normalised map may exceed [0, 1] by float32 rounding of the normalisation
NORMALISED_TOLERANCE = 1e-6


def check_maps(maps, source=None, *, what: str = "C2 maps", size: int | None = MAP_SIZE,
               normalised: bool = True, finite: bool = True, single: bool = False,
               upper_triangle: bool = False, min_side: int = 2, dtype=np.float32, values: bool = True):
    """Validate a stack of C2 maps and return it as an array (in the spirit of ``check_array``).

    Parameters
    ----------
    maps : array-like, (k, n, n) or one map (n, n); an (k, 1, n, n) channel axis is dropped
    source : path-like or str, optional
        What the error names (the file, ``--option``, ``upload``); None names nothing.
    what : str
        How the error calls the maps (``"C2 maps"``, ``"map 3"``, ``"dataset c2: maps"``).
    size : int or None
        Required side in pixels (the autoencoder's 256), or None for any square size.
    normalised : bool
        Values must lie in [0, 1] (min-max normalised maps, as stored in a dataset).
    finite : bool
        Refuse NaN and infinite values (with ``upper_triangle``, only in the stored triangle).
    single : bool
        Expect exactly one 2-d map and return it (n, n).
    upper_triangle : bool
        Only the upper triangle (diagonal included) holds data; the rest is ignored.
    min_side : int
        Smallest side accepted.
    dtype : numpy dtype or None
        Returned dtype (None keeps the input's).
    values : bool
        False checks only the shape and dtype, without reading the values (``maps`` may then be
        anything with ``shape`` and ``dtype``, e.g. an h5py dataset) and returns ``maps`` itself.

    Returns
    -------
    numpy.ndarray, (k, n, n) (or (n, n) with ``single``), of ``dtype``

    Raises
    ------
    InputError
        One line naming ``source``: wrong rank, not square, wrong size, not numeric, NaN or
        infinite values, values outside [0, 1] of normalised maps.
    """
    arr = maps if not values and hasattr(maps, "shape") and hasattr(maps, "dtype") else np.asarray(maps)
    shape = tuple(arr.shape)
    if single and len(shape) != 2:
        raise InputError(source, f"{what} must be two-dimensional, got shape {shape}")
    side = shape[-2:] if len(shape) in (2, 3) or (len(shape) == 4 and shape[1] == 1) else None
    if side is None:
        raise InputError(source, f"{what} must have shape (N, n, n), got {shape}")
    n1, n2 = side
    is_are = "is" if single else "are"
    if n1 != n2:
        raise InputError(source, f"{what} {is_are} not square: {n1} x {n2} (C2 maps must be square)")
    if size is not None and n1 != size:
        raise InputError(source, f"{what} must be {size} x {size}, got {n1} x {n2}")
    if n1 < min_side:
        raise InputError(source, f"{what} {is_are} too small: {n1} x {n2}")
    if arr.dtype.kind not in "fiu":
        raise InputError(source, f"{what} {is_are} not numeric (dtype {arr.dtype})")
    if not values:
        return maps
    stack = arr.reshape((-1, n1, n2))
    if dtype is not None:
        stack = stack.astype(dtype, copy=False)
    if finite and stack.dtype.kind == "f":
        ok = np.isfinite(stack)
        if not ok.all():
            if upper_triangle:
                ok |= np.tri(n1, k=-1, dtype=bool)
            bad = int(ok.size - np.count_nonzero(ok))
            if bad:
                raise InputError(source, f"{what} contain{'s' if single else ''} {bad} NaN or infinite values")
    if normalised and stack.size:
        lo, hi = ((float(stack.min()), float(stack.max())) if finite else
                  (float(np.nanmin(stack)), float(np.nanmax(stack))))
        if lo < -NORMALISED_TOLERANCE or hi > 1 + NORMALISED_TOLERANCE:
            raise InputError(source, f"{what} must be normalised to [0, 1], found values {lo:.4g} .. {hi:.4g} "
                                     "(min-max normalise them: ainerd_core.dataset.normalise_map)")
    return stack[0] if single else stack


class MapSource:
    """Maps of a Dataset (streamed from the file) or of an in-memory array.

    Parameters
    ----------
    maps : Dataset or array-like (N, n, n) (one map (n, n) is a stack of one)
    keep : array of int, optional
        Indices to hold in memory for :meth:`get` (training reads the same maps every epoch);
        kept only when they fit in ``keep_limit_bytes``.

    Attributes
    ----------
    n : int
        Number of maps.
    side : int
        Pixels per side.
    p : int
        Pixels per map (``side ** 2``).
    """

    def __init__(self, maps, keep=None, keep_limit_bytes: int = 0):
        from .dataset import Dataset

        if isinstance(maps, Dataset):
            if not maps.has_maps:
                raise InputError(maps.path, "this dataset holds latents only, no C2 maps")
            self.ds, self.arr = maps, None
            self.n, self.side = maps.n_maps, maps.map_size
        else:
            self.ds = None
            self.arr = check_maps(maps, size=None, normalised=False, finite=False)
            self.n, self.side = self.arr.shape[0], self.arr.shape[1]
        self.p = self.side * self.side
        self._kept: dict[int, int] | None = None
        if keep is not None:
            idx = np.unique(np.asarray(keep, dtype=np.int64))
            if self.ds is not None and idx.size * self.p * 4 <= keep_limit_bytes:
                self._kept_arr = self.ds.read_maps(idx)
                self._kept = {int(i): j for j, i in enumerate(idx)}

    def get(self, indices) -> np.ndarray:
        """Maps at ``indices``, in that order, (k, side, side) float32."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.arr is not None:
            return self.arr[indices]
        if self._kept is not None:
            return self._kept_arr[[self._kept[int(i)] for i in indices]]
        return self.ds.read_maps(indices)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Maps start..stop-1 as flat rows (stop-start, P) float32."""
        if self.arr is not None:
            return self.arr[start:stop].reshape(stop - start, -1)
        return self.ds.read_maps(np.arange(start, stop)).reshape(stop - start, -1)

    def batches(self, batch_size: int = 256, min_size: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(start, (b, P) float32) in order; the last batch is merged into the previous one if it
        would be smaller than ``min_size`` (IncrementalPCA needs batches >= n_components)."""
        bounds = list(range(0, self.n, batch_size)) + [self.n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_size:
            del bounds[-2]
        for a, b in zip(bounds[:-1], bounds[1:]):
            yield a, self.read(a, b)
