"""Which clustering a view shows: a precomputed k, or a re-clustering result of this session.

A re-clustering run on ``/clusters`` is saved on the server as one ``.npz`` per result under
``<instance_dir>/clusterings/<dataset id>/<result id>.npz`` (labels (N,) int32 + a JSON
description), named by a random id such as ``hdbscan-3f2a9c1b``. The browser keeps the ids it
created in a session store (``SESSION_STORE``, the tab's sessionStorage), so the timeline and
sectors pages offer them next to the precomputed k; the id is what ``?k=`` holds in the URL. A
result is bound to the dataset file it was computed on (``DatasetEntry.version``): after the
file is replaced, the result is not offered any more. Results are kept for ``KEEP_DAYS`` days
and at most ``KEEP_PER_DATASET`` per dataset (the newest); every save prunes the older ones
(:func:`prune`), so a public instance's disk does not fill with abandoned runs. A link holding a
pruned id falls back to the precomputed k.

A choice is described by what it is (:func:`describe`): ``"k-means, k = 5"`` for the
precomputed labels, ``"HDBSCAN: 2 clusters found (+ 13 noise)"`` for a density method, never
"k = 4" for a result that found 2.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

import numpy as np

#: id of the dcc.Store (storage_type="session") holding the result ids this tab created
SESSION_STORE = "session-clusterings"

ALGORITHM_NAMES = {"kmeans": "k-means", "spectral": "spectral", "agglomerative": "agglomerative (Ward)",
                   "birch": "BIRCH", "gmm": "Gaussian mixture", "hdbscan": "HDBSCAN", "optics": "OPTICS"}
#: algorithms whose number of clusters is found, not given
DENSITY = ("hdbscan", "optics")
_ID = re.compile(r"^([a-z]{2,16})-([0-9a-f]{6,16})$")
#: a saved result older than this is deleted at the next save for its dataset (days)
KEEP_DAYS = 7.0
#: at most this many results per dataset are kept (the newest)
KEEP_PER_DATASET = 200
#: a temporary file of an interrupted save older than this is deleted (seconds)
_TMP_GRACE_S = 3600.0


def _folder(instance_dir, dataset_id: str) -> Path:
    return Path(instance_dir) / "clusterings" / dataset_id


def is_result_id(value) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


def save(instance_dir, entry, labels, algorithm: str, k_requested: int) -> str:
    """Store a result for ``entry``; returns its id. Written atomically (temp name, rename)."""
    labels = np.asarray(labels, dtype=np.int32)
    if labels.shape != (entry.n_maps,):
        raise ValueError(f"labels must be ({entry.n_maps},), got {labels.shape}")
    if algorithm not in ALGORITHM_NAMES:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    folder = _folder(instance_dir, entry.id)
    folder.mkdir(parents=True, exist_ok=True)
    rid = f"{algorithm}-{secrets.token_hex(4)}"
    found = int(np.unique(labels[labels >= 0]).size)
    info = {"algorithm": algorithm, "k_requested": int(k_requested), "n_clusters": found,
            "noise": int((labels < 0).sum()), "dataset": entry.id, "version": entry.version}
    tmp = folder / f".{rid}.tmp.npz"
    np.savez(tmp, labels=labels, info=np.array(json.dumps(info)))
    tmp.rename(folder / f"{rid}.npz")
    prune(folder)
    return rid


def prune(folder, now: float | None = None, *, suffix: str = ".npz", is_id=None) -> int:
    """Delete the results in ``folder`` older than ``KEEP_DAYS`` days or beyond the newest
    ``KEEP_PER_DATASET``, and leftovers of interrupted saves; returns how many files went.
    ``now`` is a UNIX time in seconds (default: the clock). ``suffix`` and ``is_id`` (a test of
    the file's stem) say which files are results (default: re-clustering results; the uploaded
    targets of :mod:`dashboard.uploads` use the same policy)."""
    now = time.time() if now is None else now
    is_id = is_id or is_result_id
    results, removed = [], 0
    for path in Path(folder).iterdir():
        try:
            age_s = now - path.stat().st_mtime
        except FileNotFoundError:  # pruned by another worker meanwhile
            continue
        if path.name.startswith(".") and path.name.endswith(f".tmp{suffix}"):
            stale = age_s > _TMP_GRACE_S
        elif path.suffix == suffix and is_id(path.stem):
            results.append((age_s, path))
            stale = age_s > KEEP_DAYS * 86400.0
        else:
            continue
        if stale:
            removed += _unlink(path)
    fresh = sorted((a, p) for a, p in results if a <= KEEP_DAYS * 86400.0)
    for _, path in fresh[KEEP_PER_DATASET:]:
        removed += _unlink(path)
    return removed


def _unlink(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0


def load(instance_dir, entry, rid) -> dict | None:
    """``{"labels": (N,) int32, "info": {...}}`` of a result of this dataset file, or None."""
    if entry is None or not is_result_id(rid):
        return None
    path = _folder(instance_dir, entry.id) / f"{rid}.npz"

    def read():
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                labels = np.asarray(z["labels"], dtype=np.int32)
                info = json.loads(str(z["info"]))
        except (OSError, ValueError, KeyError):
            return None
        if info.get("version") != entry.version or labels.shape != (entry.n_maps,):
            return None  # computed on another version of the file
        return {"labels": labels, "info": info}
    # cached per dataset entry (dropped when the file changes); misses are not cached
    got = entry.cached(f"clusterings/{rid}", read)
    if got is None:
        entry._cache.pop(f"clusterings/{rid}", None)
    return got


def describe_info(info: dict) -> str:
    """``"HDBSCAN: 2 clusters found (+ 13 noise)"`` / ``"spectral, k = 6"``."""
    name = ALGORITHM_NAMES.get(info.get("algorithm"), str(info.get("algorithm")))
    found, noise = int(info.get("n_clusters", 0)), int(info.get("noise", 0))
    if info.get("algorithm") in DENSITY or found != int(info.get("k_requested", found)):
        text = f"{name}: {found} cluster{'s' if found != 1 else ''} found"
    else:
        text = f"{name}, k = {found}"
    return text + (f" (+ {noise} noise)" if noise else "")


def describe(entry, choice, instance_dir=None) -> str:
    """What a choice (an int k or a result id) is, for titles and legends."""
    if is_result_id(choice):
        got = load(instance_dir, entry, choice) if instance_dir is not None else None
        return describe_info(got["info"]) + " (this session)" if got else f"{choice} (not available)"
    return f"k-means, k = {int(choice)}"


def options(entry, session_ids, instance_dir) -> list[dict]:
    """Radio options of this session's results for ``entry`` (value = result id)."""
    out = []
    for rid in session_ids or []:
        got = load(instance_dir, entry, rid)
        if got is not None:
            out.append({"label": describe_info(got["info"]), "value": rid})
    return out


