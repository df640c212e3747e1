"""The dataset format: round trip, atomic writes, validation, results."""
from __future__ import annotations

import numpy as np
import pytest

from ainerd_core.dataset import (SCHEMA_VERSION, DatasetWriter, normalise_map, open_dataset, write_dataset,
                                 write_results)
from ainerd_core.errors import InputError
from ainerd_core.geometry import sector_center_deg, sector_class
from conftest import small_meta


def _maps(rng, n):
    return rng.random((n, 256, 256), dtype=np.float32)


def test_round_trip_maps_meta_rheology_truth(tmp_path, rng):
    maps = _maps(rng, 12)
    meta = small_meta(12)
    rheo = dict(time=np.linspace(-10, 100, 30), shear_stress=np.linspace(5, 1, 30), shear_rate=np.zeros(30))
    path = write_dataset(tmp_path / "d.h5", maps=maps, meta=meta, rheology=rheo,
                         truth=dict(relaxation_rate=np.arange(12.0)), source_kind="simulation",
                         flow_axis_deg=90.0, sector_width_deg=60.0, n_sectors=6, title="t")
    with open_dataset(path) as ds:
        assert ds.n_maps == 12 and ds.has_maps
        assert ds.attrs["schema_version"] == SCHEMA_VERSION
        assert ds.attrs["flow_axis_deg"] == 90.0 and ds.attrs["source_kind"] == "simulation"
        np.testing.assert_array_equal(ds.read_map(5), maps[5])
        np.testing.assert_array_equal(ds.read_maps([7, 2, 7]), maps[[7, 2, 7]])
        np.testing.assert_array_equal(np.concatenate([b for _, b in ds.iter_maps(5)]), maps)
        np.testing.assert_array_equal(ds.meta["time"], meta["time"])
        np.testing.assert_array_equal(ds.meta["sector"], meta["sector"])
        # phi derived from the sector when not given: centre of a 60-degree sector
        np.testing.assert_allclose(ds.meta["phi"], sector_center_deg(meta["sector"], 6))
        assert list(ds.meta["source"][:2]) == ["sim:0", "sim:1"]
        np.testing.assert_array_equal(ds.rheology["shear_stress"], rheo["shear_stress"])
        assert np.isnan(ds.rheology["viscosity"]).all()
        np.testing.assert_array_equal(ds.truth["relaxation_rate"], np.arange(12.0))
        assert ds._h5["c2"].chunks == (1, 256, 256)  # one map readable without loading all


def test_latents_only_dataset(tmp_path, rng):
    lat = rng.random((12, 64))
    path = write_dataset(tmp_path / "l.h5", meta=small_meta(12), latents=lat)
    with open_dataset(path) as ds:
        assert not ds.has_maps
        np.testing.assert_allclose(ds.latents, lat.astype(np.float32))
        with pytest.raises(InputError, match="latents only"):
            ds.read_map(0)


def test_failure_inside_writer_leaves_nothing(tmp_path, rng):
    target = tmp_path / "d.h5"
    with pytest.raises(RuntimeError):
        with DatasetWriter(target, 4) as w:
            w.write_maps(0, _maps(rng, 2))
            raise RuntimeError("injected crash")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_file_intact(tmp_path, rng):
    path = write_dataset(tmp_path / "d.h5", maps=_maps(rng, 6), meta=small_meta(6))
    before = path.read_bytes()
    with pytest.raises(InputError, match="never written"):
        with DatasetWriter(path, 6) as w:
            w.write_maps(0, _maps(rng, 3))
            w.set_meta(**small_meta(6))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


@pytest.mark.parametrize("bad, message", [
    (np.full((2, 256, 256), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((2, 256, 200), np.float32), "must be square"),
    (np.zeros((2, 128, 128), np.float32), "256 x 256"),
    (np.full((2, 256, 256), 3.0, np.float32), "normalised"),
])
def test_bad_maps_rejected(tmp_path, bad, message):
    with pytest.raises(InputError, match=message):
        write_dataset(tmp_path / "d.h5", maps=bad, meta=small_meta(2, 1))
    assert list(tmp_path.iterdir()) == []


def test_metadata_of_wrong_length(tmp_path, rng):
    meta = small_meta(6)
    meta["time"] = meta["time"][:4]
    with pytest.raises(InputError, match="meta/time has 4 entries but there are 6 maps"):
        write_dataset(tmp_path / "d.h5", maps=_maps(rng, 6), meta=meta)
    assert list(tmp_path.iterdir()) == []


def test_empty_rheology_rejected(tmp_path, rng):
    with pytest.raises(InputError, match="rheology log is empty"):
        write_dataset(tmp_path / "d.h5", maps=_maps(rng, 6), meta=small_meta(6),
                      rheology=dict(time=[], shear_stress=[]))


def test_results_replace_atomically(tmp_path, rng):
    maps = _maps(rng, 6)
    path = write_dataset(tmp_path / "d.h5", maps=maps, meta=small_meta(6))
    write_results(path, {"latent": np.ones((6, 4)), "labels": np.arange(6), "kmeans/inertia": [3.0, 2.0]},
                  attrs={"k": 5})
    write_results(path, {"latent": np.zeros((6, 4)), "labels": np.arange(6)[::-1]}, attrs={"k": 3})
    with open_dataset(path) as ds:
        assert ds.result_names() == ["labels", "latent"]
        assert ds.result_attrs["k"] == 3
        np.testing.assert_array_equal(ds.read_result("labels"), np.arange(6)[::-1])
        np.testing.assert_array_equal(ds.read_map(3), maps[3])  # maps survive the rewrite
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def test_corrupt_and_foreign_files(tmp_path, rng):
    path = write_dataset(tmp_path / "d.h5", maps=_maps(rng, 6), meta=small_meta(6))
    truncated = tmp_path / "t.h5"
    truncated.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(InputError, match="t.h5: not a readable HDF5 file"):
        open_dataset(truncated)
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not an AI-NERD dataset"):
        open_dataset(tmp_path / "other.h5")


def test_normalise_map():
    m = normalise_map(np.array([[1.0, 3.0], [2.0, 5.0]]))
    assert m.min() == 0 and m.max() == 1 and m.dtype == np.float32
    assert not normalise_map(np.ones((2, 2))).any()


def test_sector_classes_match_the_paper():
    sectors = np.arange(1, 19)
    classes = sector_class(sector_center_deg(sectors, 18), flow_axis_deg=90.0, tolerance_deg=10.0)
    assert list(sectors[classes == "flow"]) == [5, 14]
    assert list(sectors[classes == "vorticity"]) == [1, 9, 10, 18]
