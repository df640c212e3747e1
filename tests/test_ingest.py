"""``python -m ainerd_core ingest``: APS files (both layouts), stacks, the published folder,
the per-map pipeline (symmetrise, diagonal fix, area averaging) and every kind of bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ainerd_core.dataset import open_dataset
from ainerd_core.geometry import sector_class
from ainerd_core.errors import InputError
from ainerd_core.readers.resample import check_map, fix_diagonal, prepare_map, resample, symmetrise_upper
from beamline_fixtures import c2_full, upper, write_aps_legacy, write_aps_nexus, write_rheocompass

REPO = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ainerd_core", "ingest", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd or REPO, timeout=120)


def ok(*args):
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    return r


# --------------------------------------------------------------------------- per-map pipeline
def test_symmetrise_mirrors_upper_without_doubling_diagonal():
    full = c2_full(40, 4.0)
    h = upper(full)
    assert np.all(np.tril(h, -1) == 0)
    s = symmetrise_upper(h)
    np.testing.assert_array_equal(s, s.T)                       # lower = mirror of upper
    np.testing.assert_allclose(np.diagonal(s), np.diagonal(full), rtol=1e-6)   # not doubled
    np.testing.assert_allclose(s, full, rtol=1e-6)
    # a file that stores the full symmetric map gives the same, not a doubled one
    np.testing.assert_allclose(symmetrise_upper(full), s, rtol=1e-6)


def test_values_below_the_diagonal_are_ignored():
    full = c2_full(30, 4.0)
    h = upper(full)
    h[np.tril_indices(30, -1)] = np.nan        # not part of the stored data
    check_map("f.h5", h, upper_triangle=True)  # accepted
    np.testing.assert_allclose(prepare_map(h, upper_triangle=True)[0], prepare_map(upper(full), upper_triangle=True)[0])
    with pytest.raises(InputError, match="1 NaN"):
        h[3, 5] = np.nan                         # in the stored triangle: refused
        check_map("f.h5", h, upper_triangle=True)


def test_diagonal_fix_uses_the_two_off_diagonal_neighbours():
    full = symmetrise_upper(upper(c2_full(30, 4.0)))
    fixed = fix_diagonal(full)
    i = np.arange(1, 29)
    np.testing.assert_allclose(np.diagonal(fixed)[1:-1], (full[i - 1, i] + full[i, i + 1]) / 2)
    assert fixed[0, 0] == full[0, 1] and fixed[-1, -1] == full[-2, -1]
    off = ~np.eye(30, dtype=bool)
    np.testing.assert_array_equal(fixed[off], full[off])        # nothing else touched
    assert np.diagonal(fixed).mean() < np.diagonal(full).mean() - 0.1   # the spike is gone


def _area_reference(a, size):
    """Brute force: overlap-weight matrix W (size x n), out = W a W.T / (n/size)^2."""
    n = a.shape[0]
    edges = np.arange(size + 1) * n / size
    w = np.zeros((size, n))
    for i in range(size):
        for j in range(n):
            w[i, j] = max(0.0, min(edges[i + 1], j + 1) - max(edges[i], j))
    w /= n / size
    return w @ a @ w.T


@pytest.mark.parametrize("n", [300, 1000])
def test_area_averaging_non_multiple_sizes(n, rng):
    a = rng.random((n, n))
    out = resample(a, 256)
    assert out.shape == (256, 256)
    np.testing.assert_allclose(out.mean(), a.mean(), rtol=1e-12)         # mean preserved
    np.testing.assert_allclose(out, _area_reference(a, 256), rtol=1e-9, atol=1e-12)
    assert out.min() >= a.min() and out.max() <= a.max()


def test_area_averaging_multiple_is_block_mean(rng):
    a = rng.random((512, 512))
    np.testing.assert_allclose(resample(a, 256), a.reshape(256, 2, 256, 2).mean(axis=(1, 3)), rtol=1e-12)
    # area averaging, not decimation: a checkerboard averages to a flat grey
    board = (np.indices((512, 512)).sum(0) % 2).astype(float)
    np.testing.assert_allclose(resample(board, 256), 0.5)


def test_small_maps_interpolated_between_pixel_centres():
    n = 64
    ramp = np.tile(np.arange(n, dtype=float), (n, 1))
    out = resample(ramp, 256)
    assert out.shape == (256, 256)
    x = np.clip((np.arange(256) + 0.5) * n / 256 - 0.5, 0, n - 1)
    np.testing.assert_allclose(out[0], x)       # linear in -> linear out, edges clamped
    np.testing.assert_allclose(out[:, 100], out[0, 100])


def test_prepare_map_normalises():
    m, lo, hi = prepare_map(upper(c2_full(300, 5.0)), upper_triangle=True, diagonal_fix=True)
    assert m.dtype == np.float32 and m.shape == (256, 256)
    assert m.min() == 0.0 and m.max() == 1.0 and lo < hi
    np.testing.assert_allclose(m, m.T, atol=1e-6)


# --------------------------------------------------------------------------- APS
def _expected(full, diagonal_fix=False):
    return prepare_map(upper(full), upper_triangle=True, diagonal_fix=diagonal_fix)[0]


def test_aps_nexus_skipped_cell_non_multiple_size(tmp_path):
    phis = [10.0, 90.0, 190.0, 270.0]
    truths = []
    for k, start in enumerate(["2024-03-01T10:00:30", "2024-03-01T10:01:30", "2024-03-01T10:00:00+00:00"]):
        # 2 q x 4 phi, cell 3 (q row 0, phi 270) is empty: labels 1..7 skip it
        truths.append(write_aps_nexus(tmp_path / f"A{k}.h5", size=300, phi_values=phis, skip=(3,),
                                      start_time=start, seed=k, frame_time=0.002, stride=2, avg=3))
    out = tmp_path / "out.h5"
    ok("aps", *(tmp_path / f"A{k}.h5" for k in range(3)), "--out", out,
       "--cessation-time", "2024-03-01T09:59:30Z", "--flow-axis-deg", "90")
    with open_dataset(out) as ds:
        m = ds.meta
        assert ds.n_maps == 21 and ds.attrs["source_kind"] == "aps-8idi"
        assert ds.attrs["c2_time_step_s"] == pytest.approx(0.002 * 2 * 3 * 300 / 256)
        # sector-major, then q, then time
        key = np.stack([m["sector"], m["q_index"], m["time"]])
        assert all(tuple(key[:, i]) <= tuple(key[:, i + 1]) for i in range(20))
        np.testing.assert_array_equal(np.unique(m["time"]), [30.0, 60.0, 120.0])
        # q/phi come from the index mapping: label 4 is grid cell 4 = (q row 1, phi 10)
        row = np.flatnonzero((m["roi_label"] == 4) & (m["time"] == 60.0))[0]
        assert m["q"][row] == pytest.approx(0.008) and m["phi"][row] == 10.0 and m["sector"][row] == 1
        assert not np.any((m["q_index"] == 0) & (m["phi"] == 270.0))   # the skipped cell
        assert set(m["sector"]) == {1, 5, 10, 14}
        # maps: mirrored, resampled, normalised exactly like the pipeline
        label_time = {(t, lab): i for i, (t, lab) in enumerate(zip(m["time"], m["roi_label"]))}
        for k, t in enumerate([60.0, 120.0, 30.0]):
            for label, (_, _, full) in truths[k].items():
                got = ds.read_map(label_time[(t, label)])
                np.testing.assert_allclose(got, _expected(full), atol=1e-6)
                np.testing.assert_allclose(got, got.T, atol=1e-6)
        assert "A1.h5:c2_00004" in m["source"][label_time[(120.0, 4)]]


def test_aps_q_index_time_table_and_diagonal_fix(tmp_path):
    t0 = write_aps_nexus(tmp_path / "x.h5", size=80, phi_values=[10.0, 190.0], start_time="")
    table = tmp_path / "times.csv"
    table.write_text("file,time_s\nx.h5,42.5\n")
    out = tmp_path / "q1.h5"
    ok("aps", tmp_path / "x.h5", "--out", out, "--time-table", table, "--q-index", "1", "--diagonal-fix")
    with open_dataset(out) as ds:
        assert ds.n_maps == 2 and set(ds.meta["q_index"]) == {1}
        np.testing.assert_array_equal(ds.meta["time"], [42.5, 42.5])
        np.testing.assert_array_equal(ds.meta["sector"], [1, 10])
        np.testing.assert_allclose(ds.read_map(0), _expected(t0[3][2], diagonal_fix=True), atol=1e-6)
        assert not np.allclose(ds.read_map(0), _expected(t0[3][2]), atol=1e-3)


def test_aps_legacy_layout(tmp_path):
    truth = write_aps_legacy(tmp_path / "old.h5", size=512, start_time="2021-06-01T09:00:10")
    out = tmp_path / "old_out.h5"
    ok("aps", tmp_path / "old.h5", "--out", out, "--cessation-time", "2021-06-01T09:00:00")
    with open_dataset(out) as ds:
        m = ds.meta
        assert ds.n_maps == 4
        np.testing.assert_array_equal(m["sector"], [1, 1, 10, 10])
        np.testing.assert_array_equal(m["q_index"], [0, 1, 0, 1])
        np.testing.assert_array_equal(m["time"], 10.0)
        assert ds.attrs["c2_time_step_s"] == pytest.approx(0.005 * 2 * 512 / 256)
        for i, b in enumerate(m["roi_label"]):
            np.testing.assert_allclose(ds.read_map(i), _expected(truth[b][2]), atol=1e-6)


def test_aps_with_rheocompass_log(tmp_path):
    # no frame time in this file: no c2_time_step_s, but nothing else missing
    write_aps_nexus(tmp_path / "r.h5", size=64, phi_values=[90.0], q_values=[0.01],
                    drop=("/entry/instrument/detector_1/frame_time",))
    log = tmp_path / "rheo.txt"
    write_rheocompass(log, [dict(time=np.arange(5.0) * 10, shear_rate=np.zeros(5),
                                 shear_stress=np.array([5.5, 4.5, 4.0, 3.5, 3.0]), viscosity=np.zeros(5))])
    out = tmp_path / "rr.h5"
    ok("aps", tmp_path / "r.h5", "--out", out, "--cessation-time", "first", "--rheology", log,
       "--rheology-offset", "-15")
    with open_dataset(out) as ds:
        np.testing.assert_allclose(ds.rheology["time"], np.arange(5.0) * 10 - 15)
        np.testing.assert_allclose(ds.rheology["shear_stress"], [5.5, 4.5, 4.0, 3.5, 3.0])
        assert ds.meta["sector"][0] == 5
        assert "c2_time_step_s" not in ds.attrs and "c2_time_step_s" not in ds.meta


def test_aps_folder_input_never_reads_its_own_output(tmp_path):
    write_aps_nexus(tmp_path / "a.h5", size=64, phi_values=[10.0], q_values=[0.01])
    write_aps_nexus(tmp_path / "b.h5", size=64, phi_values=[10.0], q_values=[0.01],
                    start_time="2024-03-01T10:01:00")
    for _ in range(2):  # the second run sees out.h5 in the folder and must skip it
        ok("aps", tmp_path, "--out", tmp_path / "out.h5", "--cessation-time", "first")
    with open_dataset(tmp_path / "out.h5") as ds:
        np.testing.assert_array_equal(ds.meta["time"], [0.0, 60.0])


# --------------------------------------------------------------------------- stack
@pytest.mark.parametrize("kind", ["npy", "h5"])
def test_stack(tmp_path, kind):
    maps = np.stack([c2_full(200, 3.0 + i, seed=i) for i in range(4)])
    if kind == "npy":
        path = tmp_path / "maps.npy"
        np.save(path, maps)
    else:
        path = tmp_path / "maps.h5"
        with h5py.File(path, "w") as f:
            f["c2"] = maps
            f["other"] = np.zeros(3)
    meta = tmp_path / "meta.csv"
    meta.write_text("time,phi,q,source\n60,190,0.01,a\n0,190,0.01,b\n0,10,0.01,c\n60,10,0.01,d\n")
    out = tmp_path / "s.h5"
    ok("stack", path, "--meta", meta, "--out", out, "--c2-time-step", "0.1")
    with open_dataset(out) as ds:
        assert list(ds.meta["source"]) == ["c", "d", "b", "a"]          # sector-major, then time
        np.testing.assert_array_equal(ds.meta["sector"], [1, 1, 10, 10])
        np.testing.assert_array_equal(ds.meta["time"], [0, 60, 0, 60])
        assert ds.attrs["c2_time_step_s"] == pytest.approx(0.1 * 200 / 256)
        np.testing.assert_allclose(ds.read_map(0), prepare_map(maps[2])[0], atol=1e-6)


# --------------------------------------------------------------------------- published
def test_published_e031(e031_dir, tmp_path):
    out = tmp_path / "e031.h5"
    ok("published", e031_dir, "--out", out)
    raw = np.genfromtxt(e031_dir / "rheology.csv", delimiter=",", names=True)
    with open_dataset(out) as ds:
        assert ds.n_maps == 900 and not ds.has_maps
        assert ds.attrs["source_kind"] == "ainerd-published" and ds.attrs["flow_axis_deg"] == 90.0
        np.testing.assert_array_equal(np.unique(ds.meta["sector"]), np.arange(1, 19))
        np.testing.assert_allclose(ds.latents, np.load(e031_dir / "latents_64.npy").astype(np.float32))
        np.testing.assert_array_equal(ds.meta["sector"], np.load(e031_dir / "sector.npy"))
        np.testing.assert_array_equal(ds.meta["time"], np.load(e031_dir / "start_time_s.npy"))
        np.testing.assert_allclose(ds.meta["phi"][ds.meta["sector"] == 5], 90.0)
        np.testing.assert_allclose(ds.rheology["time"], raw["time"] - 200.0)
        np.testing.assert_allclose(ds.rheology["shear_stress"], raw["shear_stress"])
        classes = sector_class(ds.meta["phi"], ds.attrs["flow_axis_deg"])
        assert set(ds.meta["sector"][classes == "flow"]) == {5, 14}
        assert set(ds.meta["sector"][classes == "vorticity"]) == {1, 9, 10, 18}
    ok("published", e031_dir, "--out", out, "--rheology-offset", "-190")
    with open_dataset(out) as ds:
        np.testing.assert_allclose(ds.rheology["time"], raw["time"] - 190.0)
    # another log given by the user: its own clock, offset 0 unless given
    log = tmp_path / "other.csv"
    log.write_text("time,shear_stress\n0,10\n10,9\n")
    ok("published", e031_dir, "--out", out, "--rheology", log)
    with open_dataset(out) as ds:
        np.testing.assert_allclose(ds.rheology["time"], [0, 10])


# --------------------------------------------------------------------------- bad input
def _nexus(tmp_path, name="f.h5", **kw):
    p = tmp_path / name
    write_aps_nexus(p, size=kw.pop("size", 40), phi_values=[10.0, 190.0], q_values=[0.01], **kw)
    return p


CESS = ["--cessation-time", "2024-03-01T09:00:00"]


BAD_CASES = []  # the bad inputs of test_bad_input_one_line_no_output, in this order


def bad_case(build):
    """Register a bad input: ``build(folder)`` writes its files in ``folder`` and returns (ingest
    arguments without --out, the file the error must name, a phrase of the problem)."""
    BAD_CASES.append(build)
    return build


def bad_nexus_case(name: str, problem: str, **nexus_args):
    """Register a bad input that is one file written by ``_nexus(folder, **nexus_args)``."""
    def build(t):
        p = _nexus(t, **nexus_args)
        return ["aps", p, *CESS], p, problem
    build.__name__ = name
    bad_case(build)


bad_nexus_case("missing_dataset", "missing dataset /xpcs/twotime/processed_bins",
               drop=("/xpcs/twotime/processed_bins",))
bad_nexus_case("missing_qmap", "missing dataset /xpcs/qmap/dynamic_index_mapping",
               drop=("/xpcs/qmap/dynamic_index_mapping",))


@bad_case
def truncated(t):
    p = _nexus(t, size=200)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return ["aps", p, *CESS], p, "truncated or corrupt"


@bad_case
def corrupt(t):
    p = t / "junk.h5"
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    return ["aps", p, *CESS], p, "not a readable HDF5 file"


@bad_case
def nan_map(t):
    full = c2_full(40, 3.0)
    full[5, 9] = np.nan
    p = _nexus(t, maps={1: full, 2: c2_full(40, 3.0)})
    return ["aps", p, *CESS], p, "c2_00001 contains 1 NaN or infinite"


@bad_case
def inf_map(t):
    full = c2_full(40, 3.0)
    full[0, 3] = np.inf
    p = _nexus(t, maps={1: c2_full(40, 3.0), 2: full})
    return ["aps", p, *CESS], p, "c2_00002 contains 1 NaN or infinite"


@bad_case
def non_square(t):
    p = _nexus(t)
    with h5py.File(p, "a") as f:
        del f["/xpcs/twotime/correlation_map/c2_00002"]
        f["/xpcs/twotime/correlation_map/c2_00002"] = np.zeros((40, 30), np.float32)
    return ["aps", p, *CESS], p, "c2_00002 is not square: 40 x 30"


@bad_case
def mismatched_sizes(t):
    a = _nexus(t, "a.h5", size=40)
    b = _nexus(t, "b.h5", size=48, start_time="2024-03-01T10:01:00")
    return ["aps", a, b, *CESS], b, "maps are 48 x 48 but a.h5 has 40 x 40"


bad_nexus_case("no_start_time", "no start time", drop=("/entry/start_time",))
bad_nexus_case("bad_start_time", "not an ISO 8601 timestamp", start_time="yesterday")


@bad_case
def time_table_lacks_file(t):
    p = _nexus(t)
    (t / "tt.csv").write_text("file,time_s\nother.h5,1\n")
    return ["aps", p, "--time-table", t / "tt.csv"], t / "tt.csv", "has no time for f.h5"


@bad_case
def stack_non_square(t):
    np.save(t / "m.npy", np.zeros((3, 10, 12)))
    (t / "meta.csv").write_text("time,sector\n0,1\n0,2\n0,3\n")
    return ["stack", t / "m.npy", "--meta", t / "meta.csv"], t / "m.npy", "not square: 10 x 12"


@bad_case
def stack_meta_wrong_length(t):
    np.save(t / "m.npy", np.ones((3, 16, 16)))
    (t / "meta.csv").write_text("time,sector\n0,1\n0,2\n")
    return (["stack", t / "m.npy", "--meta", t / "meta.csv"], t / "meta.csv",
            "2 metadata rows but the stack holds 3 maps")


@bad_case
def stack_nan(t):
    m = np.ones((2, 16, 16))
    m[1, 3, 3] = np.nan
    np.save(t / "m.npy", m)
    (t / "meta.csv").write_text("time,sector\n0,1\n0,2\n")
    return ["stack", t / "m.npy", "--meta", t / "meta.csv"], t / "m.npy", "map 1 contains 1 NaN"


@bad_case
def stack_truncated_npy(t):
    np.save(t / "m.npy", np.ones((3, 64, 64)))
    data = (t / "m.npy").read_bytes()
    (t / "m.npy").write_bytes(data[:5000])
    (t / "meta.csv").write_text("time,sector\n0,1\n0,2\n0,3\n")
    return ["stack", t / "m.npy", "--meta", t / "meta.csv"], t / "m.npy", "truncated or corrupt"


@bad_case
def empty_rheology(t):
    (t / "empty.csv").write_text("")
    return ["aps", _nexus(t), *CESS, "--rheology", t / "empty.csv"], t / "empty.csv", "empty"


@bad_case
def rheology_wrong_encoding(t):
    (t / "r16.txt").write_bytes("Time\tShear Stress\n1\t2\n".encode("utf-16-le"))
    return ["aps", _nexus(t), *CESS, "--rheology", t / "r16.txt"], t / "r16.txt", "wrong encoding"


@bad_case
def published_missing_file(t):
    d = t / "pub"
    d.mkdir()
    np.save(d / "latents_64.npy", np.ones((4, 64)))
    np.save(d / "start_time_s.npy", np.zeros(4))
    return ["published", d], d / "sector.npy", "missing sector file"


@bad_case
def published_wrong_length(t):
    d = t / "pub"
    d.mkdir()
    np.save(d / "latents_64.npy", np.ones((4, 64)))
    np.save(d / "sector.npy", np.arange(1, 4))
    np.save(d / "start_time_s.npy", np.zeros(4))
    return ["published", d], d / "sector.npy", "has shape (3,) but there are 4 latent vectors"


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.__name__)
def test_bad_input_one_line_no_output(tmp_path, case):
    args, named, problem = case(tmp_path)
    outdir = tmp_path / "out"
    outdir.mkdir()
    r = cli(*args, "--out", outdir / "o.h5")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: {named}: "), lines[0]
    assert problem in lines[0], lines[0]
    assert list(outdir.iterdir()) == []      # no output, no temporary file


def test_debug_shows_traceback(tmp_path):
    p = _nexus(tmp_path, drop=("/xpcs/twotime/processed_bins",))
    r = cli("aps", p, "--out", tmp_path / "o.h5", "--cessation-time", "first", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr
    assert not (tmp_path / "o.h5").exists()


def test_prepare_target_area_averages_normalises_and_rejects_bad_maps():
    from ainerd_core.readers.resample import prepare_target

    rng = np.random.default_rng(1)
    a = rng.random((512, 512))
    block = a.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    expected = (block - block.min()) / (block.max() - block.min())
    np.testing.assert_allclose(prepare_target(a[None]), expected, atol=1e-6)  # singleton axis dropped
    out = prepare_target(np.arange(64 * 64, dtype=float).reshape(64, 64))
    assert out.shape == (256, 256) and out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    for bad, message in ((np.zeros((3, 4)), "not square"), (np.full((16, 16), np.nan), "NaN"),
                         (np.zeros((4, 4)), "outside 8"), (np.zeros((2, 3, 4)), "two-dimensional")):
        with pytest.raises(InputError, match=message):
            prepare_target(bad, "upload.npy")
