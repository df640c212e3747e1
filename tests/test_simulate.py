"""The rheo-XPCS simulator: physics visible in the maps, ground truth, determinism, CLI."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks
from scipy.stats import spearmanr

from ainerd_core.cli import main
from ainerd_core.dataset import open_dataset
from ainerd_core.geometry import sector_class
from ainerd_core.simulate import SimConfig, simulate

from conftest import REPO, simulated

FLOW, VORTICITY = (5, 14), (1, 9, 10, 18)


def lag_profile(c2: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean of each diagonal (lag k = t2 - t1 in pixels) of a symmetric map, k = 0..max_lag-1."""
    n = c2.shape[0]
    return np.array([np.diagonal(c2, k).mean() for k in range(min(max_lag, n))])


def band_width(c2: np.ndarray) -> float:
    """Lag (pixels) where the lag profile first falls below 1/e of its height above its floor."""
    p = lag_profile(c2, c2.shape[0] - 8)
    lo = p.min()
    below = np.nonzero(p - lo < (p[0] - lo) / np.e)[0]
    return float(below[0]) if below.size else float(p.size)


def revival(c2: np.ndarray, max_lag: int = 160) -> tuple[float, int]:
    """Height of the strongest revival (a later maximum of the lag profile above an earlier
    minimum), relative to the profile's range, and its lag. Fringes make revivals; a plain
    decay has none (only noise)."""
    p = uniform_filter1d(lag_profile(c2, max_lag), 3, mode="nearest")
    span = p[0] - p.min()
    running_min = np.minimum.accumulate(p)
    rise = (p - running_min) / span
    k = int(np.argmax(rise))
    return float(rise[k]), k


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """6 time points x 18 sectors x 256 px."""
    return simulated(tmp_path_factory, "small", times=6, sectors=18, size=256, seed=0)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """50 time points x 2 sectors, tiny maps: for the time course (bursts, stress)."""
    return simulated(tmp_path_factory, "dense", times=50, sectors=2, size=32, seed=3)


def test_dataset_is_readable_and_sector_major(small):
    with open_dataset(small) as ds:
        assert ds.n_maps == 108 and ds.has_maps
        a = ds.attrs
        assert a["source_kind"] == "simulation" and a["n_sectors"] == 18
        assert a["flow_axis_deg"] == 90.0 and a["sector_width_deg"] == 20.0
        assert a["c2_time_step_s"] == pytest.approx(25.6 / 256)
        m = ds.meta
        assert np.array_equal(m["sector"], np.repeat(np.arange(1, 19), 6))
        assert np.array_equal(m["time"][:6], m["time"][6:12])
        assert m["time"][0] == pytest.approx(-5.0) and m["time"][5] == pytest.approx(2802.0)
        assert np.all((m["q"] > 0.005) & (m["q"] < 0.02))
        assert m["source"][7] == "sim:t1:s2"
        cls = sector_class(m["phi"], a["flow_axis_deg"])
        assert set(m["sector"][cls == "flow"]) == set(FLOW)
        assert set(m["sector"][cls == "vorticity"]) == set(VORTICITY)
        maps = ds.read_maps(range(0, 108, 11))
        assert maps.dtype == np.float32 and maps.min() >= 0 and maps.max() <= 1
        for k in range(maps.shape[0]):  # C2 is symmetric
            assert np.allclose(maps[k], maps[k].T, atol=1e-6)
        for name in ("relaxation_rate", "fringe_frequency", "burst", "D0", "alpha", "contrast",
                     "strain", "velocity", "q", "phi", "band_width_px", "fringe_visibility"):
            assert name in ds.truth and ds.truth[name].shape == (108,)
        rh = ds.rheology
        assert set(rh) >= {"time", "shear_stress", "shear_rate", "viscosity"}