def counts_table(entry, labels) -> np.ndarray | None:
    """(T, C) maps per label at each time point (noise not counted), from ``tables/time_index``."""
    ti = entry.result("tables/time_index")
    times = entry.result("tables/times")
    if ti is None or times is None:
        return None
    labels = np.asarray(labels)
    n_labels = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    table = np.zeros((len(times), n_labels), np.int32)
    ok = labels >= 0
    np.add.at(table, (np.asarray(ti)[ok], labels[ok]), 1)
    return table


# ---------------------------------------------------------------- what a page shows
def k_options(entry, session_ids=(), instance_dir=None, current=None) -> list[dict]:
    """Radio options: the precomputed k values, then this session's re-clustering results (and
    ``current``, a result named by a shared link)."""
    chosen = entry.k
    opts = [{"label": f"k = {k}" + (" (chosen)" if k == chosen else ""), "value": k} for k in entry.available_k()]
    if instance_dir is not None:
        ids = list(session_ids or [])
        if is_result_id(current) and current not in ids:
            ids.append(current)
        opts += options(entry, ids, instance_dir)
    return opts


def pick_k(entry, wanted, instance_dir=None):
    """The clustering to show: ``wanted`` if it exists (an int k with labels, or a session
    result id of this dataset), else the chosen k (else the first available)."""
    if instance_dir is not None and is_result_id(wanted) \
            and load(instance_dir, entry, wanted) is not None:
        return wanted
    ks = entry.available_k()
    try:
        wanted = int(wanted)
    except (TypeError, ValueError):
        wanted = None
    if wanted in ks:
        return wanted
    return entry.k if entry.k in ks else (ks[0] if ks else None)


def labels_for(entry, choice, instance_dir=None):
    """(N,) labels of a choice of :func:`pick_k`."""
    if is_result_id(choice):
        got = load(instance_dir, entry, choice) if instance_dir is not None else None
        return None if got is None else got["labels"]
    return entry.labels(choice)


def counts_for(entry, choice, instance_dir=None):
    """(T, C) maps per cluster at each time point of a choice of :func:`pick_k`."""
    if is_result_id(choice):
        labels = labels_for(entry, choice, instance_dir)
        return None if labels is None else counts_table(entry, labels)
    return entry.counts(choice)


def choice_label(entry, choice, instance_dir=None) -> str:
    """Title/legend text of a choice of :func:`pick_k` ("no clustering" for None)."""
    return describe(entry, choice, instance_dir) if choice is not None else "no clustering"
