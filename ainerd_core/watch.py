"""``python -m ainerd_core watch FOLDER --out DATASET.h5 ...``: live mode during a beamtime.

Follows a folder where the correlator (boost_corr) writes one two-time result file per time
point, and appends every complete file's maps to a dataset while the dashboard reads it::

    watch FOLDER --out LIVE.h5 [--reference REF.h5] [--model CKPT]
          (--cessation-time ISO|first | --time-table CSV) [--rheology LOG [--rheology-offset S]]
          [--poll 0.25] [--stable 1.0] [--retries 3] [--celery] [--once | --idle-exit S]

A file is **complete** when its size and mtime have not changed for ``--stable`` seconds, it
opens, holds every dataset the APS reader needs and every map reads (boost_corr's
``*.hdf.temp`` names and hidden files are never taken). A file that stays unreadable after
``--retries`` attempts is reported (an alert in the dataset and a line on stderr) and never
retried; the watcher never crashes on a bad file. Each taken file is one segment of the dataset
(:func:`ainerd_core.dataset.append_segment`): maps, metadata, per-map results, the updated
tables and the processed-files ledger are committed together by one atomic rename, so a watcher
killed at any moment loses at most the file it was appending and, restarted, takes it again
(the ledger says which files are in; none enters twice).

Per map (the *reference* is a precomputed dataset: ``--reference``, else ``--out`` itself when
it holds results; its base file only, never the live rows):

- latent: the autoencoder (the reference's checkpoint unless ``--model``; checksums must match);
- dynamics: :func:`ainerd_core.dynamics.measure_dynamics` when that module is present;
- cluster labels: nearest frozen centroid ``kmeans/centroids_k{k}`` of the reference (its
  cluster order), for the chosen k and k = 3, 5, 8;
- UMAP position: inverse-distance weighted mean of the reference UMAP coordinates of the
  ``UMAP_NEIGHBOURS`` nearest reference latents (UMAP's own initialisation of ``transform``;
  the embedding is not refitted);
- novelty: :mod:`ainerd_core.novelty` when present (alert when >= its ``NOVEL_THRESHOLD``);

and the Figure-3 tables (time histogram, sector x time labels, flow/vorticity share over the
UMAP plane, stress minima) are recomputed from the running per-map arrays the watcher keeps
in memory (time, sector, labels, UMAP: a few bytes per map), not re-read from disk.

With ``--celery`` the per-file work (reading, resampling, encoding, dynamics) runs in Celery
workers (``celery -A ainerd_core.watch_celery worker``) on the Redis broker of
``AINERD_REDIS_URL``; the watcher stays the single writer. A full ``precompute`` of the live
dataset may run at any time: it replaces the live results of every map it saw (the watcher
then reloads the reference if it is that file).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis import nearest_centroid
from .errors import InputError
from .results import K_SET

APS_SUFFIXES = (".h5", ".hdf", ".hdf5", ".nxs")
UMAP_NEIGHBOURS = 10
EXTRA_K = K_SET  # labels and tables kept side by side, as precompute keeps them
#: rows of the processed-files ledger, per taken or failed file
LEDGER_FIELDS = ("file", "size", "mtime_ns", "n_maps", "status", "start_time", "time_s", "message", "utc",
                 "folder")
ALERT_FIELDS = ("utc", "kind", "file", "map", "message")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- per-file work
@dataclass
class FileSettings:
    """What the per-file work needs (plain data: it travels to Celery workers as JSON)."""

    q_index: str = "all"
    diagonal_fix: bool = False
    sector_width_deg: float = 20.0
    model_path: str | None = None
    dynamics: bool = True

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> "FileSettings":
        return cls(**json.loads(text))


_MODELS: dict[str, object] = {}


def _model(path: str | None):
    """The autoencoder at ``path`` (None: the shipped demo weights), loaded once per process."""
    from . import model as M

    key = str(path or M.DEMO_WEIGHTS)
    if key not in _MODELS:
        if path is None and not Path(M.DEMO_WEIGHTS).exists():
            raise InputError("--model", f"no model given and no shipped weights at {M.DEMO_WEIGHTS}")
        _MODELS[key] = M.load_model(path, device="cpu")
    return _MODELS[key]


def dynamics_available() -> bool:
    try:
        from . import dynamics  # noqa: F401  (written by another helper; optional until merged)
    except ImportError:
        return False
    return hasattr(dynamics, "measure_dynamics")


def compute_file(path, settings: FileSettings) -> dict:
    """Read one complete APS result file and do the per-map work that needs no reference.

    Returns a dict of arrays: ``maps`` (n, 256, 256) float32 in [0, 1]; ``meta/<field>`` (n,)
    (``sector``, ``phi`` [deg], ``q`` [1/Angstrom], ``source``, ``q_index``, ``roi_label``,
    ``c2_min``, ``c2_max``, ``c2_time_step_s`` [s per 256-grid pixel]); ``latent`` (n, D);
    ``dynamics/<name>`` per map when :mod:`ainerd_core.dynamics` is present; and the scalars
    ``start_time`` (ISO text or ''), ``layout``, ``size``. Raises InputError for an incomplete or
    corrupt file (the caller retries).
    """
    from .dataset import MAP_SIZE
    from .ingest import _q_selection, sector_of_phi
    from .model import encode
    from .readers import aps as aps_reader
    from .readers.resample import check_map, prepare_map

    path = Path(path)
    info = aps_reader.scan_file(path)
    q_sel = _q_selection(settings.q_index)
    entries = [e for e in info.entries if q_sel is None or e.q_index in q_sel]
    if not entries:
        raise InputError(path, "no maps selected by --q-index")
    n_sectors = int(round(360.0 / settings.sector_width_deg))
    n = len(entries)
    maps = np.empty((n, MAP_SIZE, MAP_SIZE), np.float32)
    c2_min, c2_max = np.empty(n), np.empty(n)
    with aps_reader.open_h5(path) as f:
        for i, e in enumerate(entries):
            raw = check_map(path, aps_reader.read_map(path, f, e.dataset), e.dataset, upper_triangle=True)
            maps[i], c2_min[i], c2_max[i] = prepare_map(raw, size=MAP_SIZE, diagonal_fix=settings.diagonal_fix,
                                                        upper_triangle=True)
    phi = np.mod(np.array([e.phi for e in entries], dtype=np.float64), 360.0)
    step = np.nan if info.pixel_time_s is None else info.pixel_time_s * info.size / MAP_SIZE
    out: dict[str, object] = {
        "maps": maps,
        "meta/sector": sector_of_phi(phi, settings.sector_width_deg, n_sectors),
        "meta/phi": phi,
        "meta/q": np.array([e.q for e in entries], dtype=np.float64),
        "meta/source": np.array([f"{path.name}:{e.dataset.rsplit('/', 1)[-1]} (label {e.label})" for e in entries],
                                dtype=object),
        "meta/q_index": np.array([e.q_index for e in entries], dtype=np.int32),
        "meta/roi_label": np.array([e.label for e in entries], dtype=np.int32),
        "meta/c2_min": c2_min, "meta/c2_max": c2_max,
        "meta/c2_time_step_s": np.full(n, step),
        "start_time": info.start_text or "", "layout": info.layout, "size": int(info.size),
    }
    out["latent"] = encode(_model(settings.model_path), maps, batch_size=64)  # the path precompute uses
    if settings.dynamics and dynamics_available():
        from .dynamics import measure_dynamics

        dyn = measure_dynamics(maps, time_step_s=None if np.isnan(step) else float(step))
        for name, value in dyn.items():
            arr = np.asarray(value)
            if arr.ndim >= 1 and arr.shape[0] == n and f"dynamics/{name}" not in _STATE_DYNAMICS_NAMES:
                out[f"dynamics/{name}"] = arr
            elif arr.dtype.kind in "fiub":
                out[f"dynamics_state/{name}"] = arr
    return out


_STATE_DYNAMICS_NAMES = ("dynamics/g2_lag", "dynamics/g2_count", "dynamics/aged_g2_age", "dynamics/aged_g2_lag")


# JSON-safe transport of the per-file result (no pickle on the broker)
def pack_result(res: dict) -> dict:
    import base64

    out = {}
    for key, value in res.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "O":
                out[key] = {"strings": [str(v) for v in value]}
            else:
                arr = np.array(value, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
                out[key] = {"dtype": arr.dtype.str, "shape": list(arr.shape),
                            "b64": base64.b64encode(arr.tobytes()).decode("ascii")}
        else:
            out[key] = {"value": value}
    return out


def unpack_result(obj: dict) -> dict:
    import base64

    out = {}
    for key, value in obj.items():
        if "strings" in value:
            out[key] = np.array(value["strings"], dtype=object)
        elif "b64" in value:
            out[key] = np.frombuffer(base64.b64decode(value["b64"]), dtype=np.dtype(value["dtype"])
                                     ).reshape(value["shape"]).copy()
        else:
            out[key] = value["value"]
    return out


# --------------------------------------------------------------------------- the reference
class Reference:
    """The frozen clustering and UMAP a live run places new maps into (a precomputed dataset's
    base file; the appended live rows are never part of it).

    Attributes
    ----------
    latent : (R, D) float32; umap : (R, 2) float32
    centroids : dict k -> (k, D) float32, rows in the reference's cluster order (0 = slowest)
    k : int, the reference's chosen k
    attrs : dict, its /results attributes
    """

    def __init__(self, path):
        from .dataset import open_dataset

        self.path = Path(path)
        ds = open_dataset(self.path, segments=False)
        try:
            names = set(ds.result_names())
            if not {"latent", "labels", "umap"} <= names:
                raise InputError(self.path, "the reference has no precomputed results (run precompute on it)")
            self.latent = np.asarray(ds.read_result("latent"), np.float32)
            self.umap = np.asarray(ds.read_result("umap"), np.float32)
            self.attrs = dict(ds.result_attrs)
            labels = np.asarray(ds.read_result("labels"))
            self.k = int(self.attrs.get("k", labels.max() + 1))
            self.centroids: dict[int, np.ndarray] = {}
            for kk in sorted({self.k, *EXTRA_K}):
                c = ds.read_result(f"kmeans/centroids_k{kk}")
                if c is None:  # precomputed before centroids were stored: the cluster means
                    lab = labels if kk == self.k else ds.read_result(f"labels_k{kk}")
                    if lab is None:
                        continue
                    c = np.stack([self.latent[lab == j].mean(0) if np.any(lab == j)
                                  else np.full(self.latent.shape[1], np.nan) for j in range(kk)])
                self.centroids[kk] = np.asarray(c, np.float32)
            self.flow_axis_deg = float(ds.attrs.get("flow_axis_deg", 90.0))
        finally:
            ds.close()
        st = self.path.stat()
        self.key = (st.st_mtime_ns, st.st_size)
        self._sq = np.einsum("ij,ij->i", self.latent, self.latent)

    def changed(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size) != self.key

    def assign(self, latent: np.ndarray) -> dict[int, np.ndarray]:
        """Nearest frozen centroid per k: {k: (n,) int32}."""
        return {kk: nearest_centroid(latent, c) for kk, c in self.centroids.items()}

    def place(self, latent: np.ndarray, neighbours: int = UMAP_NEIGHBOURS) -> np.ndarray:
        """(n, 2) UMAP coordinates: inverse-distance weighted mean of the nearest references'."""
        z = np.asarray(latent, np.float32)
        d2 = np.maximum(self._sq[None, :] - 2 * z @ self.latent.T + np.einsum("ij,ij->i", z, z)[:, None], 0)
        k = min(neighbours, self.latent.shape[0])
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        d = np.sqrt(np.take_along_axis(d2, idx, axis=1))
        w = 1.0 / np.maximum(d, 1e-6)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkc->nc", w, self.umap[idx]).astype(np.float32)


