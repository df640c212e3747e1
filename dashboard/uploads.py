"""Uploaded similarity targets kept on the server, so that a link shows the same search again.

An upload's search result (its neighbours in every space, thumbnail, 128 x 128 preview, notes)
is saved as ``<instance_dir>/uploads/<dataset id>/<upload id>.json`` once the background job has
searched it; the id (``up-`` + 16 hex digits of the SHA-256 of the resampled float32 target) goes
into the URL as ``?upload=``. The same map uploaded twice gets the same id. A result is bound to
the dataset file it was searched in (``DatasetEntry.version``): after the file is replaced, the
link falls back to the dataset target. Files follow the re-clustering results' policy
(:func:`dashboard.clusterings.prune`: ``KEEP_DAYS`` days, the newest ``KEEP_PER_DATASET`` per
dataset), so a public instance's disk does not fill. Nothing here is unpickled: JSON only.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from .clusterings import prune

_ID = re.compile(r"^up-[0-9a-f]{16}$")
SUFFIX = ".json"


def is_upload_id(value) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


def upload_id(target) -> str:
    """The id of a (resampled, 256 x 256) target map: ``up-`` + 16 hex digits of its SHA-256."""
    return "up-" + hashlib.sha256(np.ascontiguousarray(target, dtype=np.float32).tobytes()).hexdigest()[:16]


def _folder(instance_dir, dataset_id: str) -> Path:
    return Path(instance_dir) / "uploads" / dataset_id


def save(instance_dir, entry, target, result: dict) -> str:
    """Store an upload's search ``result`` (JSON-able) for ``entry``; returns its id. Written
    atomically (temporary name, then rename); prunes the dataset's older uploads."""
    uid = upload_id(target)
    folder = _folder(instance_dir, entry.id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uid}.{os.getpid()}.tmp{SUFFIX}"
    tmp.write_text(json.dumps({"version": entry.version, "dataset": entry.id, "result": {**result, "id": uid}}))
    tmp.replace(folder / f"{uid}{SUFFIX}")
    prune(folder, suffix=SUFFIX, is_id=is_upload_id)
    return uid


def load(instance_dir, entry, uid) -> dict | None:
    """The saved search result of upload ``uid`` in this dataset file, or None."""
    if entry is None or instance_dir is None or not is_upload_id(uid):
        return None
    path = _folder(instance_dir, entry.id) / f"{uid}{SUFFIX}"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("version") != entry.version or not isinstance(saved.get("result"), dict):
        return None  # searched in another version of the file
    return saved["result"]
