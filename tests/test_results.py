"""The /results contract (ainerd_core.results): declared once, checked on every write, read the
same way by precompute, the catalog and the pages; its documentation is generated from it."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ainerd_core import results as R
from ainerd_core.dataset import open_dataset, write_dataset
from dashboard.catalog import Catalog

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _dataset(path, n=12):
    rng = np.random.default_rng(0)
    return write_dataset(path, meta=dict(time=np.arange(n) * 60.0, sector=np.ones(n, int)),
                         latents=rng.random((n, 4)).astype(np.float32))


def test_the_documentation_is_generated_from_the_declaration():
    doc = (REPO / "docs" / "dataset-format.md").read_text()
    assert R.render_doc(doc) == doc, "run: python -m ainerd_core.results --doc docs/dataset-format.md"
    for entry in R.ENTRIES:
        assert f"`{entry.name}`" in doc


@pytest.mark.parametrize("name", ["demo.h5", "e031.h5"])
def test_precompute_writes_only_declared_entries_of_the_declared_dtypes(explorer_data, name):
    """What the real pipeline wrote passes the contract unchanged (no cast was needed)."""
    with open_dataset(explorer_data / name) as ds:
        res = R.read_results(ds)
        arrays = {n: res[n] for n in res.names}
        checked = R.check_results(arrays, res.attrs, n_maps=ds.n_maps)
        for n, arr in arrays.items():
            entry, _ = R.entry_for(n)
            if entry.dtypes != R.STR:
                assert arr.dtype.name in entry.dtypes, (n, arr.dtype)
                assert checked[n] is arr or checked[n].dtype == arr.dtype
        assert set(res.available_k()) >= {k for k in R.K_SET if k < ds.n_maps}
        for k in R.K_SET:
            assert res.labels(k).shape == (ds.n_maps,) and res.counts(k).shape[1] == k
        assert res.timings.total > 0 and res.timings.stages


def test_write_refuses_what_is_not_declared(tmp_path):
    path = _dataset(tmp_path / "d.h5")
    good = {"latent": np.zeros((12, 4)), "labels": np.arange(12) % 3, "umap": np.zeros((12, 2))}
    R.write_results(path, good, {"k": 3})
    with open_dataset(path) as ds:  # cast to the declared dtypes
        assert ds.read_result("latent").dtype == np.float32 and ds.read_result("labels").dtype == np.int32
    for bad, match in (({**good, "labels_k4x": np.zeros(12)}, "not declared"),
                       ({**good, "labels": np.zeros(11, np.int32)}, "N = 11"),
                       ({**good, "labels": np.full(12, 0.5)}, "int32 expected"),
                       ({**good, "umap": np.zeros((12, 3))}, r"shape \('N', 2\)"),
                       ({**good, "tables/counts": np.zeros((5, 4), np.int32)}, "k = 4")):
        with pytest.raises(ValueError, match=match):
            R.write_results(path, bad, {"k": 3})
    with pytest.raises(ValueError, match="attribute 'shiny' is not declared"):
        R.write_results(path, good, {"shiny": 1})
    with open_dataset(path) as ds:  # a refused write leaves the old results
        assert ds.read_result("labels").dtype == np.int32 and ds.result_attrs == {"k": 3}


def test_timings_are_stages_plus_a_measured_total():
    t = R.Timings({"1. maps pass": 10.0, "2. kmeans": 2.0}, {"1. maps pass": {"encode": 8.0}}, 13.5)
    back = R.Timings.from_attrs(t.to_attrs())
    assert back == t
    # files of the earlier layout kept the parts among the stages
    legacy = R.Timings.from_attrs({"timings_json": json.dumps({"1. maps pass (x)": 10.0, "1a. encode": 8.0,
                                                               "2. kmeans": 2.0, "total": 13.5})})
    assert legacy.stages == {"1. maps pass (x)": 10.0, "2. kmeans": 2.0}
    assert legacy.parts == {"1. maps pass (x)": {"encode": 8.0}} and legacy.total == 13.5


def test_overview_shows_the_real_total_not_a_sum(explorer_data, tmp_path):
    """The bug: the overview added up stages, sub-stages and the total itself."""
    from dashboard.pages import overview

    shutil.copy(explorer_data / "demo.h5", tmp_path / "demo.h5")
    entry = Catalog(tmp_path).get("demo")
    flat = json.loads(entry.result_attrs["timings_json"])
    total = flat["total"]
    shown = overview._timings(entry).children
    assert shown == f"{total:.1f} s"
    assert abs(sum(v for v in flat.values()) - total) > 0.05  # what the page used to show differs
    rows = overview._timing_rows(entry)
    assert rows[-1].className == "timings-total" and f"{total:.2f} s" in str(rows[-1])


def test_reclustering_reproduces_precompute_at_the_same_k_and_seed(explorer_data):
    from ainerd_core.analysis import recluster

    with open_dataset(explorer_data / "demo.h5") as ds:
        res = R.read_results(ds)
        seed, n_init = int(res.attrs["seed"]), int(res.attrs["n_init"])
        for k in sorted({res.k, *R.K_SET}):
            lab = recluster(res["latent"], k, "kmeans", res["order_feature"], seed=seed, n_init=n_init)
            np.testing.assert_array_equal(lab, res.labels(k))


def test_provenance_names_the_checkpoint(explorer_data):
    with open_dataset(explorer_data / "demo.h5") as ds:
        prov = R.read_results(ds).provenance
    assert prov.from_model and prov.path.endswith(".pt") and len(prov.sha256) == 64
    assert prov.sha256[:12] in prov.short()
    with open_dataset(explorer_data / "e031.h5") as ds:
        prov = R.read_results(ds).provenance
    assert not prov.from_model and prov.sha256 is None