# --------------------------------------------------------------------------- file tracking
@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float          # monotonic time the (size, mtime) was first seen
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""


def candidate_files(folder: Path) -> list[os.DirEntry]:
    """Result files of the folder: APS suffixes, not hidden, not boost_corr's ``.temp``."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            name = e.name
            if name.startswith(".") or not name.lower().endswith(APS_SUFFIXES):
                continue
            try:
                if not e.is_file():
                    continue
            except OSError:
                continue
            out.append(e)
    return sorted(out, key=lambda e: e.name)


# --------------------------------------------------------------------------- the watcher
@dataclass
class WatchOptions:
    folder: Path
    out: Path
    reference: Path | None = None
    model_path: str | None = None
    cessation: str | None = None        # ISO text, 'first', or None with a time table
    time_table: Path | None = None
    rheology: Path | None = None
    rheology_offset: float = 0.0
    rheology_format: str = "auto"
    q_index: str = "all"
    diagonal_fix: bool = False
    flow_axis_deg: float = 90.0
    sector_width_deg: float = 20.0
    poll_s: float = 0.25
    stable_s: float = 1.0
    retries: int = 3
    retry_s: float = 2.0
    rheology_every_s: float = 30.0
    celery: bool = False
    broker: str | None = None
    compact_every: int = 0
    dynamics: bool = True
    verbose: bool = True
    title: str | None = None
    extra: dict = field(default_factory=dict)


class Watcher:
    """The live appender. ``start()``, then ``poll_once()`` repeatedly (or ``run()``), ``close()``.

    Single writer: holds the dataset's appender lock from ``start`` to ``close``.
    """

    def __init__(self, opts: WatchOptions):
        self.o = opts
        self.settings = FileSettings(q_index=opts.q_index, diagonal_fix=opts.diagonal_fix,
                                     sector_width_deg=opts.sector_width_deg, model_path=opts.model_path,
                                     dynamics=opts.dynamics)
        self._lock_fd: int | None = None
        self._seen: dict[str, _Seen] = {}
        self._done: set[str] = set()
        self._failed: dict[str, tuple[int, int]] = {}
        self.reference: Reference | None = None
        self._pending: dict[str, object] = {}     # celery: file name -> AsyncResult
        self._rheo_key = None
        self._rheo: dict | None = None
        self._rheo_dirty = False
        self._rheo_committed_at = 0.0
        self.events: list[dict] = []               # what happened (tests, benchmark)
        self._segments_since_compact = 0

    # ------------------------------------------------------------------ setup
    def say(self, msg: str) -> None:
        if self.o.verbose:
            print(f"[watch {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def start(self) -> "Watcher":
        from . import dataset as D

        o = self.o
        if not Path(o.folder).is_dir():
            raise InputError(o.folder, "is not a folder")
        if o.cessation is None and o.time_table is None:
            raise InputError("--cessation-time", "give --cessation-time ISO|first or --time-table CSV")
        if not 0 < o.sector_width_deg <= 360 or abs(round(360 / o.sector_width_deg) * o.sector_width_deg - 360) > 1e-6:
            raise InputError("--sector-width-deg", f"{o.sector_width_deg} does not divide 360 degrees into whole sectors")
        for name, value in (("--poll", o.poll_s), ("--stable", o.stable_s), ("--retry-interval", o.retry_s)):
            if not (np.isfinite(value) and value >= 0):
                raise InputError(name, f"must be a number of seconds >= 0, got {value}")
        if o.retries < 1:
            raise InputError("--retries", f"must be >= 1, got {o.retries}")
        out = Path(o.out)
        if out.exists() and out.is_dir():
            raise InputError(out, "is a folder; --out must be a file name")
        if not out.exists():
            D.create_live_dataset(out, source_kind="aps-8idi", title=o.title or out.stem,
                                  flow_axis_deg=float(o.flow_axis_deg), sector_width_deg=float(o.sector_width_deg),
                                  n_sectors=int(round(360 / o.sector_width_deg)),
                                  provenance=f"watch {Path(o.folder).resolve()}: live appends, one segment per file")
            self.say(f"created {out}")
        self._lock_fd = D.acquire_writer_lock(out)
        for p in D.cleanup_segment_temporaries(out):
            self.say(f"removed a half-written segment left by a killed watcher: {p.name}")
        if D.migrate(out):
            self.say(f"migrated {out} to schema_version {D.SCHEMA_VERSION}")
        self._load_state()
        self._load_reference()
        if o.time_table is not None and not Path(o.time_table).exists():
            raise InputError(o.time_table, "no such time table")
        if o.celery:
            from .watch_celery import make_app

            self._celery = make_app(o.broker)
        self.say(f"watching {o.folder} -> {out} ({self.n} maps, {len(self._done)} files already in)")
        return self

    def _load_state(self) -> None:
        """Running per-map arrays and the ledger from the dataset as committed so far."""
        from .dataset import open_dataset

        with open_dataset(self.o.out) as ds:
            if ds.n_maps and not ds.segments and ds.segments_merged == 0 and not ds.has_results:
                raise InputError(self.o.out, "holds maps without results: run precompute on it first, or"
                                             " watch into a new --out file")
            meta = ds.meta
            self.n = ds.n_maps
            self.time = np.asarray(meta["time"], np.float64)
            self.sector = np.asarray(meta["sector"], np.int32)
            self.phi = np.asarray(meta["phi"], np.float64)
            self.labels: dict[int, np.ndarray] = {}
            labels = ds.read_result("labels")
            k = ds.result_attrs.get("k")
            if labels is not None and k is not None:
                self.labels[int(k)] = np.asarray(labels, np.int32)
            for kk in EXTRA_K:
                lab = ds.read_result(f"labels_k{kk}")
                if lab is not None:
                    self.labels[kk] = np.asarray(lab, np.int32)
            umap = ds.read_result("umap")
            self.umap = None if umap is None else np.asarray(umap, np.float32)
            ledger = ds.ledger or {}
            status = [str(s) for s in ledger.get("status", [])]
            files = [str(x) for x in ledger.get("file", [])]
            self._done = {f for f, s in zip(files, status) if s == "ok"}
            self._failed = {f: (int(sz), int(mt)) for f, s, sz, mt in
                            zip(files, status, ledger.get("size", []), ledger.get("mtime_ns", [])) if s != "ok"}
            self._classes = None
            self._ledger_rows = {k: list(v) for k, v in ledger.items()}
            self._cessation_dt = None
            if self.o.cessation and self.o.cessation.strip().lower() != "first":
                from .readers.aps import parse_time_text

                self._cessation_dt = parse_time_text(self.o.cessation, "--cessation-time")
            elif self.o.cessation:
                # 'first' = the start of the first file taken; recovered from the ledger on restart
                self._cessation_dt = self._cessation_from_ledger(ledger)
            self.rheology_in = ds.rheology

    def _cessation_from_ledger(self, ledger):
        from .readers.aps import parse_time_text

        starts, times = ledger.get("start_time"), ledger.get("time_s")
        if starts is None:
            return None
        for s, t in zip(starts, times):
            if s and np.isfinite(t):
                return parse_time_text(s, "ledger") - _dt.timedelta(seconds=float(t))
        return None

    def _load_reference(self) -> None:
        from . import model as M

        from .dataset import open_dataset

        ref_path = self.o.reference
        with open_dataset(self.o.out, segments=False) as base:
            names = set(base.result_names())
            own = base.n_maps and {"latent", "labels", "umap"} <= names and (
                ref_path is None or any(n.startswith("kmeans/centroids_k") for n in names))
        if own:
            # a precompute of the live dataset itself is the newest clustering of this very
            # experiment: later maps join its clusters (and --reference is only the first start)
            if ref_path is not None and Path(ref_path).resolve() != Path(self.o.out).resolve():
                self.say(f"{self.o.out} holds its own precomputed results: using them as the reference")
            ref_path = self.o.out
        st = Path(self.o.out).stat()
        self._out_key = (st.st_mtime_ns, st.st_size)
        if ref_path is None:
            self.reference = None
            self.say("note: no reference (--reference, or --out with precomputed results): maps get latents"
                     " but no clusters or UMAP position until a precompute")
        else:
            self.reference = Reference(ref_path)
            self.say(f"reference {ref_path}: {self.reference.latent.shape[0]} maps, k = {self.reference.k}, "
                     f"centroids for k = {sorted(self.reference.centroids)}")
        if self.settings.model_path is None and self.reference is not None:
            named = self.reference.attrs.get("model")
            if isinstance(named, str) and Path(named).is_file():
                self.settings.model_path = named
        model = _model(self.settings.model_path)
        self._load_novelty()
        self.model_path = str(getattr(model, "checkpoint_path", self.settings.model_path or M.DEMO_WEIGHTS))
        self.model_sha = M.checkpoint_sha256(self.model_path) if Path(self.model_path).is_file() else ""
        want = self.reference.attrs.get("model_sha256") if self.reference is not None else None
        if want and self.model_sha and want != self.model_sha:
            raise InputError(self.model_path, f"is not the model of the reference {self.reference.path} "
                                              "(SHA-256 differs): latents of different models cannot share clusters")

    def close(self) -> None:
        if getattr(self, "_celery", None) is not None:
            import gc

            self._pending.clear()
            gc.collect()  # Celery results unsubscribe in __del__: let them while the broker is still there
            self._celery.close()
            self._celery = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Watcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ polling
    def ready_files(self) -> list[Path]:
        """Files whose size and mtime have been stable for ``stable_s`` and are due a try."""
        now = time.monotonic()
        ready = []
        present = set()
        for e in candidate_files(Path(self.o.folder)):
            name = e.name
            present.add(name)
            if name in self._done or name in self._pending:
                continue
            try:
                st = e.stat()
            except OSError:
                continue
            if self._failed.get(name) == (st.st_size, st.st_mtime_ns):
                continue  # reported as failed and unchanged since: not retried
            seen = self._seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                # first sight or still changing; an old file (mtime well past) counts as stable now
                since = now
                age = time.time() - st.st_mtime_ns / 1e9
                if seen is None and age >= self.o.stable_s:
                    since = now - self.o.stable_s
                # a change means the file is still arriving: earlier failed attempts do not count
                self._seen[name] = _Seen(st.st_size, st.st_mtime_ns, since)
                seen = self._seen[name]
            if now - seen.since >= self.o.stable_s and now >= seen.next_try:
                ready.append(Path(self.o.folder) / name)
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]  # renamed away or deleted before it was taken
        return ready

    def poll_once(self) -> int:
        """One pass: take every ready file, follow the rheology log. Returns files committed."""
        committed = 0
        if (self.reference is not None and self.reference.changed()) or self._out_changed():
            self.say("the reference or the dataset's base file changed (precompute?): reloading")
            self._load_state()
            self._load_reference()
        self._poll_rheology()
        if self.o.celery:
            committed += self._collect_celery()
        for path in self.ready_files():
            if self.o.celery:
                self._submit_celery(path)
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                res = compute_file(path, self.settings)
            except InputError as exc:
                self._failed_attempt(path, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one bad file must never stop the watcher
                self._failed_attempt(path, f"{type(exc).__name__}: {exc}")
                continue
            res["compute_cpu_s"] = time.process_time() - c0  # CPU seconds, all threads (load-independent)
            committed += self._commit(path, res, compute_s=time.perf_counter() - t0)
        if self._rheo_dirty and time.monotonic() - self._rheo_committed_at >= self.o.rheology_every_s:
            self._append(rheology_only=True)
        return committed

    def run(self, *, once: bool = False, idle_exit_s: float | None = None, max_files: int | None = None) -> int:
        """Poll until interrupted (or: one pass with ``once``; ``idle_exit_s`` without a new file;
        ``max_files`` committed). Returns files committed."""
        total, idle_since = 0, time.monotonic()
        while True:
            got = self.poll_once()
            total += got
            if got:
                idle_since = time.monotonic()
            if once or (max_files is not None and total >= max_files):
                return total
            if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s and not self._pending \
                    and not self._seen_unfinished():
                return total
            time.sleep(self.o.poll_s)

    def _out_changed(self) -> bool:
        """Whether something else (a precompute) rewrote the dataset's base file."""
        try:
            st = Path(self.o.out).stat()
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size) != getattr(self, "_out_key", None)

    def _seen_unfinished(self) -> bool:
        return any(name not in self._done and (s.size, s.mtime_ns) != self._failed.get(name)
                   for name, s in self._seen.items())

    def _failed_attempt(self, path: Path, message: str) -> None:
        seen = self._seen.get(path.name)
        if seen is None:
            return
        seen.attempts += 1
        seen.last_error = message
        seen.next_try = time.monotonic() + self.o.retry_s
        if seen.attempts < self.o.retries:
            self.say(f"{path.name}: not readable yet (attempt {seen.attempts}/{self.o.retries}): {message}")
            return
        print(f"error: {message}" if str(path) in message else f"error: {path}: {message}", file=sys.stderr, flush=True)
        self._append(failed=(path, seen, message))

    # ------------------------------------------------------------------ celery
    def _submit_celery(self, path: Path) -> None:
        result = self._celery.send_task("ainerd.watch.compute_file", args=(str(path), self.settings.to_json()))
        self._pending[path.name] = (path, result, time.perf_counter())
        self.say(f"{path.name}: handed to a Celery worker")

    def _collect_celery(self) -> int:
        committed = 0
        for name, (path, result, t0) in list(self._pending.items()):
            if not result.ready():
                continue
            del self._pending[name]
            try:
                payload = result.get(timeout=10, propagate=True)
                if "error" in payload:
                    raise InputError(path, payload["error"]["value"])
                res = unpack_result(payload)
            except Exception as exc:  # noqa: BLE001 - a worker failure is one failed attempt
                self._failed_attempt(path, str(exc))
                continue
            committed += self._commit(path, res, compute_s=time.perf_counter() - t0)
        return committed

    # ------------------------------------------------------------------ rheology
    def _poll_rheology(self) -> None:
        if self.o.rheology is None:
            return
        p = Path(self.o.rheology)
        try:
            st = p.stat()
        except OSError:
            return
        key = (st.st_size, st.st_mtime_ns)
        if key == self._rheo_key:
            return
        from .readers.rheology import read_rheology

        try:  # a log caught mid-line fails to parse: keep the previous one, try at the next poll
            rheo = read_rheology(p, self.o.rheology_format, self.o.rheology_offset)
        except InputError as exc:
            self.say(f"rheology log not readable yet: {exc}")
            return
        self._rheo_key = key
        self._rheo = {k: np.asarray(v) for k, v in rheo.items()}
        self._rheo_dirty = True

    # ------------------------------------------------------------------ committing
    def _time_of(self, path: Path, start_text: str) -> float:
        from .readers.aps import parse_time_text, read_time_table, seconds_between

        if self.o.time_table is not None:
            table = read_time_table(self.o.time_table)  # re-read: it grows during the beamtime
            if path.name not in table:
                raise InputError(self.o.time_table, f"has no time for {path.name} (yet)")
            return float(table[path.name])
        if not start_text:
            raise InputError(path, "has no start time (/entry/start_time); use --time-table")
        start = parse_time_text(start_text, f"{path}: start time")
        if self._cessation_dt is None:  # --cessation-time first: this is the first file
            self._cessation_dt = start
            self.say(f"time 0 (shear cessation) = start of {path.name}: {start.isoformat()}")
        return seconds_between(start, self._cessation_dt)

    def _commit(self, path: Path, res: dict, compute_s: float) -> int:
        try:
            t = self._time_of(path, str(res.get("start_time", "")))
        except InputError as exc:
            self._failed_attempt(path, str(exc))
            return 0
        return self._append(path=path, res=res, t=t, compute_s=compute_s)

    def _rows_for(self, res: dict, t: float) -> tuple[dict, dict, dict]:
        """meta, per-map result rows and updated whole-dataset state for a new file's maps."""
        from . import analysis as A
        from .geometry import sector_class

        n = res["maps"].shape[0]
        meta = {"time": np.full(n, t, np.float64)}
        meta.update({k.split("/", 1)[1]: v for k, v in res.items() if k.startswith("meta/")})
        latent = np.asarray(res["latent"], np.float32)
        rows: dict[str, np.ndarray] = {"latent": latent}
        rows.update({k: v for k, v in res.items() if k.startswith("dynamics/")})
        state: dict[str, np.ndarray] = {}
        state_attrs: dict[str, object] = {"latent_source": "model", "model": self.model_path,
                                          "live_rule": ("live: labels = nearest frozen centroid of the reference "
                                                        "(kmeans/centroids_k*); umap = inverse-distance weighted mean "
                                                        f"of the {UMAP_NEIGHBOURS} nearest reference latents' UMAP "
                                                        "coordinates (no refit); tables recomputed per file")}
        if self.model_sha:
            state_attrs["model_sha256"] = self.model_sha
        for k, v in res.items():
            if k.startswith("dynamics_state/"):
                state["dynamics/" + k.split("/", 1)[1]] = v
        if "dynamics/relaxation_rate" in rows:
            # log10 of the fitted rate; NaN where the fit failed (precompute fills those by regression)
            rate = np.asarray(rows["dynamics/relaxation_rate"], np.float64)
            ok = np.asarray(rows.get("dynamics/fit_status", np.zeros(rate.size))) == 0
            with np.errstate(divide="ignore", invalid="ignore"):
                rows["dynamics_score"] = np.where(ok & (rate > 0), np.log10(rate), np.nan).astype(np.float32)
        rows.update(self._novelty(latent, res))
        tol = 10.0
        if self.reference is not None:
            ref = self.reference
            tol = float(ref.attrs.get("sector_tolerance_deg", 10.0))
            assigned = ref.assign(latent)
            for kk, lab in assigned.items():
                rows["labels" if kk == ref.k else f"labels_k{kk}"] = lab
            if ref.k in EXTRA_K:
                rows[f"labels_k{ref.k}"] = assigned[ref.k]
            rows["umap"] = ref.place(latent)
            state_attrs.update({key: ref.attrs[key] for key in ("k", "k_rule", "suggested_k", "order_rule",
                                                                "order_feature_name") if key in ref.attrs})
            state_attrs["k"] = int(ref.k)
            state_attrs["live_reference"] = str(ref.path)
        rows["sector_class"] = np.asarray(sector_class(meta["phi"], float(self.o.flow_axis_deg), tol)).astype(object)
        state_attrs.update(sector_tolerance_deg=tol, flow_axis_deg=float(self.o.flow_axis_deg))
        return meta, rows, {"state": state, "attrs": state_attrs}

    def _load_novelty(self) -> None:
        """The novelty reference (:mod:`ainerd_core.novelty`, when present): the one precompute
        stored with the reference dataset, else the one stored in the model's checkpoint."""
        self._novelty_ref = None
        try:
            from . import novelty as N
        except ImportError:
            self.say("note: ainerd_core.novelty is not available: no novelty scores or novel-map alerts")
            return
        if not hasattr(N, "novelty_of_maps"):
            return
        ref = None
        if self.reference is not None and hasattr(N, "reference_from_results"):
            from .dataset import open_dataset

            with open_dataset(self.reference.path, segments=False) as ds:
                ref = N.reference_from_results(ds.read_result, ds.result_attrs)
        if ref is None and hasattr(N, "reference_for"):
            ref = N.reference_for(_model(self.settings.model_path))
        if ref is None:
            self.say("note: no novelty reference (none stored by the reference's precompute or the model): "
                     "no novelty scores")
        self._novelty_ref = ref

    def _novelty(self, latent, res) -> dict:
        """novelty/score, recon_quantile, knn_quantile per map ({} without a novelty reference)."""
        if getattr(self, "_novelty_ref", None) is None:
            return {}
        from . import novelty as N

        try:
            out = N.novelty_of_maps(_model(self.settings.model_path), res["maps"], self._novelty_ref, latents=latent)
        except Exception as exc:  # noqa: BLE001 - novelty is an extra: never lose the maps for it
            self.say(f"novelty scoring failed: {exc}")
            return {}
        return {f"novelty/{k}": np.asarray(out[k], np.float32) for k in ("score", "recon_quantile", "knn_quantile")
                if k in out}

    def _tables(self) -> dict:
        """Figure-3 tables over every map so far (running arrays + the new rows)."""
        from . import analysis as A

        state: dict[str, np.ndarray] = {}
        times, tidx = A.time_index(self.time)
        state["tables/times"], state["tables/time_index"] = times, tidx
        ref = self.reference
        if ref is not None and self.labels:
            for kk, lab in self.labels.items():
                if lab.shape[0] != self.n:
                    continue
                name = "tables/counts" if kk == ref.k else f"tables/counts_k{kk}"
                state[name] = A.counts_per_time(tidx, lab, times.size, kk)
                if kk == ref.k and kk in EXTRA_K:
                    state[f"tables/counts_k{kk}"] = state[name]
            lab = self.labels.get(ref.k)
            if lab is not None and lab.shape[0] == self.n:
                sectors, mat = A.sector_time_matrix(self.sector, tidx, lab, times.size)
                state["tables/sectors"], state["tables/sector_time_labels"] = sectors, mat
            if self.umap is not None and self.umap.shape[0] == self.n and self.n >= 2:
                radius = ref.attrs.get("flow_share_radius")
                gx, gy, share, radius = A.flow_share_grid(self.umap, self._classes, grid=64,
                                                          radius=float(radius) if radius else None)
                state["flow_share/x"], state["flow_share/y"], state["flow_share/share"] = gx, gy, share
        return state

    def _stress_minima(self, rheo) -> dict:
        from . import analysis as A

        if rheo is None or "shear_stress" not in rheo or self.n == 0:
            return {}
        lo, hi = max(0.0, float(self.time.min())), float(self.time.max())
        tmin, prom, rule = A.stress_minima(rheo["time"], rheo["shear_stress"], t_range=(lo, hi))
        return {"stress_minima/time": tmin}

    def _append(self, *, path: Path | None = None, res: dict | None = None, t: float = np.nan,
                compute_s: float = 0.0, failed=None, rheology_only: bool = False) -> int:
        """Commit one segment: a file's maps (or a failed file's alert, or the rheology log)."""
        from . import dataset as D

        t_commit0 = time.perf_counter()
        number = D.next_segment_number(self.o.out)
        alerts: dict[str, list] = {k: [] for k in ALERT_FIELDS}
        ledger, kwargs, saved = None, {}, None
        if failed is not None:
            ledger, kwargs = self._failed_entry(failed, alerts)
        elif res is not None:
            meta, rows, st = self._rows_for(res, t)
            # running arrays first (the tables cover the new maps); rolled back if the commit fails
            saved = self._snapshot()
            try:
                ledger, kwargs = self._grow(path, res, t, compute_s, meta, rows, st, alerts)
            except BaseException:
                self._rollback(saved)
                raise
        if self._rheo is not None and (self._rheo_dirty or rheology_only):
            kwargs["rheology"] = self._rheo
        if rheology_only:
            kwargs.setdefault("attrs", {"kind": "rheology"})
            if self.n:
                kwargs["state"] = self._stress_minima(self._rheo)
        kwargs.update(_columns(alerts, ledger))
        t_write0 = time.perf_counter()
        try:
            seg = D.append_segment(self.o.out, number, **kwargs)
        except BaseException:
            if saved is not None:
                self._rollback(saved)
            raise
        commit_s = time.perf_counter() - t_commit0
        write_s = time.perf_counter() - t_write0
        if "rheology" in kwargs:
            self._rheo_dirty = False
            self._rheo_committed_at = time.monotonic()
        self._record(seg, path=path, res=res, t=t, failed=failed, compute_s=compute_s, commit_s=commit_s,
                     write_s=write_s)
        if self.o.compact_every and self._segments_since_compact >= self.o.compact_every:
            self._compact()
        return 1 if res is not None else 0

    def _snapshot(self) -> tuple:
        """The running arrays, to roll back to when a commit fails."""
        return (self.n, self.time, self.sector, self.phi, dict(self.labels), self.umap,
                getattr(self, "_classes", None))

    def _rollback(self, saved: tuple) -> None:
        (self.n, self.time, self.sector, self.phi, self.labels, self.umap, self._classes) = saved

    def _failed_entry(self, failed, alerts: dict) -> tuple[dict, dict]:
        """The ledger row, alert and segment attributes of a file that failed for good."""
        fpath, seen, message = failed
        ledger = {"file": [fpath.name], "size": [seen.size], "mtime_ns": [seen.mtime_ns], "n_maps": [0],
                  "status": ["failed"], "start_time": [""], "time_s": [np.nan], "message": [message],
                  "utc": [_utc_now()], "folder": [str(Path(self.o.folder).resolve())]}
        for k, v in zip(ALERT_FIELDS, (_utc_now(), "file failed", fpath.name, -1, message)):
            alerts[k].append(v)
        return ledger, {"attrs": {"file": fpath.name, "kind": "failed file"}}

    def _grow(self, path: Path, res: dict, t: float, compute_s: float, meta, rows, st, alerts: dict) -> tuple[dict, dict]:
        """Extend the running arrays (time, sector, phi, classes, labels, UMAP) by a file's new maps and
        build its segment: the recomputed tables, novelty alerts, the ledger row and the
        :func:`ainerd_core.dataset.append_segment` arguments. The caller rolls back on failure."""
        n_old, phi_old, classes_old = self.n, self.phi, getattr(self, "_classes", None)
        n_new = res["maps"].shape[0]
        self.n += n_new
        self.time = np.concatenate([self.time, meta["time"]])
        self.sector = np.concatenate([self.sector, np.asarray(meta["sector"], np.int32)])
        self.phi = np.concatenate([self.phi, meta["phi"]])
        classes_old = classes_old if classes_old is not None else self._classes_of(phi_old)
        self._classes = np.concatenate([classes_old, np.asarray(rows["sector_class"]).astype(str)])
        for kk in list(self.reference.centroids if self.reference else []):
            name = "labels" if kk == self.reference.k else f"labels_k{kk}"
            old = self.labels.get(kk, np.full(n_old, -1, np.int32))
            self.labels[kk] = np.concatenate([old, rows[name]])
        if "umap" in rows:
            old = self.umap if self.umap is not None else np.full((n_old, 2), np.nan, np.float32)
            self.umap = np.concatenate([old, rows["umap"]])
        state = {**st["state"], **self._tables()}
        rheo = self._rheo if self._rheo is not None else self.rheology_in
        state.update(self._stress_minima(rheo))
        novel = rows.get("novelty/score")
        if novel is not None:
            threshold = _novel_threshold()
            for i in np.flatnonzero(np.asarray(novel) >= threshold):
                for k, v in zip(ALERT_FIELDS, (_utc_now(), "novel map", path.name, n_old + int(i),
                                               f"novelty {float(novel[i]):.3f} >= {threshold} "
                                               f"({meta['source'][i]})")):
                    alerts[k].append(v)
        seen = self._seen.get(path.name, _Seen(0, 0, 0))
        folder = str(Path(self.o.folder).resolve())
        ledger = {"file": [path.name], "size": [int(seen.size)], "mtime_ns": [int(seen.mtime_ns)],
                  "n_maps": [n_new], "status": ["ok"], "start_time": [str(res.get("start_time", ""))],
                  "time_s": [float(t)], "message": [""], "utc": [_utc_now()], "folder": [folder]}
        return ledger, dict(maps=res["maps"], meta=meta, rows=rows, state=state, state_attrs=st["attrs"],
                            attrs={"file": path.name, "kind": "maps", "folder": folder, "compute_s": float(compute_s)})

    def _record(self, seg, *, path, res, t, failed, compute_s, commit_s, write_s) -> None:
        """Log a committed segment (printed, and in the bounded event list the status page shows)."""
        event = {"segment": seg.name, "utc": _utc_now(), "wall": time.time(), "compute_s": compute_s,
                 "commit_s": commit_s, "write_s": write_s}
        if failed is not None:
            self._failed[failed[0].name] = (failed[1].size, failed[1].mtime_ns)
            event.update(kind="failed", file=failed[0].name, message=failed[2])
            self.say(f"{failed[0].name}: FAILED after {failed[1].attempts} attempts, reported: {failed[2]}")
        elif res is not None:
            self._done.add(path.name)
            event.update(kind="maps", file=path.name, n_maps=int(res["maps"].shape[0]), time_s=float(t))
            cpu = res.get("compute_cpu_s")
            self.say(f"{path.name}: {res['maps'].shape[0]} maps at t = {t:.1f} s -> {seg.name} "
                     f"(compute {compute_s:.2f} s" + (f" = {cpu:.2f} CPU s" if cpu is not None else "")
                     + f", commit {commit_s:.3f} s of which write {write_s:.3f} s; {self.n} maps)")
            self._segments_since_compact += 1
        else:
            event.update(kind="rheology")
        self.events.append(event)
        if len(self.events) > 1000:
            del self.events[:500]  # bounded: the watcher runs for days

    def _compact(self) -> None:
        from . import dataset as D

        self.say(f"compacting {self._segments_since_compact} segments into the base file")
        D.compact(self.o.out)
        self._segments_since_compact = 0
        st = Path(self.o.out).stat()
        self._out_key = (st.st_mtime_ns, st.st_size)  # our own rewrite: nothing to reload
        if self.reference is not None and Path(self.reference.path).resolve() == Path(self.o.out).resolve():
            self.reference.key = self._out_key

    def _classes_of(self, phi) -> np.ndarray:
        from .geometry import sector_class

        tol = float(self.reference.attrs.get("sector_tolerance_deg", 10.0)) if self.reference else 10.0
        if len(phi) == 0:
            return np.zeros(0, dtype="<U9")
        return np.asarray(sector_class(np.asarray(phi, float), float(self.o.flow_axis_deg), tol)).astype(str)


