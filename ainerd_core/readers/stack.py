"""A plain stack of C2 maps plus a CSV of per-map metadata.

Maps: a ``.npy`` file (N, n, n) (memory-mapped, so it is never loaded whole) or an HDF5 file
(``.h5``/``.hdf5``/``.hdf``/``.nxs``) with one 3-D dataset (N, n, n) - the only 3-D dataset in
the file, or the one named ``c2``/``maps``/``data``, or the one given with ``--dataset``.

Metadata CSV: one header row and one row per map, in stack order. Columns (case-insensitive):
``time`` or ``time_s`` (required, s since shear cessation); ``sector`` (1-based) and/or ``phi``
(degrees) - at least one; optional ``q`` (1/Angstrom) and ``source`` (text).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from ..mapstack import check_maps

H5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".nxs"}
_PREFERRED = ("c2", "maps", "data")


class MapStack:
    """Random access to one map at a time of an .npy or HDF5 stack."""

    def __init__(self, path, dataset: str | None = None):
        self.path = Path(path)
        self._h5 = None
        if not self.path.exists():
            raise InputError(self.path, "no such file")
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            try:
                self._arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(self.path, f"not a readable .npy file (truncated or corrupt?): {exc}") from None
            self.name = ""
        elif suffix in H5_SUFFIXES:
            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as exc:
                raise InputError(self.path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None
            self._arr = self._pick(dataset)
        else:
            raise InputError(self.path, f"unknown stack type {suffix!r}: use .npy or .h5")
        self._what = f"dataset {self.name}: " if self.name else ""
        shape = self._arr.shape
        try:  # shape and dtype only: the values are checked map by map as they are read
            if len(shape) != 3:
                raise InputError(self.path, f"{self._what}a stack must have shape (N, n, n), got {shape}")
            check_maps(self._arr, self.path, what=f"{self._what}maps", size=None, normalised=False, values=False)
            if shape[0] == 0:
                raise InputError(self.path, f"{self._what}the stack holds no maps")
        except InputError:
            self.close()
            raise
        self.n_maps, self.size = int(shape[0]), int(shape[1])

    def _pick(self, dataset):
        f = self._h5
        if dataset:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                self.close()
                raise InputError(self.path, f"missing dataset {dataset}")
            self.name = dataset
            return f[dataset]
        found = []
        f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 3 else None)
        if not found:
            self.close()
            raise InputError(self.path, "no 3-D dataset (N, n, n) in the file")
        for pref in _PREFERRED:
            if pref in found:
                found = [pref]
        if len(found) > 1:
            self.close()
            raise InputError(self.path, f"several 3-D datasets ({', '.join(found)}): choose one with --dataset")
        self.name = found[0]
        return f[found[0]]

    def __len__(self) -> int:
        return self.n_maps

    def read(self, i: int) -> np.ndarray:
        try:
            return np.asarray(self._arr[i], dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise InputError(self.path, f"cannot read map {i} (truncated or corrupt?): {exc}") from None

    def close(self) -> None:
        if self._h5 is not None and self._h5.id.valid:
            self._h5.close()
        self._arr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _column(path, header, rows, names, kind, required=False):
    idx = next((header.index(n) for n in names if n in header), None)
    if idx is None:
        if required:
            raise InputError(path, f"no {names[0]!r} column (columns: {', '.join(header)})")
        return None
    vals = []
    for lineno, row in rows:
        cell = row[idx].strip() if idx < len(row) else ""
        if kind is str:
            vals.append(cell)
            continue
        try:
            v = float(cell) if cell else np.nan
        except ValueError:
            raise InputError(path, f"line {lineno}: {header[idx]} {cell!r} is not a number") from None
        vals.append(v)
    if kind is str:
        return np.asarray(vals, dtype=object)
    return np.asarray(vals, dtype=np.float64)


def read_meta_csv(path, n_maps: int) -> dict[str, np.ndarray]:
    """Per-map metadata of a stack; keys time, and some of sector, phi, q, source."""
    from . import read_csv_rows

    path = Path(path)
    rows = read_csv_rows(path)
    if not rows:
        raise InputError(path, "the metadata file is empty")
    header = [c.strip().lower() for c in rows[0][1]]
    body = rows[1:]
    if len(body) != n_maps:
        raise InputError(path, f"has {len(body)} metadata rows but the stack holds {n_maps} maps")
    meta = {"time": _column(path, header, body, ("time", "time_s"), float, required=True)}
    if not np.all(np.isfinite(meta["time"])):
        raise InputError(path, "time is missing, NaN or infinite in some rows")
    sector = _column(path, header, body, ("sector",), float)
    phi = _column(path, header, body, ("phi", "phi_deg"), float)
    if sector is None and phi is None:
        raise InputError(path, f"needs a 'sector' or a 'phi' column (columns: {', '.join(header)})")
    if sector is not None:
        if not np.all(np.isfinite(sector)) or np.any(sector != np.round(sector)) or np.any(sector < 0):
            raise InputError(path, "sector must be a whole number >= 1 (0 = unknown) in every row")
        meta["sector"] = sector.astype(np.int32)
    if phi is not None:
        if np.any(np.isinf(phi)):
            raise InputError(path, "phi contains infinite values")
        meta["phi"] = phi
    q = _column(path, header, body, ("q", "q_inv_angstrom"), float)
    if q is not None:
        if np.any(np.isinf(q)):
            raise InputError(path, "q contains infinite values")
        meta["q"] = q
    src = _column(path, header, body, ("source",), str)
    if src is not None:
        meta["source"] = src
    return meta
