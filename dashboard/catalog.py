"""The per-process catalog of datasets the explorer serves (cached, cheap to ask).

:class:`Catalog` scans ``config.data_dir`` for ``*.h5`` files (hidden and temporary files are
ignored), opens each through :func:`ainerd_core.dataset.open_dataset` and keeps one
:class:`DatasetEntry` per file, keyed by ``(path, mtime_ns, size, live signature)``: when
``precompute`` atomically replaces a file, or a live watcher commits a segment
(:func:`ainerd_core.dataset.live_signature`), the next request sees a new key and reads the new file (the old
handle keeps reading the old inode until it is dropped). Small arrays (metadata, rheology,
results such as ``labels``, ``umap``, ``tables/*``) are read once per entry and cached in memory;
C2 maps are never cached here: they are read one by one (:meth:`DatasetEntry.read_map`) and
rendered to PNG by :mod:`dashboard.images`, which keeps its own LRU cache of encoded images.

A dataset's id is its file name without ``.h5`` (what ``?dataset=<id>`` holds); ids are only
ever looked up in the scan, so a URL cannot name a file outside the data folder.

Usage (one catalog per process, shared by all pages)::

    catalog = Catalog(config.data_dir)
    entry = catalog.get("demo")              # DatasetEntry or None
    entry.result("labels")                   # cached (N,) int32, or None
    entry.meta["time"]; entry.has_maps; entry.attrs["flow_axis_deg"]
    entry.read_map(17)                       # (256, 256) float32 (raises if latents-only)
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from ainerd_core.results import ResultsView

log = logging.getLogger(__name__)

_MISSING = object()


class DatasetEntry(ResultsView):
    """One dataset file, opened read-only, with its small arrays cached (k, labels, counts,
    timings and provenance come from :class:`ainerd_core.results.ResultsView`).

    Attributes
    ----------
    id : str
        File name without ``.h5``.
    path : pathlib.Path
    mtime_ns, size_bytes : int
        Of the file when opened (part of the cache key and of image ids).
    version : str
        ``"<mtime_ns>-<size>"``: changes whenever the file is replaced.
    error : str or None
        Why the file could not be opened (then nothing else is available).
    """

    def __init__(self, path: Path, mtime_ns: int, size_bytes: int, live: str = ""):
        self.path = Path(path)
        self.id = self.path.stem
        self.mtime_ns = int(mtime_ns)
        self.size_bytes = int(size_bytes)
        # live datasets grow by committed segments (ainerd_core.dataset.live_signature)
        self.version = f"{self.mtime_ns:x}-{self.size_bytes:x}" + (f"-{live}" if live else "")
        self.error: str | None = None
        self._lock = threading.RLock()
        self._cache: dict[str, object] = {}
        self._ds = None
        self._model = _MISSING
        self._model_note = ""
        try:
            from ainerd_core.dataset import open_dataset

            self._ds = open_dataset(self.path)
            self.n_maps = int(self._ds.n_maps)
            self.has_maps = bool(self._ds.has_maps)
            self.attrs = dict(self._ds.attrs)
            self.has_results = bool(self._ds.has_results)
            self._result_names = set(self._ds.result_names())
            self.result_attrs = dict(self._ds.result_attrs)
        except Exception as exc:  # noqa: BLE001 - a bad file must not break the explorer
            self.error = str(exc) or type(exc).__name__
            self.n_maps, self.has_maps, self.attrs = 0, False, {}
            self.has_results, self._result_names, self.result_attrs = False, set(), {}

    def __repr__(self) -> str:
        return f"DatasetEntry({self.id!r}, n_maps={self.n_maps}, has_maps={self.has_maps})"

    # ------------------------------------------------------------------ small arrays
    def cached(self, key: str, load):
        """Compute ``load()`` once per entry (thread-safe) and cache it under ``key``
        (pages use it for derived arrays: they are dropped with the entry when the file changes)."""
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            with self._lock:
                value = self._cache.get(key, _MISSING)
                if value is _MISSING:
                    value = load() if self._ds is not None else None
                    self._cache[key] = value
        return value

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """Per-map metadata (time, sector, phi, q, source...), each (N,)."""
        return self.cached("meta", lambda: self._ds.meta) or {}

    @property
    def rheology(self) -> dict[str, np.ndarray] | None:
        """Rheology columns (time, shear_stress, ...) or None."""
        return self.cached("rheology", lambda: self._ds.rheology)

    @property
    def has_rheology(self) -> bool:
        rh = self.rheology
        return bool(rh) and "shear_stress" in rh and np.size(rh["shear_stress"]) > 0

    @property
    def truth(self) -> dict[str, np.ndarray] | None:
        return self.cached("truth", lambda: self._ds.truth)

    @property
    def live_info(self) -> dict:
        """Attributes of the last appended segment (``file``, ``committed_utc``, ``folder``...),
        {} when the dataset is not growing (see :mod:`dashboard.live`)."""
        return self.cached("live/info", lambda: self._ds.live_info) or {}

    @property
    def ledger(self) -> dict | None:
        """The live watcher's processed-files ledger (file, status, utc, ...) or None."""
        return self.cached("live/ledger", lambda: self._ds.ledger)

    @property
    def alerts(self) -> dict | None:
        """Live alerts (utc, kind, file, map, message) or None."""
        return self.cached("live/alerts", lambda: self._ds.alerts)

    def has_result(self, name: str) -> bool:
        return name in self._result_names

    def result_names(self) -> list[str]:
        return sorted(self._result_names)

    def result(self, name: str, default=None):
        """A result array (``"labels"``, ``"tables/counts_k5"``...), cached; ``default`` if absent.

        Only small arrays belong here (everything but ``latent`` of huge sets is small: 13,000
        maps x 64 floats is 3 MB). Never use it for ``model/recon_*`` stacks in a hot path.
        """
        if name not in self._result_names:
            return default
        return self.cached("results/" + name, lambda: self._ds.read_result(name))

    def result_row(self, name: str, index: int, default=None):
        """Row ``index`` of a (N, ...) result (``"dynamics/g2"``), read from the file and not
        cached (per-map curves: a whole 13,000-map stack is not wanted in memory)."""
        if name not in self._result_names:
            return default
        with self._lock:
            return self._ds.read_result_row(name, int(index), default)

    def sector_class(self) -> np.ndarray:
        """'flow' / 'vorticity' / 'other' per map (precomputed, else derived from phi)."""
        def load():
            sc = self._ds.read_result("sector_class") if "sector_class" in self._result_names else None
            if sc is None:
                from ainerd_core.geometry import sector_class

                sc = sector_class(self.meta["phi"], float(self.attrs.get("flow_axis_deg", 90.0)))
            return np.asarray(sc).astype(str)
        return self.cached("sector_class", load)

    def sector_classes_by_number(self, sectors) -> dict[int, str]:
        """Class of each sector number, from the file's ``flow_axis_deg`` and sector width."""
        from ainerd_core.geometry import sector_center_deg, sector_class

        sectors = np.asarray(sectors, dtype=int)
        n_sectors = int(self.attrs.get("n_sectors", 18) or 18)
        phi = sector_center_deg(sectors, n_sectors)
        cls = sector_class(phi, float(self.attrs.get("flow_axis_deg", 90.0)))
        return {int(s): str(c) for s, c in zip(sectors, cls)}

    def maps_at_time(self, time_index: int) -> np.ndarray:
        """Indices of the maps of one time point (an index into ``tables/times``), ordered by
        sector; empty for an index out of range."""
        def table():
            ti = self.result("tables/time_index")
            if ti is None:
                _, ti = np.unique(self.meta["time"], return_inverse=True)
            order = np.lexsort((self.meta["sector"], ti))
            bounds = np.searchsorted(ti[order], np.arange(ti.max() + 2))
            return order, bounds
        order, bounds = self.cached("timeline/maps_by_time", table)
        time_index = int(time_index)
        if not 0 <= time_index < len(bounds) - 1:
            return np.zeros(0, dtype=int)
        return order[bounds[time_index]:bounds[time_index + 1]]

    # ------------------------------------------------------------------ maps
    def read_map(self, index: int) -> np.ndarray:
        """One C2 map (size, size) float32; raises InputError for a latents-only dataset."""
        with self._lock:
            return self._ds.read_map(int(index))

    def read_maps(self, indices) -> np.ndarray:
        with self._lock:
            return self._ds.read_maps(indices)

    # ------------------------------------------------------------------ model
    def reconstruction(self, index: int) -> tuple[np.ndarray | None, str]:
        """Decode map ``index``'s latent with the dataset's model: ``(map or None, note)``.

        The model is the checkpoint named by the ``/results`` attrs (``model_path`` or
        ``model``), else the shipped demo weights; loaded once per entry on CPU. The note says
        which model was used, or why there is no reconstruction.
        """
        model, note = self._decoder()
        if model is None:
            return None, note
        from ainerd_core.model import decode

        latent = self.result("latent")
        with self._lock:  # torch uses its own threads; one decode at a time per dataset
            out = decode(model, latent[int(index):int(index) + 1])
        return np.asarray(out).reshape(out.shape[-2:]), note

    def reconstruction_status(self) -> tuple[bool, str]:
        """(whether :meth:`reconstruction` can work, a note saying which model or why not);
        loads the model once, decodes nothing."""
        model, note = self._decoder()
        return model is not None, note

    def _decoder(self):
        """(model, note saying which) when this dataset's latents can be decoded, else (None, why not)."""
        latent = self.result("latent")
        if latent is None:
            return None, "no latents were precomputed"
        model = self._load_model()
        if model is None:
            return None, self._model_note
        if int(model.latent_size) != latent.shape[1]:
            return None, (f"the model's latent size ({model.latent_size}) differs from the "
                          f"dataset's ({latent.shape[1]})")
        return model, self._model_note

    def warm_model(self) -> None:
        """Load the reconstruction model in a background thread (pages call it when they are
        shown, so the first click does not wait for torch to import)."""
        if self._model is _MISSING and self.result("latent") is not None:
            threading.Thread(target=self._load_model, name=f"warm-model-{self.id}", daemon=True).start()

    def _load_model(self):
        if self._model is _MISSING:
            with self._lock:
                if self._model is _MISSING:
                    self._model, self._model_note = model_for_latents(self)
        return self._model

    def close(self) -> None:
        if self._ds is not None:
            try:
                self._ds.close()
            except Exception:  # noqa: BLE001
                pass