def test_flow_sectors_show_fringes_and_vorticity_sectors_do_not(small):
    with open_dataset(small) as ds:
        m, tr = ds.meta, ds.truth
        dt = ds.attrs["c2_time_step_s"]
        after = m["time"] > 0
        flow = np.isin(m["sector"], FLOW) & after
        vort = np.isin(m["sector"], VORTICITY) & after
        assert np.all(tr["fringe_visibility"][flow] > 0.05)
        assert np.all(tr["fringe_visibility"][vort] < 0.01)
        for k in np.nonzero(flow)[0]:
            height, lag = revival(ds.read_map(k))
            assert height > 0.08, (k, height)
            period_px = 1.0 / (tr["fringe_frequency"][k] * dt)
            assert lag == pytest.approx(period_px, rel=0.25), (k, lag, period_px)
        for k in np.nonzero(vort)[0]:
            height, _ = revival(ds.read_map(k))
            assert height < 0.03, (k, height)


def test_relaxation_slows_with_time(small):
    with open_dataset(small) as ds:
        m, tr = ds.meta, ds.truth
        for s in VORTICITY:
            quiet = tr["burst_strength"] < 0.05  # no burst anywhere near the window
            rows = np.nonzero((m["sector"] == s) & (m["time"] > 0) & quiet)[0]
            assert rows.size >= 2
            assert np.all(np.diff(tr["relaxation_rate"][rows]) < 0)  # aging, in the truth
            measured = [band_width(ds.read_map(k)) for k in rows]
            assert np.all(np.diff(measured) > 0), measured  # and in the maps
        # the measured band width follows the ground truth across all maps
        rows = np.nonzero(np.isin(m["sector"], VORTICITY))[0]
        measured = [band_width(ds.read_map(k)) for k in rows]
        assert spearmanr(measured, tr["band_width_px"][rows]).statistic > 0.9
        assert spearmanr(measured, tr["relaxation_rate"][rows]).statistic < -0.9
    # the dynamic range is visible at 256 px: from a few pixels to a band (1/e half width) that
    # covers about half the map
    assert min(measured) < 5 and max(measured) > 50


def test_bursts_coincide_with_stress_minima(dense):
    with open_dataset(dense) as ds:
        rh, m, tr = ds.rheology, ds.meta, ds.truth
        window = ds.attrs["c2_time_step_s"] * ds.attrs["map_size"]
        keep = rh["time"] > 100
        t, stress = rh["time"][keep], uniform_filter1d(rh["shear_stress"][keep], 5)
        minima, _ = find_peaks(-stress, prominence=1.0)
        t_min = t[minima]
        assert t_min.size >= 3  # a non-monotonic relaxation with several local minima
        centre = m["time"] + window / 2
        burst = tr["burst"] == 1
        assert burst.any() and not burst.all()
        # every burst sits at a stress minimum (minima are >= 300 s apart, maps ~57 s apart)
        dist = np.abs(centre[:, None] - t_min[None, :]).min(axis=1)
        assert np.all(dist[burst] < 100), dist[burst]
        first = m["sector"] == 1
        for tm in t_min:  # and every minimum has a burst
            assert np.any(burst & first & (np.abs(centre - tm) < 100)), tm
        # bursts are faster dynamics than the aging trend of the quiet maps
        r, age, b = tr["relaxation_rate"][first], centre[first], burst[first]
        quiet = ~b & (age > 60) & (tr["burst_strength"][first] < 0.05)
        slope, icpt = np.polyfit(np.log(age[quiet]), np.log(r[quiet]), 1)
        assert slope < -0.5  # aging
        excess = np.log(r) - (icpt + slope * np.log(age))
        assert np.all(np.abs(excess[quiet]) < np.log(1.15))
        assert np.all(excess[b] > np.log(1.8)), np.exp(excess[b])