def _columns(alerts: dict, ledger: dict | None) -> dict:
    """The segment's ``alerts`` (when any) and ``ledger`` (when given) lists as arrays (text as objects)."""
    out = {}
    if any(alerts.values()):
        out["alerts"] = {k: np.asarray(v, dtype=object if k in ("utc", "kind", "file", "message") else None)
                         for k, v in alerts.items()}
    if ledger is not None:
        out["ledger"] = {k: np.asarray(v, dtype=object if k in ("file", "status", "start_time", "message",
                                                                "utc", "folder") else None)
                         for k, v in ledger.items()}
    return out


def _novel_threshold() -> float:
    try:
        from .novelty import NOVEL_THRESHOLD
    except ImportError:
        return 0.99
    return float(NOVEL_THRESHOLD)


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="folder the correlator writes result files into")
    parser.add_argument("--out", required=True, type=Path, help="live dataset (.h5); created if missing, else appended")
    parser.add_argument("--reference", type=Path, default=None,
                        help="precomputed dataset whose clusters and UMAP the new maps are placed into "
                             "(default: --out itself when it holds precomputed results)")
    parser.add_argument("--model", default=None, help="autoencoder checkpoint (default: the reference's, else the shipped weights)")
    t = parser.add_mutually_exclusive_group(required=True)
    t.add_argument("--cessation-time", metavar="ISO|first",
                   help="time of shear cessation (ISO 8601); 'first' = the start of the first file taken")
    t.add_argument("--time-table", type=Path, metavar="CSV",
                   help="CSV file,time_s (re-read for every file: it may grow during the run)")
    parser.add_argument("--rheology", type=Path, default=None, help="rheometer log to follow as it grows")
    parser.add_argument("--rheology-offset", type=float, default=0.0, metavar="SECONDS",
                        help="added to the rheometer clock to reach the XPCS clock (default 0)")
    parser.add_argument("--rheology-format", default="auto", help="auto | csv | rheocompass (default auto)")
    parser.add_argument("--q-index", default="all", help="q rows to keep: 'all' (default) or e.g. '0,2'")
    parser.add_argument("--diagonal-fix", action="store_true", help="replace the C2 diagonal by its neighbours' mean")
    parser.add_argument("--flow-axis-deg", type=float, default=90.0, help="azimuth of the flow direction (default 90)")
    parser.add_argument("--sector-width-deg", type=float, default=20.0, help="sector width, degrees (default 20)")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between folder scans (default 0.25)")
    parser.add_argument("--stable", type=float, default=1.0,
                        help="seconds a file's size and mtime must stay unchanged before it is read (default 1)")
    parser.add_argument("--retries", type=int, default=3, help="attempts on an unreadable file before reporting it (default 3)")
    parser.add_argument("--retry-interval", type=float, default=2.0, help="seconds between attempts (default 2)")
    parser.add_argument("--no-dynamics", action="store_true", help="skip the per-map dynamics fit")
    parser.add_argument("--celery", action="store_true",
                        help="hand per-file work to Celery workers (broker: --broker or AINERD_REDIS_URL)")
    parser.add_argument("--broker", default=None, help="Celery broker URL (default: AINERD_REDIS_URL)")
    parser.add_argument("--compact-every", type=int, default=0, metavar="N",
                        help="merge the segments into the base file every N files (default 0: never)")
    parser.add_argument("--once", action="store_true", help="one pass over the folder, then exit")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="S",
                        help="exit after S seconds without a new file (default: run until interrupted)")
    parser.add_argument("--title", default=None, help="dataset title (default: the file name)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def run(args) -> int:
    opts = WatchOptions(folder=args.folder, out=args.out, reference=args.reference, model_path=args.model,
                        cessation=args.cessation_time, time_table=args.time_table, rheology=args.rheology,
                        rheology_offset=args.rheology_offset, rheology_format=args.rheology_format,
                        q_index=args.q_index, diagonal_fix=args.diagonal_fix, flow_axis_deg=args.flow_axis_deg,
                        sector_width_deg=args.sector_width_deg, poll_s=args.poll, stable_s=args.stable,
                        retries=args.retries, retry_s=args.retry_interval, celery=args.celery, broker=args.broker,
                        compact_every=args.compact_every, dynamics=not args.no_dynamics, verbose=not args.quiet,
                        title=args.title)
    with Watcher(opts) as w:
        try:
            n = w.run(once=args.once, idle_exit_s=args.idle_exit)
        except KeyboardInterrupt:
            w.say("stopped")
            return 0
    w.say(f"done: {n} files appended")
    return 0