def model_for_latents(entry: DatasetEntry):
    """(model or None, note) for an entry; never raises.

    The decoder must be the model that made the latents: the checkpoint
    :meth:`ainerd_core.results.ModelProvenance.resolve` finds (checksum-verified); a named
    checkpoint that is missing or changed is reported, not replaced by another model.
    """
    path, note = entry.provenance.resolve(entry.path)
    if path is None:
        return None, note
    try:
        from ainerd_core import model as model_mod

        return model_mod.load_model(path, device="cpu"), note
    except Exception as exc:  # noqa: BLE001 - torch missing, or a broken file
        log.warning("could not load model %s: %s", path, exc)
        return None, f"the model {path.name} could not be loaded ({exc})"


class Catalog:
    """All datasets of a folder, re-scanned at most every ``rescan_s`` seconds.

    Thread-safe; one per process (the explorer creates it in ``init_explorer``).
    """

    def __init__(self, data_dir, rescan_s: float = 1.0):
        self.data_dir = Path(data_dir)
        self.rescan_s = float(rescan_s)
        self._lock = threading.Lock()
        self._entries: dict[str, DatasetEntry] = {}
        self._keys: dict[str, tuple] = {}
        self._scanned_at = -1e9

    def _scan(self) -> None:
        from ainerd_core.dataset import live_signature

        files = []
        if self.data_dir.is_dir():
            for p in self.data_dir.glob("*.h5"):
                if p.name.startswith(".") or not p.is_file():
                    continue
                try:
                    st = p.stat()
                except OSError:
                    continue
                files.append((p, st.st_mtime_ns, st.st_size, live_signature(p)))
        entries, keys = {}, {}
        for p, mtime, size, live in sorted(files):
            key = (str(p), mtime, size, live)
            old = self._entries.get(p.stem)
            entries[p.stem] = old if old is not None and self._keys.get(p.stem) == key else \
                DatasetEntry(p, mtime, size, live)
            keys[p.stem] = key
        self._entries, self._keys = entries, keys

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._scanned_at >= self.rescan_s:
            with self._lock:
                if force or now - self._scanned_at >= self.rescan_s:
                    self._scan()
                    self._scanned_at = time.monotonic()

    def entries(self) -> list[DatasetEntry]:
        """Every dataset of the folder (files that failed to open included, with ``error``)."""
        self.refresh()
        return list(self._entries.values())

    def ids(self) -> list[str]:
        return [e.id for e in self.entries()]

    def get(self, dataset_id: str | None) -> DatasetEntry | None:
        """The entry of ``dataset_id``, or None if there is no such (readable) dataset."""
        if not dataset_id:
            return None
        self.refresh()
        entry = self._entries.get(str(dataset_id))
        return entry if entry is not None and entry.error is None else None

    def default_id(self) -> str | None:
        """The dataset shown when the URL names none: the first with results, else the first."""
        good = [e for e in self.entries() if e.error is None]
        for e in good:
            if e.has_results:
                return e.id
        return good[0].id if good else None

    def resolve(self, dataset_id: str | None) -> DatasetEntry | None:
        """``get(dataset_id)``, falling back to the default dataset."""
        return self.get(dataset_id) or self.get(self.default_id())