def test_seed_determinism(tmp_path):
    cfg = dict(times=3, sectors=4, size=64)
    paths = {}
    for name, seed, batch in (("a", 0, 32), ("b", 0, 5), ("c", 1, 32)):
        paths[name] = tmp_path / f"{name}.h5"
        simulate(paths[name], SimConfig(seed=seed, **cfg), batch_size=batch)

    def content(p):
        with open_dataset(p) as ds:
            return ds.read_maps(range(ds.n_maps)).tobytes(), ds.truth["relaxation_rate"], ds.rheology["shear_stress"]

    a, b, c = (content(paths[k]) for k in "abc")
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert a[0] != c[0] and not np.array_equal(a[1], c[1])


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    assert main(["simulate", "--out", str(out), "--times", "2", "--sectors", "3", "--size", "32", "--seed", "4"]) == 0
    assert "6 maps" in capsys.readouterr().out
    wide = tmp_path / "wide.h5"
    assert main(["simulate", "--out", str(wide), "--times", "2", "--sectors", "3", "--size", "32", "--noise-scale", "4",
                 "--contrast", "0.3", "--baseline-offset", "0.2", "--alpha", "-0.7", "--fringe-strength", "0.5",
                 "--quiet"]) == 0
    with open_dataset(wide) as ds:
        assert np.all(ds.truth["alpha"] == -0.7)
    with open_dataset(out) as ds:
        assert ds.n_maps == 6 and ds.map_size == 32
        assert list(ds.meta["sector"]) == [1, 1, 2, 2, 3, 3]


def test_widened_options_change_only_what_they_name_and_are_recorded(tmp_path):
    """Defaults reproduce the demo; each widened option shows in the truth (issue 11)."""
    import json

    base = dict(times=3, sectors=6, size=64, seed=2)
    runs = {"default": {}, "explicit defaults": dict(noise_scale=1.0, baseline_offset=0.0, fringe_strength=1.0),
            "noisy": dict(noise_scale=8.0), "contrast": dict(contrast=0.5, baseline_offset=0.7),
            "alpha": dict(alpha=-0.4), "no fringes": dict(fringe_strength=0.0)}
    got = {}
    for name, kw in runs.items():
        p = tmp_path / f"{name}.h5"
        simulate(p, SimConfig(**base, **kw))
        with open_dataset(p) as ds:
            got[name] = (ds.read_maps(range(ds.n_maps)), ds.truth, json.loads(ds.attrs["simulation_json"]))
    maps0, t0, sim0 = got["default"]
    np.testing.assert_array_equal(got["explicit defaults"][0], maps0)
    # noise: a higher normalised noise floor, the same dynamics
    t = got["noisy"][1]
    np.testing.assert_array_equal(t["relaxation_rate"], t0["relaxation_rate"])
    np.testing.assert_allclose(t["noise_std"], 8 * t0["noise_std"])
    assert np.median(t["noise_floor"]) > np.median(t0["noise_floor"]) + 0.1
    # contrast and baseline are the truth's
    t = got["contrast"][1]
    assert np.all((t["contrast"] > 0.5 * 0.85 * 0.97) & (t["contrast"] < 0.5 * 1.1 * 1.03))
    assert np.all((t["baseline"] >= 1.7) & (t["baseline"] <= 1.72))
    # aging exponent: recorded, slower aging -> faster late dynamics
    t, sim = got["alpha"][1], got["alpha"][2]
    assert sim["alpha"] == -0.4 and np.all(t["alpha"] == -0.4) and sim["config"]["alpha"] == -0.4
    late = t0["age"] > 1000
    assert np.all(t["relaxation_rate"][late] > t0["relaxation_rate"][late])
    # fringes off: no heterodyne fraction, no visibility
    t = got["no fringes"][1]
    assert np.all(t["heterodyne_fraction"] == 0) and np.all(t["fringe_visibility"] == 0)
    assert np.all(t0["heterodyne_fraction"] > 0)


@pytest.mark.parametrize("bad", [["--times", "0"], ["--sectors", "0"], ["--size", "8"], ["--window", "-1"],
                                 ["--q", "0"], ["--t-end", "-100"], ["--noise-scale", "-1"], ["--alpha", "0.5"],
                                 ["--contrast", "0"], ["--fringe-strength", "nan"]])
def test_cli_bad_option_exits_2_with_one_line_and_no_file(tmp_path, capsys, bad):
    out = tmp_path / "bad.h5"
    assert main(["simulate", "--out", str(out), *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and bad[0] in err
    assert list(tmp_path.iterdir()) == []


def test_cli_module_entry_point(tmp_path):
    out = tmp_path / "x.h5"
    proc = subprocess.run([sys.executable, "-m", "ainerd_core", "simulate", "--out", str(out), "--times", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--times" in proc.stderr
    assert not out.exists()
