"""One validation of C2 map stacks (ainerd_core.mapstack.check_maps), used by the writer, the
reader, the encoder and precompute: every bad input is one line naming the file."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from ainerd_core.cli import main
from ainerd_core.dataset import open_dataset, write_dataset
from ainerd_core.errors import InputError
from ainerd_core.mapstack import MapSource, check_maps
from conftest import small_meta


@pytest.mark.parametrize("bad, kwargs, message", [
    (np.zeros((2, 128, 128)), {}, "must be 256 x 256, got 128 x 128"),
    (np.zeros((2, 256, 200)), {}, "not square: 256 x 200"),
    (np.zeros(5), {}, r"shape \(N, n, n\)"),
    (np.full((1, 256, 256), 7.0), {}, r"normalised to \[0, 1\], found values 7 .. 7"),
    (np.full((1, 256, 256), np.nan), {}, "65536 NaN or infinite"),
    (np.zeros((3, 3), dtype=object), {"size": None}, "not numeric"),
    (np.zeros((2, 4, 4)), {"single": True, "size": None}, "two-dimensional"),
    (np.zeros((1, 1)), {"single": True, "size": None}, "too small"),
])
def test_bad_stacks_name_the_source(bad, kwargs, message):
    with pytest.raises(InputError, match=message) as err:
        check_maps(bad, "maps.h5", **kwargs)
    assert str(err.value).startswith("maps.h5: ") and "\n" not in str(err.value)


def test_good_stacks_come_back_as_float32_stacks():
    assert check_maps(np.zeros((256, 256))).shape == (1, 256, 256)
    assert check_maps(np.zeros((3, 1, 256, 256), np.float64)).dtype == np.float32
    assert check_maps(np.full((4, 4), 5.0), size=None, normalised=False, single=True).shape == (4, 4)
    up = np.triu(np.ones((4, 4)))
    up[np.tril_indices(4, -1)] = np.nan  # only the stored upper triangle must be finite
    check_maps(up, size=None, normalised=False, single=True, upper_triangle=True)


def test_one_map_source_for_files_and_arrays(tmp_path, rng):
    maps = rng.random((6, 256, 256)).astype(np.float32)
    path = write_dataset(tmp_path / "d.h5", maps=maps, meta=small_meta(6, 1))
    with open_dataset(path) as ds:
        for src in (MapSource(ds), MapSource(ds, keep=[4, 1], keep_limit_bytes=1 << 30), MapSource(maps)):
            assert (src.n, src.side, src.p) == (6, 256, 65536)
            np.testing.assert_array_equal(src.get([4, 1]), maps[[4, 1]])
            np.testing.assert_array_equal(np.concatenate([b for _, b in src.batches(4)]), maps.reshape(6, -1))


# --------------------------------------------------------------------------- precompute on bad input
def _good(path, n=8, size=256):
    rng = np.random.default_rng(0)
    return write_dataset(path, maps=rng.random((n, size, size)).astype(np.float32), meta=small_meta(n, 2),
                         latents=rng.random((n, 4)).astype(np.float32), map_size=size)


def _maps_128(path):
    _good(path, size=128)


def _wrong_n_maps(path):
    _good(path)
    with h5py.File(path, "r+") as f:
        f.attrs["n_maps"] = 9


def _no_time(path):
    _good(path)
    with h5py.File(path, "r+") as f:
        del f["meta/time"]


def _values_7(path):
    _good(path)
    with h5py.File(path, "r+") as f:
        f["c2"][5] = np.full((256, 256), 7.0, np.float32)


def _nan_time(path):
    _good(path)
    with h5py.File(path, "r+") as f:
        t = f["meta/time"][()]
        t[3] = np.nan
        f["meta/time"][...] = t


@pytest.mark.parametrize("make, message", [
    (_maps_128, "C2 maps must be 256 x 256, got 128 x 128"),
    (_wrong_n_maps, r"/meta/time has shape \(8,\) but n_maps is 9"),
    (_no_time, "no /meta/time"),
    (_values_7, r"must be normalised to \[0, 1\], found values .* 7"),
    (_nan_time, "/meta/time contains NaN"),
])
def test_precompute_bad_input_is_one_line_naming_the_file(tmp_path, capsys, make, message):
    path = tmp_path / "bad.h5"
    make(path)
    before = path.read_bytes()
    code = main(["precompute", str(path), "--no-model", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err
    assert __import__("re").search(message, err), err
    assert path.read_bytes() == before  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]
