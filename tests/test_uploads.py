"""dashboard.uploads: an uploaded target's search kept on the server for its link."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from dashboard import uploads
from dashboard.clusterings import KEEP_DAYS


class Entry:
    def __init__(self, id_="demo", version="v1"):
        self.id, self.version = id_, version


def test_saved_search_comes_back_for_the_same_file_only(tmp_path, rng):
    target = rng.random((256, 256)).astype(np.float32)
    result = {"kind": "upload", "name": "t.npy", "spaces": {"raw": {"index": [3, 1], "distance": [0.5, 0.7]}}}
    uid = uploads.save(tmp_path, Entry(), target, result)
    assert uploads.is_upload_id(uid) and uid == uploads.upload_id(target)  # same map, same id
    assert uploads.upload_id(target + 1e-3) != uid
    got = uploads.load(tmp_path, Entry(), uid)
    assert got["spaces"] == result["spaces"] and got["id"] == uid
    assert uploads.load(tmp_path, Entry(version="v2"), uid) is None       # the file was replaced
    assert uploads.load(tmp_path, Entry("other"), uid) is None            # another dataset
    for bad in ("../../etc/passwd", "up-XYZ", "up-0123", None, 7):         # never a path from the client
        assert uploads.load(tmp_path, Entry(), bad) is None
    assert not list((tmp_path / "uploads" / "demo").glob(".*"))          # no temporary file left


def test_a_corrupt_file_is_ignored_and_old_uploads_are_pruned(tmp_path, rng):
    uid = uploads.save(tmp_path, Entry(), rng.random((8, 8)), {"name": "a"})
    path = tmp_path / "uploads" / "demo" / f"{uid}.json"
    path.write_text("{not json")
    assert uploads.load(tmp_path, Entry(), uid) is None
    old = time.time() - (KEEP_DAYS + 1) * 86400
    os.utime(path, (old, old))
    fresh = uploads.save(tmp_path, Entry(), rng.random((8, 8)), {"name": "b"})
    assert not path.exists() and uploads.load(tmp_path, Entry(), fresh)["name"] == "b"
    assert json.loads((tmp_path / "uploads" / "demo" / f"{fresh}.json").read_text())["dataset"] == "demo"
