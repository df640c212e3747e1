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

Appending (schema_version 2, live mode)
---------------------------------------
A dataset can grow while readers read it. New maps go into *segments*: complete HDF5 files
``<dataset>.segments/seg_000001.h5, seg_000002.h5, ...`` each written under a hidden
temporary name, fsynced and renamed (:func:`append_segment`). A segment is either there whole
or not at all, so a reader always sees a consistent dataset (the base file plus every
committed segment whose number is above the base's ``segments_merged`` attribute), and a writer
killed with ``kill -9`` mid-append loses at most the segment it was writing. A segment holds

``/c2``, ``/meta/<field>`` the new maps and their metadata (rows appended after the base's);
``/results_rows/<name>`` per-map results of the new maps (``latent``, ``labels``, ``umap``...),
    concatenated after the base's ``/results/<name>``;
``/results_state/<name>`` whole-dataset results (``tables/*``, ``flow_share/*``) that replace
    the base's, the latest segment winning; attributes of ``/results_state`` likewise;
``/rheology`` the whole rheometer log so far (latest segment wins);
``/live/ledger/<field>`` the source files this segment took (``file``, ``size``,
    ``mtime_ns``, ``n_maps``, ``status``): the watcher's processed-files ledger, committed with
    the rows so that a file never enters twice;
``/live/alerts/<field>`` novel maps and failed files (``utc``, ``kind``, ``file``, ``map``,
    ``message``).

:func:`write_results` (``precompute``) and :func:`compact` rebuild the base with every
committed segment merged (atomic rename; ``segments_merged`` records the last one) and then
delete the merged segments. schema_version 1 files (no segments, no ``/live``) are read as
they are; :func:`migrate` rewrites one as version 2.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import re
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np

from .atomic import atomic_write, commit, temporary_path
from .errors import InputError
from .mapstack import MAP_SIZE, check_maps

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
        # astype(str) decodes a bytes ('S') array; str() of each object would write "b'...'"
        group.create_dataset(name, data=np.asarray(arr).astype(str).astype(object), dtype=_STR)
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


def write_results(path, results: Mapping[str, object], attrs: Mapping[str, object] | None = None, *,
                  through_segment: int | None = None) -> None:
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
    through_segment : int, optional
        For a growing (live) dataset: the last segment the results cover (``Dataset.last_segment``
        when the caller opened it); later segments stay appended, with their own live rows. Default:
        every committed segment.

    The file is rebuilt under a temporary name (all groups but ``/results`` copied, committed
    segments merged in) and renamed over the original; the old results vanish only when the new
    ones are complete. Merged segment files are deleted afterwards.
    """
    _rebuild(Path(path), results, attrs, through_segment)


# --------------------------------------------------------------------------- appending (segments)
SEGMENTS_SUFFIX = ".segments"
_SEG_NAME = re.compile(r"^seg_(\d{6,})\.h5$")


def segment_dir(path) -> Path:
    """The folder of a dataset's appended segments: ``<dataset>.segments`` beside it."""
    path = Path(path)
    return path.with_name(path.name + SEGMENTS_SUFFIX)


def list_segments(path) -> list[tuple[int, Path]]:
    """Committed segments ``(number, path)``, in order (merged ones may still be listed until
    their deletion; readers skip numbers <= the base's ``segments_merged``)."""
    out = []
    try:
        with os.scandir(segment_dir(path)) as it:
            for e in it:
                m = _SEG_NAME.match(e.name)
                if m:
                    out.append((int(m.group(1)), Path(e.path)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(out)


def live_signature(path) -> str:
    """A cheap key that changes whenever a segment is committed ('' without segments); a catalog
    adds it to the base file's (mtime, size) so an appended dataset shows as a new version."""
    segs = list_segments(path)
    return f"{len(segs)}.{segs[-1][0]}" if segs else ""


@contextlib.contextmanager
def _rebuild_lock(path: Path):
    """Serialise rebuilds of the base file (write_results, compact) of a dataset with segments,
    so that a precompute and a compaction never rename over each other's work."""
    d = segment_dir(path)
    if not d.is_dir():
        yield
        return
    import fcntl

    fd = os.open(d / ".rebuild.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def acquire_writer_lock(path) -> int:
    """Take the dataset's single-appender lock (non-blocking) and return its file descriptor
    (closing it releases the lock; so does the process dying, even by ``kill -9``).

    Raises InputError if another process (a second watcher) holds it.
    """
    import fcntl

    d = segment_dir(path)
    d.mkdir(exist_ok=True)
    fd = os.open(d / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(path, "another process is appending to this dataset (a second watcher?)") from None
    return fd


def cleanup_segment_temporaries(path) -> list[Path]:
    """Delete half-written segment files left by a killed writer (hidden ``.seg_*.tmp``); call
    only while holding the writer lock. Returns what was removed."""
    removed = []
    d = segment_dir(path)
    if d.is_dir():
        for p in d.glob(".seg_*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def next_segment_number(path) -> int:
    """1 + the highest segment number committed or merged into the base."""
    merged = 0
    with h5py.File(path, "r") as f:
        merged = int(f.attrs.get("segments_merged", 0))
    segs = list_segments(path)
    return max([merged] + [i for i, _ in segs]) + 1


def _base_attrs(map_size: int, attrs: Mapping, title: str) -> dict:
    out = {"schema_version": SCHEMA_VERSION, "map_size": int(map_size), "has_maps": True,
           "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    defaults = {"source_kind": "stack", "title": title, "flow_axis_deg": 90.0,
                "sector_width_deg": 20.0, "n_sectors": 18, "provenance": ""}
    for key, value in {**defaults, **attrs}.items():
        if value is not None:
            out[key] = value
    return out


def create_live_dataset(path, *, map_size: int = MAP_SIZE, **attrs) -> Path:
    """Write an empty (0-map) schema-2 dataset that segments will be appended to (atomic).

    ``attrs`` as for :class:`DatasetWriter` (``source_kind``, ``flow_axis_deg``, ...).
    """
    path = Path(path)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in _base_attrs(map_size, attrs, path.stem).items():
            f.attrs[key] = value
        f.attrs["n_maps"] = 0
        f.attrs["segments_merged"] = 0
        f.create_dataset("c2", shape=(0, map_size, map_size), maxshape=(None, map_size, map_size),
                         dtype=np.float32, chunks=(1, map_size, map_size))
        g = f.create_group("meta")
        for name, dtype in (("time", np.float64), ("sector", np.int32), ("phi", np.float64), ("q", np.float64)):
            g.create_dataset(name, data=np.zeros(0, dtype))
        g.create_dataset("source", shape=(0,), dtype=_STR)
    return path


def _write_group(f: h5py.File, group: str, fields: Mapping | None) -> None:
    if not fields:
        return
    g = f.require_group(group)
    for name, value in fields.items():
        _write_array(g, name, np.asarray(value))


def append_segment(path, number: int, *, maps=None, meta: Mapping | None = None, rows: Mapping | None = None,
                   state: Mapping | None = None, state_attrs: Mapping | None = None,
                   rheology: Mapping | None = None, ledger: Mapping | None = None,
                   alerts: Mapping | None = None, attrs: Mapping | None = None) -> Path:
    """Commit one segment (atomically: temporary name, fsync, rename) and return its path.

    Parameters
    ----------
    path : path-like
        The dataset (schema_version 2; see :func:`create_live_dataset`, :func:`migrate`).
    number : int
        Segment number (:func:`next_segment_number`; the caller is the single appender).
    maps : float (n, size, size) in [0, 1], optional
        New maps; ``meta`` then holds each required field (n,).
    rows : mapping, optional
        Per-map results of the new maps, each (n, ...) (``latent``, ``labels``, ``umap``...).
    state, state_attrs : mapping, optional
        Whole-dataset results (and ``/results`` attributes) that replace earlier ones.
    rheology : mapping, optional
        The whole rheometer log so far (columns (M,)).
    ledger, alerts : mapping, optional
        Rows of the processed-files ledger and of the alerts list (equal-length columns).
    attrs : mapping, optional
        Attributes of the segment (``file``, ``committed_utc``...).
    """
    path = Path(path)
    n = 0
    if maps is not None:
        maps = check_maps(maps, path, size=int(np.asarray(maps).shape[-1]) if np.ndim(maps) >= 2 else MAP_SIZE)
        n = maps.shape[0]
        missing = [k for k in META_REQUIRED if k not in (meta or {})]
        if missing:
            raise InputError(path, f"segment metadata lacks {', '.join(missing)}")
        for name, values in meta.items():
            _as_1d(path, "meta", name, values, n)
    for name, values in (rows or {}).items():
        if np.shape(values)[:1] != (n,):
            raise InputError(path, f"per-map result {name} has shape {np.shape(values)}, expected ({n}, ...)")
    from .results import check_results  # the /results contract covers appended rows and state too

    rows = check_results(rows or {}, state_attrs, n_maps=n) if rows else rows
    state = check_results(state or {}, state_attrs) if (state or state_attrs) else state
    d = segment_dir(path)
    d.mkdir(exist_ok=True)
    final = d / f"seg_{int(number):06d}.h5"
    if final.exists():
        raise InputError(final, "segment already exists (two appenders?)")
    tmp = d / f".seg_{int(number):06d}.h5.tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["segment"] = int(number)
            f.attrs["n_maps"] = n
            f.attrs["committed_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            if n:
                f.create_dataset("c2", data=maps, chunks=(1,) + maps.shape[1:])
                _write_group(f, "meta", meta)
                _write_group(f, "results_rows", rows)
            if state or state_attrs:
                g = f.require_group("results_state")
                for key, value in (state_attrs or {}).items():
                    g.attrs[key] = value
                _write_group(f, "results_state", state)
            _write_group(f, "rheology", rheology)
            _write_group(f, "live/ledger", ledger)
            _write_group(f, "live/alerts", alerts)
        commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _rebuild(path: Path, results: Mapping | None, attrs: Mapping | None, through_segment: int | None) -> None:
    """Rewrite the base file with the committed segments (through ``through_segment``) merged and
    ``results`` (None: the merged view's results, as in :func:`compact`) as ``/results``."""
    with _rebuild_lock(path):
        ds = Dataset(path, through_segment=through_segment)
        try:
            if through_segment is not None and ds.segments_merged > through_segment:
                raise InputError(path, f"segments up to {ds.segments_merged} were merged while the results for "
                                       f"segments up to {through_segment} were computed; re-run")
            if results is None:
                results = {name: ds.read_result(name) for name in ds.result_names()}
                attrs = ds.result_attrs
            for name in ("latent", "labels", "umap"):
                if name in results and np.shape(results[name])[:1] != (ds.n_maps,):
                    raise InputError(path, f"result {name} has {np.shape(results[name])[:1]} rows for {ds.n_maps} maps")
            with atomic_write(path) as tmp:
                _write_rebuilt(ds, tmp, results, attrs)
            last = ds.last_segment
        finally:
            ds.close()
        for number, seg in list_segments(path):
            if number <= last:
                seg.unlink(missing_ok=True)


def _write_rebuilt(ds: "Dataset", tmp: Path, results: Mapping, attrs: Mapping | None) -> None:
    src = ds._h5
    with h5py.File(tmp, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        dst.attrs["schema_version"] = SCHEMA_VERSION
        dst.attrs["n_maps"] = ds.n_maps
        dst.attrs["segments_merged"] = ds.last_segment
        merged = bool(ds._segs)
        skip = {"results", "live"} | ({"c2", "meta", "rheology", "truth", "latents"} if merged else set())
        for name in src:
            if name not in skip:
                src.copy(src[name], dst, name)
        if merged:
            if ds.has_maps:
                s = ds.map_size
                c2 = dst.create_dataset("c2", shape=(ds.n_maps, s, s), dtype=np.float32, chunks=(1, s, s),
                                        maxshape=(None, s, s))
                for start, block in ds.iter_maps(64):
                    c2[start:start + len(block)] = block
            for grp, data in (("meta", ds.meta), ("truth", ds.truth), ("rheology", ds.rheology)):
                if data is not None:
                    _write_group(dst, grp, data)
            if ds.latents is not None:
                dst.create_dataset("latents", data=ds.latents)
        _write_group(dst, "live/ledger", ds.ledger)
        _write_group(dst, "live/alerts", ds.alerts)
        g = dst.create_group("results")
        for key, value in (attrs or {}).items():
            g.attrs[key] = value
        for name, value in results.items():
            arr = np.asarray(value)
            if arr.dtype.kind in "OU":
                g.create_dataset(name, data=arr.astype(str).astype(object), dtype=_STR)
            else:
                g.create_dataset(name, data=arr)
        _set_units(g, attrs or {})


def _set_units(g: h5py.Group, attrs: Mapping) -> None:
    """``unit`` attributes of the /results/dynamics arrays (and dynamics_score) from the results
    attr ``dynamics_units_json`` ({name: unit}), so a rebuild (compaction) keeps them."""
    try:
        units = json.loads(attrs.get("dynamics_units_json") or "{}")
    except (TypeError, ValueError):
        return
    for name, unit in (units.items() if isinstance(units, dict) else ()):
        if f"dynamics/{name}" in g:
            g[f"dynamics/{name}"].attrs["unit"] = str(unit)
    if "dynamics_score" in g and "relaxation_rate" in units:
        g["dynamics_score"].attrs["unit"] = f"log10({units['relaxation_rate']})"


def compact(path) -> None:
    """Merge every committed segment into the base file (atomic rebuild) and delete them; the
    results are kept as the merged view shows them. Also migrates a schema 1 file to 2."""
    _rebuild(Path(path), None, None, None)


def migrate(path) -> bool:
    """Rewrite a schema_version 1 dataset as version 2 (atomically; contents unchanged).
    Returns False when the file is already current."""
    with h5py.File(path, "r") as f:
        version = int(f.attrs.get("schema_version", 0))
    if version >= SCHEMA_VERSION:
        return False
    compact(path)
    return True


class _Segment:
    """One committed segment of a growing dataset. Segments never change once committed, so
    their small arrays (metadata, per-map result rows, ledger, alerts) are read once per process
    (:func:`_segment_summary`) and the HDF5 file is opened only to read maps or state arrays."""

    def __init__(self, number: int, path: Path, summary: dict):
        self.number, self.path = number, path
        self.n = summary["n"]
        self.attrs = summary["attrs"]
        self.groups = summary["groups"]
        self.state_names = summary["state_names"]
        self.state_attrs = summary["state_attrs"]
        self.has = summary["has"]
        self._h5: h5py.File | None = None

    def file(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")  # still there: rebuilds delete only merged segments
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._h5.id.valid:
            self._h5.close()
        self._h5 = None


_SUMMARIES: "dict[tuple, dict]" = {}
_SUMMARY_LIMIT = 50_000  # segments remembered per process (a few tens of kB each)
_SUMMARY_GROUPS = ("meta", "results_rows", "live/ledger", "live/alerts", "truth")


def _segment_summary(path: Path) -> dict:
    """The cached small contents of one segment file (keyed by inode, mtime and size)."""
    st = os.stat(path)  # FileNotFoundError when a rebuild deleted it meanwhile
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _SUMMARIES.get(key)
    if hit is not None:
        return hit
    try:
        h = h5py.File(path, "r")
    except OSError as exc:
        if not Path(path).exists():
            raise FileNotFoundError(path) from None
        raise InputError(path, f"unreadable dataset segment: {exc}") from None
    with h:
        groups = {}
        for g in _SUMMARY_GROUPS:
            if g in h:
                found: dict[str, np.ndarray] = {}
                h[g].visititems(lambda n, o: found.__setitem__(n, _read(o)) if isinstance(o, h5py.Dataset) else None)
                groups[g] = found
        state_names: list[str] = []
        state_attrs: dict = {}
        if "results_state" in h:
            h["results_state"].visititems(lambda n, o: state_names.append(n) if isinstance(o, h5py.Dataset) else None)
            state_attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h["results_state"].attrs.items()}
        summary = {"n": int(h.attrs.get("n_maps", 0)),
                   "attrs": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h.attrs.items()},
                   "groups": groups, "state_names": state_names, "state_attrs": state_attrs,
                   "has": {k for k in ("c2", "rheology", "latents") if k in h}}
    if len(_SUMMARIES) >= _SUMMARY_LIMIT:
        for old in list(_SUMMARIES)[:_SUMMARY_LIMIT // 10]:
            del _SUMMARIES[old]
    _SUMMARIES[key] = summary
    return summary


# --------------------------------------------------------------------------- reading
def _survives_rebuilds(method):
    """Retry a read of a :class:`Dataset` on a fresh view when a segment it needed was merged into
    the base file and deleted meanwhile (a reader that listed segments before a rebuild opens a
    segment file only when it first reads from it)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        for attempt in range(5):
            try:
                return method(self, *args, **kwargs)
            except FileNotFoundError:
                if attempt == 4:
                    raise InputError(self.path, "segments kept vanishing while reading (is a rebuild looping?)") from None
                self._reopen()
    return wrapper


class Dataset:
    """Read-only view of a dataset file (and its committed segments). Open with :func:`open_dataset`.

    Small arrays (metadata, rheology, truth, results) are read on demand and cached;
    maps are read one chunk at a time, so a 13,000-map file is never loaded whole. The view is
    fixed when opened: segments committed later are seen by opening the dataset again.

    Parameters
    ----------
    path : path-like
    segments : bool
        False: the base file only (e.g. the frozen reference of a live run).
    through_segment : int, optional
        Ignore segments numbered above this.
    """

    def __init__(self, path, *, segments: bool = True, through_segment: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "no such file")
        self._h5 = None
        self._segs: list[_Segment] = []
        self._open_retrying(segments, through_segment)

    def _open_retrying(self, segments: bool, through_segment: int | None) -> None:
        for attempt in range(5):
            try:
                self._open(segments, through_segment)
                break
            except FileNotFoundError:
                # a rebuild merged and deleted segments between our listing and reading: look again
                self.close()
                if attempt == 4:
                    raise InputError(self.path, "segments kept vanishing while opening (is a rebuild looping?)") from None
        self._cache: dict[str, object] = {}
        self._resolved: dict[str, tuple] | None = None

    def _reopen(self) -> None:
        """Open the dataset again after a rebuild (:func:`compact`, :func:`write_results`) merged
        segments into the base file and deleted them: rows keep their indices across rebuilds, and
        segments committed after this view was opened stay out of it."""
        through = self.last_segment
        self.close()
        self._open_retrying(True, through)

    def _open(self, segments: bool, through_segment: int | None) -> None:
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            if not self.path.exists():
                raise FileNotFoundError(self.path) from None
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
        self._base_n = int(f.attrs.get("n_maps", -1))
        self.map_size = int(f.attrs.get("map_size", MAP_SIZE))
        self.segments_merged = int(f.attrs.get("segments_merged", 0))
        self._segs = []
        if segments:
            for number, p in list_segments(self.path):
                if number <= self.segments_merged or (through_segment is not None and number > through_segment):
                    continue
                try:
                    summary = _segment_summary(p)
                except InputError:
                    self.close()
                    raise
                self._segs.append(_Segment(number, p, summary))
        self.last_segment = self._segs[-1].number if self._segs else self.segments_merged
        # parts holding maps: (None = the base file, or a segment; first row; rows)
        self._parts: list[tuple[_Segment | None, int, int]] = []
        start = 0
        if self._base_n:
            self._parts.append((None, 0, self._base_n))
            start = self._base_n
        for seg in self._segs:
            if seg.n:
                self._parts.append((seg, start, seg.n))
                start += seg.n
        self.n_maps = start
        self._starts = np.array([s for _, s, _ in self._parts], dtype=np.int64)
        self.has_maps = "c2" in f and all(seg is None or "c2" in seg.has for seg, _, _ in self._parts)
        try:
            self._check_structure()
        except InputError:
            self.close()
            raise

    def _check_structure(self) -> None:
        """What every reader relies on, from shapes and /meta/time only (cheap): the base file's
        n_maps agrees with its /meta, /c2 and /latents; /meta/time exists and is finite; /c2 holds
        square maps of ``map_size`` (their values are checked as they are read). Segments are
        checked when they are written (:func:`append_segment`)."""
        f, n = self._h5, self._base_n
        if n < 0 or (n == 0 and int(f.attrs.get("schema_version", 1)) < 2):
            raise InputError(self.path, f"the n_maps attribute is {n}")
        if "time" not in f["meta"]:
            raise InputError(self.path, "the dataset has no /meta/time (acquisition times)")
        for name in sorted(f["meta"], key=lambda name: name != "time"):  # time first
            dset = f["meta"][name]
            if isinstance(dset, h5py.Dataset) and dset.shape != (n,):
                raise InputError(self.path, f"/meta/{name} has shape {dset.shape} but n_maps is {n}")
        time = f["meta/time"][()]
        if time.dtype.kind not in "fiu" or not np.all(np.isfinite(time)):
            raise InputError(self.path, "/meta/time contains NaN, infinite or non-numeric values")
        if "c2" in f:
            c2 = check_maps(f["c2"], self.path, what="/c2 maps", size=self.map_size, values=False)
            if c2.ndim != 3 or c2.shape[0] != n:
                raise InputError(self.path, f"/c2 has shape {c2.shape} but n_maps is {n}")
        if "latents" in f and (f["latents"].ndim != 2 or f["latents"].shape[0] != n):
            raise InputError(self.path, f"/latents has shape {f['latents'].shape} but n_maps is {n}")

    @_survives_rebuilds
    def check_maps(self, **kwargs) -> None:
        """Check the shape of every part's ``/c2`` with :func:`ainerd_core.mapstack.check_maps`
        (e.g. ``size=256`` where the autoencoder needs it); raises InputError naming the file."""
        self._require_maps()
        for seg, _, _ in self._parts:
            c2 = self._c2(seg)
            check_maps(c2, c2.file.filename, what="C2 maps", values=False, **kwargs)

    def _c2(self, seg: "_Segment | None") -> h5py.Dataset:
        return self._h5["c2"] if seg is None else seg.file()["c2"]

    # lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        for seg in getattr(self, "_segs", []):
            seg.close()
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
        """Experiment attributes (flow_axis_deg, sector_width_deg, source_kind, title, ...);
        ``n_maps`` counts appended maps too."""
        out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._h5.attrs.items()}
        out["n_maps"] = self.n_maps
        return out

    @property
    def segments(self) -> list[int]:
        """Numbers of the segments this view includes (not yet merged into the base)."""
        return [seg.number for seg in self._segs]

    @property
    def live_info(self) -> dict:
        """Attributes of the last segment (``file``, ``committed_utc``, ...), {} without one."""
        return dict(self._segs[-1].attrs) if self._segs else {}

    def _base_group(self, name: str) -> dict[str, np.ndarray] | None:
        g = self._h5.get(name)
        return None if g is None else {k: _read(g[k]) for k in g if isinstance(g[k], h5py.Dataset)}

    @staticmethod
    def _concat(parts: list) -> dict[str, np.ndarray] | None:
        """Column dicts concatenated (the columns every part has); None if any part lacks the group."""
        if not parts or any(p is None for p in parts):
            return None
        keys = [k for k in parts[0] if all(k in p for p in parts[1:])]
        return {k: (parts[0][k] if len(parts) == 1 else np.concatenate([np.asarray(p[k]) for p in parts]))
                for k in keys}

    @_survives_rebuilds
    def _group(self, name: str) -> dict[str, np.ndarray] | None:
        if name not in self._cache:
            if not self._segs:
                value = self._base_group(name)
            elif name == "rheology":  # the whole log so far: the latest segment that has one wins
                seg = next((s for s in reversed(self._segs) if "rheology" in s.has), None)
                if seg is None:
                    value = self._base_group(name)
                else:
                    g = seg.file()["rheology"]
                    value = {k: _read(g[k]) for k in g if isinstance(g[k], h5py.Dataset)}
            elif name in ("live/ledger", "live/alerts"):
                parts = ([self._base_group(name)] if name in self._h5 else []) + \
                        [s.groups[name] for s in self._segs if name in s.groups]
                value = self._concat(parts) if parts else None
            else:  # per-map groups: rows of every part that holds maps
                parts = [self._base_group(name) if seg is None else seg.groups.get(name) for seg, _, _ in self._parts]
                value = self._concat(parts) if parts else (self._base_group(name) if name == "meta" else None)
            self._cache[name] = value
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
    def ledger(self) -> dict[str, np.ndarray] | None:
        """The live watcher's processed-files ledger (``file``, ``size``, ``mtime_ns``,
        ``n_maps``, ``status``, ``utc``...), or None."""
        return self._group("live/ledger")

    @property
    def alerts(self) -> dict[str, np.ndarray] | None:
        """Live alerts (``utc``, ``kind``, ``file``, ``map``, ``message``), or None."""
        return self._group("live/alerts")

    @property
    @_survives_rebuilds
    def latents(self) -> np.ndarray | None:
        """Latents that came with the data (N, D) float32, or None."""
        if "latents" not in self._cache:
            have = [("latents" in self._h5) if seg is None else ("latents" in seg.has) for seg, _, _ in self._parts]
            if have and all(have):
                self._cache["latents"] = np.concatenate(
                    [(self._h5 if seg is None else seg.file())["latents"][()] for seg, _, _ in self._parts])
            else:
                self._cache["latents"] = None
        return self._cache["latents"]

    # maps ------------------------------------------------------------------------
    def _require_maps(self) -> None:
        if not self.has_maps:
            raise InputError(self.path, "this dataset holds latents only, no C2 maps")

    def _part_of(self, idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._starts, idx, side="right") - 1

    def _checked(self, maps: np.ndarray, c2: h5py.Dataset) -> np.ndarray:
        # a file not written by this module may hold NaN or unnormalised values: refuse them here,
        # where every reader passes, naming the file (min/max of a batch cost ~1 % of the read)
        return check_maps(maps, c2.file.filename, size=self.map_size)

    @_survives_rebuilds
    def read_map(self, index: int) -> np.ndarray:
        """One map (size, size) float32 in [0, 1]."""
        self._require_maps()
        index = int(index)
        if not 0 <= index < self.n_maps:
            raise IndexError(f"map index {index} outside 0..{self.n_maps - 1}")
        seg, start, _ = self._parts[int(self._part_of(np.array([index]))[0])]
        c2 = self._c2(seg)
        return self._checked(c2[index - start], c2)[0]

    @_survives_rebuilds
    def read_maps(self, indices) -> np.ndarray:
        """Maps at the given indices, in the given order, (k, size, size) float32."""
        self._require_maps()
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((idx.size, self.map_size, self.map_size), np.float32)
        if idx.size == 0:
            return out
        if idx.min() < 0 or idx.max() >= self.n_maps:
            raise IndexError(f"map indices outside 0..{self.n_maps - 1}")
        part = self._part_of(idx)
        for p in np.unique(part):
            seg, start, _ = self._parts[int(p)]
            where = np.flatnonzero(part == p)
            uniq, inverse = np.unique(idx[where] - start, return_inverse=True)  # h5py needs increasing indices
            c2 = self._c2(seg)
            out[where] = self._checked(c2[uniq], c2)[inverse]
        return out

    def iter_maps(self, batch_size: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, maps)`` batches of at most ``batch_size`` maps, in order."""
        self._require_maps()
        for _, first, n in list(self._parts):  # global rows: they survive a rebuild between batches
            for s in range(0, n, batch_size):
                yield first + s, self._read_rows(first + s, first + min(s + batch_size, n))

    @_survives_rebuilds
    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        """Maps ``start .. stop-1`` (within one part, else across parts), read as slices."""
        out = []
        for seg, first, n in self._parts:
            lo, hi = max(start, first), min(stop, first + n)
            if lo < hi:
                c2 = self._c2(seg)
                out.append(self._checked(c2[lo - first:hi - first], c2))
        return out[0] if len(out) == 1 else np.concatenate(out)

    # results -----------------------------------------------------------------------
    def _resolve(self) -> dict[str, tuple]:
        """Where each visible result comes from: ('base',) | ('rows',) | ('state', segment).
        Per-map base results that the appended segments do not extend are hidden (their length
        would not match the maps)."""
        if self._resolved is not None:
            return self._resolved
        out: dict[str, tuple] = {}
        base: dict[str, h5py.Dataset] = {}
        if "results" in self._h5:
            self._h5["results"].visititems(lambda n, o: base.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
        map_segs = [s for s in self._segs if s.n]
        common = None
        for s in map_segs:
            names = set(s.groups.get("results_rows", {}))
            common = names if common is None else common & names
        common = common or set()
        for name, dset in base.items():
            per_map = self._base_n > 0 and dset.ndim >= 1 and dset.shape[0] == self._base_n
            if not map_segs or not per_map:
                out[name] = ("base",)
            elif name in common:
                out[name] = ("rows",)
        if self._base_n == 0:
            for name in common:
                out[name] = ("rows",)
        for s in self._segs:
            for name in s.state_names:
                out[name] = ("state", s)
        self._resolved = out
        return out

    @property
    def has_results(self) -> bool:
        return "results" in self._h5 or "labels" in self._resolve()

    def result_names(self) -> list[str]:
        """All result arrays as '/'-joined names relative to /results."""
        return sorted(self._resolve())

    @property
    def result_attrs(self) -> dict:
        out = {}
        if "results" in self._h5:
            out.update({k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._h5["results"].attrs.items()})
        for s in self._segs:
            out.update(s.state_attrs)
        return out

    def _rows_parts(self, name: str) -> list:
        return [_read(self._h5[f"results/{name}"]) if seg is None else seg.groups["results_rows"][name]
                for seg, _, _ in self._parts]

    @_survives_rebuilds
    def read_result(self, name: str, default=None):
        """One result array (``'latent'``, ``'labels'``, ``'umap'``, ``'kmeans/inertia'``...)."""
        key = f"results/{name}"
        if key not in self._cache:
            where = self._resolve().get(name)
            if where is None:
                return default
            if where[0] == "base":
                value = _read(self._h5[key])
            elif where[0] == "state":
                value = _read(where[1].file()[f"results_state/{name}"])
            else:
                parts = self._rows_parts(name)
                value = parts[0] if len(parts) == 1 else np.concatenate([np.asarray(p) for p in parts])
            self._cache[key] = value
        return self._cache[key]

    @_survives_rebuilds
    def read_result_row(self, name: str, index: int, default=None):
        """Row ``index`` of a (N, ...) result array (``'dynamics/g2'``...), read from the file
        without loading or caching the whole array (per-map curves of big sets)."""
        where = self._resolve().get(name)
        if where is None:
            return default
        index = int(index)
        if where[0] == "rows":
            if not 0 <= index < self.n_maps:
                raise IndexError(f"row {index} outside the result {name} of {self.n_maps} rows")
            seg, start, _ = self._parts[int(self._part_of(np.array([index]))[0])]
            if seg is not None:
                return np.asarray(seg.groups["results_rows"][name][index - start])
            dset = self._h5[f"results/{name}"]
        elif where[0] == "state":
            dset = where[1].file()[f"results_state/{name}"]
        else:
            dset = self._h5[f"results/{name}"]
        if not dset.shape or not 0 <= index < dset.shape[0]:
            raise IndexError(f"row {index} outside the result {name} of shape {dset.shape}")
        return np.asarray(dset[index])



def _read(dset: h5py.Dataset):
    if dset.dtype.kind == "O" or h5py.check_string_dtype(dset.dtype) is not None:
        data = dset.asstr()[()]
        return np.asarray(data, dtype=object) if isinstance(data, np.ndarray) else data
    return dset[()]


def open_dataset(path, **kwargs) -> Dataset:
    """Open a dataset file for reading (raises :class:`InputError` with a clear message).
    ``kwargs``: ``segments``, ``through_segment`` (see :class:`Dataset`)."""
    return Dataset(path, **kwargs)



def describe(path) -> str:
    """A few lines summarising a dataset (used by ``python -m ainerd_core info``)."""
    with open_dataset(path) as ds:
        a = ds.attrs
        lines = [f"{ds.path}: {a.get('title', '')}",
                 f"  schema_version {a.get('schema_version')}, source {a.get('source_kind')}, {ds.n_maps} maps"
                 f" ({'with' if ds.has_maps else 'without'} C2 maps)",
                 f"  flow axis {a.get('flow_axis_deg')} deg, {a.get('n_sectors')} sectors of {a.get('sector_width_deg')} deg"]
        t = ds.meta["time"]
        if t.size:
            lines.append(f"  time {t.min():.1f} .. {t.max():.1f} s, {np.unique(t).size} time points")
        if ds.segments:
            lines.append(f"  live: {len(ds.segments)} appended segments (last {ds.live_info.get('file', '')})")
        if ds.rheology is not None:
            lines.append(f"  rheology: {ds.rheology['time'].size} rows")
        if ds.truth is not None:
            lines.append(f"  ground truth: {', '.join(sorted(ds.truth))}")
        if ds.latents is not None:
            lines.append(f"  latents shipped with the data: {ds.latents.shape}")
        names = ds.result_names()
        lines.append(f"  results: {len(names)} arrays" if names else "  results: none (run precompute)")
    return "\n".join(lines)
