"""The on-disk dataset format: the one module that opens AI-NERD dataset files.

A dataset is one HDF5 file (schema documented in docs/dataset-format.md):

``/`` attributes
    ``schema_version`` (int, :data:`SCHEMA_VERSION`), ``source_kind`` (``simulation``,
    ``aps-8idi``, ``stack``, ``ainerd-published``), ``title``, ``created_utc``,
    ``flow_axis_deg`` (azimuth of the flow direction, degrees), ``sector_width_deg``,
    ``n_sectors``, ``map_size`` (pixels per side, 256), ``n_maps``, ``has_maps``, ``provenance``
    (free text), and optionally ``c2_time_step_s`` (seconds per C2 pixel after resampling).
``/c2`` float32 (N, 256, 256), chunked one map per chunk, each map min-max normalised to [0, 1].
    Absent in a latents-only dataset.
``/meta/<field>`` (N,) per-map metadata: ``time`` (s since shear cessation), ``sector``
    (1-based, 0 = unknown), ``phi`` (degrees), ``q`` (1/Angstrom, NaN = unknown), ``source``
    (str: file and bin the map came from); readers may add more fields.
``/rheology/<field>`` (M,) ``time`` (s, same clock as ``/meta/time``), ``shear_stress`` (Pa),
    ``shear_rate`` (1/s), ``viscosity`` (Pa s); optional.
``/truth/<field>`` (N,) ground truth of simulated maps; optional.
``/latents`` (N, D) float32 latents that came with the data (the published E031 set); optional.
``/results/...`` everything ``precompute`` derives; see :func:`write_results`.

Every write is atomic: the file is built under a temporary name in the same folder and
renamed over the target only when complete, so a crash or a bad input never leaves a
half-written dataset (and readers holding the old file keep reading the old inode).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np

from .atomic import atomic_write, commit, temporary_path
from .errors import InputError
from .mapstack import MAP_SIZE, check_maps

SCHEMA_VERSION = 1
META_REQUIRED = ("time", "sector", "phi", "q", "source")
RHEOLOGY_FIELDS = ("time", "shear_stress", "shear_rate", "viscosity")
SOURCE_KINDS = ("simulation", "aps-8idi", "stack", "ainerd-published")

_STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------- helpers
_NAN_ALLOWED = {"q", "phi"}  # unknown q or phi is stored as NaN


def _as_1d(path, group: str, name: str, values, n: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(path, f"{group}/{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InputError(path, f"{group}/{name} has {arr.shape[0]} entries but there are {n} maps")
    if arr.dtype.kind == "f":
        bad = np.isinf(arr) if name in _NAN_ALLOWED else ~np.isfinite(arr)
        if bad.any():
            raise InputError(path, f"{group}/{name} contains NaN or infinite values")
    return arr


def _write_array(group: h5py.Group, name: str, arr: np.ndarray) -> None:
    if arr.dtype.kind in "OUS":
        group.create_dataset(name, data=np.asarray(arr, dtype=object).astype(str).astype(object), dtype=_STR)
    else:
        group.create_dataset(name, data=arr)


def normalise_map(c2: np.ndarray) -> np.ndarray:
    """Min-max normalise one map (or each map of a stack) to [0, 1], float32.

    A constant map becomes all zeros.
    """
    c2 = np.asarray(c2, dtype=np.float32)
    axes = (-2, -1)
    lo = c2.min(axis=axes, keepdims=True)
    span = c2.max(axis=axes, keepdims=True) - lo
    return np.where(span > 0, (c2 - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


# --------------------------------------------------------------------------- writing
class DatasetWriter:
    """Build a dataset file atomically, streaming maps in batches.

    Use as a context manager; the file appears at ``path`` only if the block finishes
    without an exception and every map and all required metadata were written::

        with DatasetWriter("demo.h5", n_maps=900, source_kind="simulation",
                           flow_axis_deg=90.0, sector_width_deg=20.0, n_sectors=18) as w:
            for start, batch in batches:
                w.write_maps(start, batch)          # float32 (b, 256, 256) in [0, 1]
            w.set_meta(time=t, sector=s, phi=phi, q=q, source=src)
            w.set_rheology(time=..., shear_stress=..., shear_rate=..., viscosity=...)
            w.set_truth(relaxation_rate=..., fringe_frequency=..., burst=...)

    Parameters
    ----------
    path : path-like
        Target file; replaced atomically if it exists.
    n_maps : int
        Number of maps N (rows of every per-map array).
    has_maps : bool
        False for a latents-only dataset (no ``/c2``).
    map_size : int
        Pixels per side of the stored maps.
    **attrs
        Experiment attributes; ``source_kind``, ``flow_axis_deg``, ``sector_width_deg`` and
        ``n_sectors`` are expected, anything else (``title``, ``provenance``,
        ``c2_time_step_s``) is stored as is.
    """

    def __init__(self, path, n_maps: int, *, has_maps: bool = True, map_size: int = MAP_SIZE, **attrs):
        self.path = Path(path)
        if n_maps <= 0:
            raise InputError(self.path, "a dataset needs at least one map")
        self.n_maps = int(n_maps)
        self.has_maps = bool(has_maps)
        self.map_size = int(map_size)
        self.attrs = dict(attrs)
        self._tmp: Path | None = None
        self._h5: h5py.File | None = None
        self._written: np.ndarray | None = None
        self._has_meta = False

    # context manager ---------------------------------------------------------
    def __enter__(self) -> "DatasetWriter":
        if not self.path.parent.exists():
            raise InputError(self.path, "the output folder does not exist")
        self._tmp = temporary_path(self.path)
        self._h5 = h5py.File(self._tmp, "w")
        f = self._h5
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["n_maps"] = self.n_maps
        f.attrs["map_size"] = self.map_size
        f.attrs["has_maps"] = self.has_maps
        f.attrs["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        defaults = {"source_kind": "stack", "title": self.path.stem, "flow_axis_deg": 90.0,
                    "sector_width_deg": 20.0, "n_sectors": 18, "provenance": ""}
        for key, value in {**defaults, **self.attrs}.items():
            if value is not None:
                f.attrs[key] = value
        if self.has_maps:
            f.create_dataset("c2", shape=(self.n_maps, self.map_size, self.map_size), dtype=np.float32,
                             chunks=(1, self.map_size, self.map_size))
            self._written = np.zeros(self.n_maps, dtype=bool)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._check_complete()
            self._h5.close()
        except BaseException:
            self._discard()
            raise
        if exc_type is not None:
            self._discard()
            return False
        commit(self._tmp, self.path)
        return False

    def _discard(self) -> None:
        try:
            if self._h5 is not None and self._h5.id.valid:
                self._h5.close()
        finally:
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()

    def _check_complete(self) -> None:
        if self.has_maps and not self._written.all():
            missing = int((~self._written).sum())
            raise InputError(self.path, f"{missing} of {self.n_maps} maps were never written")
        if not self._has_meta:
            raise InputError(self.path, "per-map metadata (/meta) was never written")

    # content -------------------------------------------------------------------
    def write_maps(self, start: int, maps) -> None:
        """Write maps ``start .. start+len(maps)-1``; float (b, size, size) in [0, 1]."""
        if not self.has_maps:
            raise InputError(self.path, "this dataset was created without maps")
        maps = check_maps(maps, self.path, size=self.map_size)
        stop = start + maps.shape[0]
        if start < 0 or stop > self.n_maps:
            raise InputError(self.path, f"maps {start}..{stop - 1} are outside 0..{self.n_maps - 1}")
        self._h5["c2"][start:stop] = maps
        self._written[start:stop] = True

    def set_meta(self, *, time, sector=None, phi=None, q=None, source=None, **extra) -> None:
        """Per-map metadata, each (N,). ``time`` in s since shear cessation, ``sector`` 1-based
        (0 = unknown), ``phi`` in degrees (derived from the sector if omitted), ``q`` in
        1/Angstrom (NaN if unknown), ``source`` free text (file and bin)."""
        n = self.n_maps
        fields = {"time": np.asarray(time, dtype=np.float64)}
        n_sectors = int(self.attrs.get("n_sectors", 18))
        if sector is None:
            sector = np.zeros(n, dtype=np.int32)
        fields["sector"] = np.asarray(sector).astype(np.int32)
        if phi is None:
            from .geometry import sector_center_deg

            phi = np.where(fields["sector"] > 0, sector_center_deg(fields["sector"], n_sectors), np.nan)
        fields["phi"] = np.asarray(phi, dtype=np.float64)
        fields["q"] = np.full(n, np.nan) if q is None else np.asarray(q, dtype=np.float64)
        fields["source"] = np.asarray([""] * n if source is None else source, dtype=object)
        fields.update({k: np.asarray(v) for k, v in extra.items()})
        checked = {}
        for name, values in fields.items():
            checked[name] = _as_1d(self.path, "meta", name, values, n)
        if "meta" in self._h5:
            del self._h5["meta"]
        g = self._h5.create_group("meta")
        for name, arr in checked.items():
            _write_array(g, name, arr)
        self._has_meta = True

    def set_rheology(self, *, time, shear_stress, shear_rate=None, viscosity=None, **extra) -> None:
        """Rheometer log, each (M,): ``time`` in s on the XPCS clock, ``shear_stress`` in Pa,
        ``shear_rate`` in 1/s, ``viscosity`` in Pa s."""
        t = np.asarray(time, dtype=np.float64)
        if t.ndim != 1 or t.size == 0:
            raise InputError(self.path, "the rheology log is empty")
        cols = {"time": t, "shear_stress": shear_stress,
                "shear_rate": np.full(t.size, np.nan) if shear_rate is None else shear_rate,
                "viscosity": np.full(t.size, np.nan) if viscosity is None else viscosity, **extra}
        g = self._h5.require_group("rheology")
        for name, values in cols.items():
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != t.shape:
                raise InputError(self.path, f"rheology/{name} has {arr.size} rows but time has {t.size}")
            if name in ("time", "shear_stress") and not np.all(np.isfinite(arr)):
                raise InputError(self.path, f"rheology/{name} contains NaN or infinite values")
            if name in g:
                del g[name]
            g.create_dataset(name, data=arr)

    def set_truth(self, **fields) -> None:
        """Ground-truth parameters of simulated maps, each (N,)."""
        g = self._h5.require_group("truth")
        for name, values in fields.items():
            arr = _as_1d(self.path, "truth", name, values, self.n_maps)
            if name in g:
                del g[name]
            _write_array(g, name, arr)

    def set_latents(self, latents) -> None:
        """Latent vectors that came with the data, float (N, D)."""
        lat = np.asarray(latents, dtype=np.float32)
        if lat.ndim != 2 or lat.shape[0] != self.n_maps:
            raise InputError(self.path, f"latents must have shape ({self.n_maps}, D), got {lat.shape}")
        if not np.all(np.isfinite(lat)):
            raise InputError(self.path, "latents contain NaN or infinite values")
        self._h5.create_dataset("latents", data=lat)


def write_dataset(path, *, meta: Mapping, maps=None, rheology: Mapping | None = None,
                  truth: Mapping | None = None, latents=None, **attrs) -> Path:
    """Write a whole dataset held in memory (small data, tests). See :class:`DatasetWriter`.

    ``maps`` may be None for a latents-only dataset; then ``latents`` is required.
    """
    n = len(meta["time"]) if maps is None else len(maps)
    if maps is None and latents is None:
        raise InputError(path, "a dataset needs C2 maps or latents")
    with DatasetWriter(path, n, has_maps=maps is not None, **attrs) as w:
        if maps is not None:
            w.write_maps(0, maps)
        w.set_meta(**meta)
        if rheology is not None:
            w.set_rheology(**rheology)
        if truth:
            w.set_truth(**truth)
        if latents is not None:
            w.set_latents(latents)
    return Path(path)


def write_results(path, results: Mapping[str, object], attrs: Mapping[str, object] | None = None) -> None:
    """Replace ``/results`` of a dataset atomically.

    Parameters
    ----------
    path : path-like
        An existing dataset.
    results : mapping
        Names (``'/'`` makes subgroups, e.g. ``'kmeans/inertia'``) to arrays, scalars or
        strings. Required by the dashboard: ``latent`` (N, D), ``labels`` (N,), ``umap`` (N, 2).
    attrs : mapping, optional
        Attributes of ``/results`` (e.g. ``k``, ``seed``, ``model``, timings as JSON text).

    The file is rebuilt under a temporary name (all groups but ``/results`` copied) and renamed
    over the original; the old results vanish only when the new ones are complete.
    """
    path = Path(path)
    ds = open_dataset(path)  # validates
    ds.close()
    with atomic_write(path) as tmp, h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            if name != "results":
                src.copy(src[name], dst, name)
        g = dst.create_group("results")
        for key, value in (attrs or {}).items():
            g.attrs[key] = value
        for name, value in results.items():
            arr = np.asarray(value)
            if arr.dtype.kind in "OU":
                g.create_dataset(name, data=arr.astype(str).astype(object), dtype=_STR)
            else:
                g.create_dataset(name, data=arr)


# --------------------------------------------------------------------------- reading
class Dataset:
    """Read-only view of a dataset file. Open with :func:`open_dataset`.

    Small arrays (metadata, rheology, truth, results) are read on demand and cached;
    maps are read one chunk at a time, so a 13,000-map file is never loaded whole.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "no such file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(self.path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        f = self._h5
        version = f.attrs.get("schema_version")
        if version is None:
            self.close()
            raise InputError(self.path, "not an AI-NERD dataset (no schema_version attribute)")
        if int(version) > SCHEMA_VERSION:
            self.close()
            raise InputError(self.path, f"schema_version {int(version)} is newer than this software ({SCHEMA_VERSION})")
        if "meta" not in f:
            self.close()
            raise InputError(self.path, "the dataset has no /meta group")
        self.n_maps = int(f.attrs.get("n_maps", -1))
        self.map_size = int(f.attrs.get("map_size", MAP_SIZE))
        self.has_maps = "c2" in f
        self._cache: dict[str, object] = {}
        try:
            self._check_structure()
        except InputError:
            self.close()
            raise

    def _check_structure(self) -> None:
        """What every reader relies on, from shapes and /meta/time only (cheap): n_maps agrees
        with /meta, /c2 and /latents; /meta/time exists and is finite; /c2 holds square maps of
        ``map_size`` (their values are checked as they are read)."""
        f = self._h5
        if self.n_maps < 1:
            raise InputError(self.path, "the n_maps attribute is missing or not positive")
        if "time" not in f["meta"]:
            raise InputError(self.path, "the dataset has no /meta/time (acquisition times)")
        for name in sorted(f["meta"], key=lambda name: name != "time"):  # time first
            dset = f["meta"][name]
            if isinstance(dset, h5py.Dataset) and dset.shape != (self.n_maps,):
                raise InputError(self.path, f"/meta/{name} has shape {dset.shape} but n_maps is {self.n_maps}")
        time = f["meta/time"][()]
        if time.dtype.kind not in "fiu" or not np.all(np.isfinite(time)):
            raise InputError(self.path, "/meta/time contains NaN, infinite or non-numeric values")
        if self.has_maps:
            c2 = check_maps(f["c2"], self.path, what="/c2 maps", size=self.map_size, values=False)
            if c2.ndim != 3 or c2.shape[0] != self.n_maps:
                raise InputError(self.path, f"/c2 has shape {c2.shape} but n_maps is {self.n_maps}")
        if "latents" in f and (f["latents"].ndim != 2 or f["latents"].shape[0] != self.n_maps):
            raise InputError(self.path, f"/latents has shape {f['latents'].shape} but n_maps is {self.n_maps}")

    def check_maps(self, **kwargs) -> None:
        """Check the shape of ``/c2`` with :func:`ainerd_core.mapstack.check_maps` (e.g.
        ``size=256`` where the autoencoder needs it); raises InputError naming the file."""
        check_maps(self._require_maps(), self.path, what="C2 maps", values=False, **kwargs)

    # lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_h5", None) is not None and self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_maps

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, n_maps={self.n_maps}, has_maps={self.has_maps})"

    # attributes and small arrays ---------------------------------------------------
    @property
    def attrs(self) -> dict:
        """Experiment attributes (flow_axis_deg, sector_width_deg, source_kind, title, ...)."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._h5.attrs.items()}

    def _group(self, name: str) -> dict[str, np.ndarray] | None:
        if name not in self._cache:
            g = self._h5.get(name)
            if g is None:
                self._cache[name] = None
            else:
                self._cache[name] = {k: _read(g[k]) for k in g if isinstance(g[k], h5py.Dataset)}
        return self._cache[name]

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """Per-map metadata, each (N,): time [s], sector, phi [deg], q [1/Angstrom], source."""
        return self._group("meta")

    @property
    def rheology(self) -> dict[str, np.ndarray] | None:
        """Rheology columns (time [s], shear_stress [Pa], shear_rate [1/s], viscosity) or None."""
        return self._group("rheology")

    @property
    def truth(self) -> dict[str, np.ndarray] | None:
        """Ground truth of simulated maps, or None."""
        return self._group("truth")

    @property
    def latents(self) -> np.ndarray | None:
        """Latents that came with the data (N, D) float32, or None."""
        return self._h5["latents"][()] if "latents" in self._h5 else None

    # maps ------------------------------------------------------------------------
    def _require_maps(self) -> h5py.Dataset:
        if not self.has_maps:
            raise InputError(self.path, "this dataset holds latents only, no C2 maps")
        return self._h5["c2"]

    def _checked(self, maps: np.ndarray, what: str) -> np.ndarray:
        # a file not written by this module may hold NaN or unnormalised values: refuse them here,
        # where every reader passes, with the file's name (min/max of a batch cost ~1 % of the read)
        return check_maps(maps, self.path, what=what, size=self.map_size)

    def read_map(self, index: int) -> np.ndarray:
        """One map (size, size) float32 in [0, 1]."""
        c2 = self._require_maps()
        index = int(index)
        if not 0 <= index < self.n_maps:
            raise IndexError(f"map index {index} outside 0..{self.n_maps - 1}")
        return self._checked(c2[index], f"C2 map {index}")[0]

    def read_maps(self, indices) -> np.ndarray:
        """Maps at the given indices, in the given order, (k, size, size) float32."""
        c2 = self._require_maps()
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, self.map_size, self.map_size), np.float32)
        order = np.argsort(idx)
        uniq, inverse = np.unique(idx[order], return_inverse=True)
        block = self._checked(c2[uniq], "C2 maps")  # h5py needs increasing indices
        out = np.empty((idx.size, self.map_size, self.map_size), np.float32)
        out[order] = block[inverse]
        return out

    def iter_maps(self, batch_size: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, maps)`` batches of at most ``batch_size`` maps, in order."""
        c2 = self._require_maps()
        for start in range(0, self.n_maps, batch_size):
            yield start, self._checked(c2[start:start + batch_size], f"C2 maps {start}..")

    # results -----------------------------------------------------------------------
    @property
    def has_results(self) -> bool:
        return "results" in self._h5

    def result_names(self) -> list[str]:
        """All result arrays as '/'-joined names relative to /results."""
        if "results" not in self._h5:
            return []
        names: list[str] = []
        self._h5["results"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return sorted(names)

    @property
    def result_attrs(self) -> dict:
        if "results" not in self._h5:
            return {}
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._h5["results"].attrs.items()}

    def read_result(self, name: str, default=None):
        """One result array (``'latent'``, ``'labels'``, ``'umap'``, ``'kmeans/inertia'``...)."""
        key = f"results/{name}"
        if key not in self._cache:
            if key not in self._h5:
                return default
            self._cache[key] = _read(self._h5[key])
        return self._cache[key]


