"""Saved re-clustering results: kept while fresh, pruned when old or too many, bound to the file."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ainerd_core.dataset import write_dataset
from dashboard import clusterings
from dashboard.catalog import Catalog


@pytest.fixture()
def entry(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_dataset(data / "small.h5", latents=np.random.default_rng(0).random((6, 64), dtype=np.float32),
                  meta={"time": np.arange(6, dtype=float)})
    return Catalog(data).get("small")


def _age(path, days):
    t = time.time() - days * 86400.0
    os.utime(path, (t, t))


def test_a_saved_result_loads_until_it_is_pruned_as_old(tmp_path, entry):
    inst = tmp_path / "instance"
    labels = np.array([0, 0, 1, 1, 2, -1])
    old = clusterings.save(inst, entry, labels, "hdbscan", 3)
    got = clusterings.load(inst, entry, old)
    assert got["info"]["n_clusters"] == 3 and got["info"]["noise"] == 1
    assert clusterings.describe_info(got["info"]).startswith("HDBSCAN")
    folder = inst / "clusterings" / entry.id
    _age(folder / f"{old}.npz", clusterings.KEEP_DAYS + 1)
    (folder / ".kmeans-00aa11bb.tmp.npz").write_bytes(b"interrupted")
    _age(folder / ".kmeans-00aa11bb.tmp.npz", 1)
    (folder / "notes.txt").write_text("not ours")
    _age(folder / "notes.txt", 30)
    new = clusterings.save(inst, entry, labels, "kmeans", 3)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"{new}.npz", "notes.txt"])  # old result and stale temp file gone
    fresh = Catalog(entry.path.parent).get(entry.id)  # another worker: the pruned result is not offered
    assert clusterings.load(inst, fresh, old) is None
    assert clusterings.load(inst, fresh, new) is not None


def test_at_most_keep_per_dataset_results_the_newest(tmp_path, entry, monkeypatch):
    monkeypatch.setattr(clusterings, "KEEP_PER_DATASET", 3)
    inst = tmp_path / "instance"
    labels = np.arange(6) % 2
    ids = []
    for i in range(5):
        ids.append(clusterings.save(inst, entry, labels, "kmeans", 2))
        _age(inst / "clusterings" / entry.id / f"{ids[-1]}.npz", (10 - i) / 24)  # older first
    folder = inst / "clusterings" / entry.id
    assert clusterings.prune(folder) == 0  # the last save already kept the newest 3
    assert sorted(p.stem for p in folder.iterdir()) == sorted(ids[-3:])