def _read(dset: h5py.Dataset):
    if dset.dtype.kind == "O" or h5py.check_string_dtype(dset.dtype) is not None:
        data = dset.asstr()[()]
        return np.asarray(data, dtype=object) if isinstance(data, np.ndarray) else data
    return dset[()]


def open_dataset(path) -> Dataset:
    """Open a dataset file for reading (raises :class:`InputError` with a clear message)."""
    return Dataset(path)


def describe(path) -> str:
    """A few lines summarising a dataset (used by ``python -m ainerd_core info``)."""
    with open_dataset(path) as ds:
        a = ds.attrs
        lines = [f"{ds.path}: {a.get('title', '')}",
                 f"  schema_version {a.get('schema_version')}, source {a.get('source_kind')}, {ds.n_maps} maps"
                 f" ({'with' if ds.has_maps else 'without'} C2 maps)",
                 f"  flow axis {a.get('flow_axis_deg')} deg, {a.get('n_sectors')} sectors of {a.get('sector_width_deg')} deg"]
        t = ds.meta["time"]
        lines.append(f"  time {t.min():.1f} .. {t.max():.1f} s, {np.unique(t).size} time points")
        if ds.rheology is not None:
            lines.append(f"  rheology: {ds.rheology['time'].size} rows")
        if ds.truth is not None:
            lines.append(f"  ground truth: {', '.join(sorted(ds.truth))}")
        if ds.latents is not None:
            lines.append(f"  latents shipped with the data: {ds.latents.shape}")
        names = ds.result_names()
        lines.append(f"  results: {len(names)} arrays" if names else "  results: none (run precompute)")
    return "\n".join(lines)
