"""ainerd_core.precompute end to end: the /results contract (ainerd_core.results, docs/dataset-format.md), ordering by dynamics,
determinism, table contents, the latents-only (E031) path, the model path, errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr

from ainerd_core.cli import main
from ainerd_core.dataset import open_dataset, write_dataset
from ainerd_core.precompute import precompute
from conftest import small_meta

FAST = dict(targets=20, n_boot=5, neighbours=20, verbose=False)
NOMODEL = dict(FAST, use_model=False)


def pooled_latents(maps: np.ndarray) -> np.ndarray:
    """A stand-in encoder: 32 x 32 average pooling of each map -> 64 numbers."""
    n = len(maps)
    return maps.reshape(n, 8, 32, 8, 32).mean(axis=(2, 4)).reshape(n, 64).astype(np.float32)


@pytest.fixture(scope="module")
def sim_pair(tmp_path_factory):
    """A simulated 180-map experiment (10 times x 18 sectors) with stand-in latents, precomputed
    twice (two files) with the same seed."""
    from ainerd_core.simulate import SimConfig, simulate

    d = tmp_path_factory.mktemp("pre")
    raw = d / "raw.h5"
    simulate(raw, SimConfig(times=10, sectors=18, seed=0))
    with open_dataset(raw) as ds:
        maps = ds.read_maps(np.arange(ds.n_maps))
        meta = {k: ds.meta[k] for k in ("time", "sector", "phi", "q", "source")}
        truth, rheo = ds.truth, ds.rheology
        attrs = {k: v for k, v in ds.attrs.items()
                 if k in ("source_kind", "flow_axis_deg", "sector_width_deg", "n_sectors", "c2_time_step_s",
                          "simulation_json")}
    a = write_dataset(d / "a.h5", meta=meta, maps=maps, truth=truth, rheology=rheo,
                      latents=pooled_latents(maps), **attrs)
    b = d / "b.h5"
    shutil.copy(a, b)
    ra = precompute(a, **NOMODEL)
    precompute(b, **NOMODEL)
    return a, b, ra, truth


CONTRACT = {  # name: (shape as a function of N, T, S, k), dtype kind
    "latent": "f", "labels": "i", "umap": "f", "labels_k3": "i", "labels_k5": "i", "labels_k8": "i",
    "order_feature": "f", "kmeans/k": "i", "kmeans/inertia": "f", "kmeans/silhouette": "f",
    "kmeans/davies_bouldin": "f", "kmeans/calinski_harabasz": "f", "stability/ari_seeds": "f",
    "stability/ari_bootstrap": "f", "umap_raw": "f", "sector_class": "O", "tables/times": "f",
    "tables/time_index": "i", "tables/counts": "i", "tables/counts_k3": "i", "tables/counts_k5": "i",
    "tables/counts_k8": "i", "tables/sectors": "i", "tables/sector_time_labels": "i",
    "stress_minima/time": "f", "flow_share/x": "f", "flow_share/y": "f", "flow_share/share": "f",
    "similarity/latent_index": "i", "similarity/latent_distance": "f", "similarity/raw_index": "i",
    "similarity/raw_distance": "f", "similarity/pca_index": "i", "similarity/pca_distance": "f",
    "similarity/pca_components": "f", "similarity/pca_mean": "f", "similarity/pca_scores": "f",
    "dynamics_score": "f", "dynamics/relaxation_rate": "f", "dynamics/rate_stderr": "f",
    "dynamics/stretching": "f", "dynamics/stretching_stderr": "f", "dynamics/contrast": "f",
    "dynamics/contrast_stderr": "f", "dynamics/baseline": "f", "dynamics/baseline_stderr": "f",
    "dynamics/fit_r2": "f", "dynamics/fit_status": "i", "dynamics/g2": "f", "dynamics/g2_lag": "f",
    "dynamics/g2_count": "i", "dynamics/aged_g2": "f", "dynamics/aged_g2_age": "f", "dynamics/score_filled": "b",
}
ALGOS = ("spectral", "agglomerative", "birch", "gmm", "hdbscan", "optics")


def test_results_contract(sim_pair):
    a, _, _, _ = sim_pair
    with open_dataset(a) as ds:
        names = set(ds.result_names())
        n = ds.n_maps
        for name, kind in CONTRACT.items():
            assert name in names, name
            arr = ds.read_result(name)
            assert np.asarray(arr).dtype.kind == kind, (name, np.asarray(arr).dtype)
        for algo in ALGOS:
            lab = ds.read_result(f"algorithms/{algo}")
            assert lab.shape == (n,) and lab.min() >= -1
        r = ds.read_result
        assert r("latent").shape == (n, 64) and r("latent").dtype == np.float32
        assert r("umap").shape == (n, 2) and r("umap_raw").shape == (n, 2)
        np.testing.assert_array_equal(r("kmeans/k"), np.arange(2, 13))
        assert r("kmeans/inertia").shape == (11,)
        assert r("stability/ari_seeds").shape == (10,) and r("stability/ari_bootstrap").shape == (5,)
        assert r("similarity/latent_index").shape == (n, 20)
        assert r("similarity/pca_components").shape == (64, 256 * 256)
        assert r("similarity/pca_mean").shape == (256 * 256,)
        g = r("flow_share/share")
        assert g.shape == (64, 64) and np.nanmin(g) >= -1 and np.nanmax(g) <= 1
        at = ds.result_attrs
        assert at["k"] == 5 and 4 <= at["suggested_k"] <= 8 and "silhouette" in at["k_rule"]
        assert "log10 fitted relaxation rate" in at["order_feature_name"]
        assert at["dynamics_source"] == "maps" and "median fitted relaxation rate" in at["order_rule"]
        rho = json.loads(at["order_spearman_json"])
        assert set(rho) == {"3", "5", "8"} and all(v > 0 for v in rho.values())
        # units travel with the arrays (the simulator records the time step per C2 pixel)
        import h5py

        with h5py.File(a, "r") as f:
            g = f["results/dynamics"]
            assert g["relaxation_rate"].attrs["unit"] == "1/s" and g["g2_lag"].attrs["unit"] == "s"
            assert g["relaxation_rate"].dtype == np.float32 and g["fit_status"].dtype == np.int8
            assert g["g2_count"].dtype == np.int32 and f["results/dynamics_score"].attrs["unit"] == "log10(1/s)"
        assert r("dynamics/g2").shape == (n, 255) and r("dynamics/g2_lag").shape == (255,)
        np.testing.assert_allclose(r("dynamics/g2_lag")[:2], np.array([1, 2]) * ds.attrs["c2_time_step_s"], rtol=1e-5)
        np.testing.assert_array_equal(r("dynamics/g2_count")[:2], [255, 254])
        assert r("dynamics/aged_g2").shape == (n, 4, 63) and r("dynamics/aged_g2_age").shape == (4,)
        filled = r("dynamics/score_filled")
        fitted = r("dynamics/fit_status") != 3
        np.testing.assert_array_equal(filled, ~fitted)
        np.testing.assert_allclose(r("dynamics_score")[fitted], np.log10(r("dynamics/relaxation_rate")[fitted]),
                                   rtol=1e-5)
        timings = json.loads(at["timings_json"])
        assert "2. kmeans sweep" in timings and timings["total"] > 0
        table = json.loads(at["retrieval_json"])
        assert set(table["spaces"]) == {"latent", "raw", "pca", "smoothed"}
        algos = json.loads(at["algorithms_json"])
        assert set(algos) == set(ALGOS) | {"kmeans"}
        assert at["latent_source"] == "dataset /latents"
        assert np.isfinite(at["dynamics_score_r"]) and "dynamics_score_spearman_truth" in at
        assert at["stress_minima_prominence"] > 0
        # labels of every k and algorithm: 0 = slowest median fitted rate
        rate = r("dynamics/relaxation_rate")
        for name in ("labels", "labels_k3", "labels_k5", "labels_k8", *(f"algorithms/{x}" for x in ALGOS)):
            lab = r(name)
            med = [np.median(rate[lab == c]) for c in range(lab.max() + 1) if (lab == c).any()]
            assert np.all(np.diff(med) >= 0), name


def test_labels_ordered_by_dynamics(sim_pair):
    a, _, _, truth = sim_pair
    with open_dataset(a) as ds:
        labels = ds.read_result("labels")
        rho = spearmanr(labels, truth["relaxation_rate"]).statistic
        assert rho >= 0.7, rho  # cluster 0 = slowest = lowest relaxation rate
        score = ds.read_result("dynamics_score")
        assert spearmanr(score, truth["relaxation_rate"]).statistic >= 0.7
        rate = ds.read_result("dynamics/relaxation_rate")
        assert spearmanr(rate, truth["relaxation_rate"]).statistic >= 0.7
        assert ds.result_attrs["dynamics_score_spearman_truth"] >= 0.7


def test_deterministic(sim_pair):
    a, b, _, _ = sim_pair
    with open_dataset(a) as da, open_dataset(b) as db:
        for name in ("labels", "labels_k3", "labels_k8", "umap", "umap_raw", "flow_share/share",
                     "similarity/raw_index", "similarity/pca_index", "stability/ari_bootstrap",
                     *(f"algorithms/{x}" for x in ALGOS)):
            np.testing.assert_array_equal(da.read_result(name), db.read_result(name), err_msg=name)
        assert da.result_attrs["retrieval_json"] == db.result_attrs["retrieval_json"]


def test_tables_agree_with_labels(sim_pair):
    a, _, _, _ = sim_pair
    with open_dataset(a) as ds:
        r = ds.read_result
        t, tidx, labels = ds.meta["time"], r("tables/time_index"), r("labels")
        times = r("tables/times")
        np.testing.assert_allclose(times[tidx], t)
        per_time = np.bincount(tidx, minlength=times.size)
        for name, k in (("counts", 5), ("counts_k3", 3), ("counts_k5", 5), ("counts_k8", 8)):
            c = r(f"tables/{name}")
            assert c.shape == (times.size, k)
            np.testing.assert_array_equal(c.sum(1), per_time)
        lab = r("labels")
        np.testing.assert_array_equal(r("tables/counts")[tidx[0]],
                                      np.bincount(lab[tidx == tidx[0]], minlength=5))
        sectors, mat = r("tables/sectors"), r("tables/sector_time_labels")
        assert mat.shape == (sectors.size, times.size)
        srow = np.searchsorted(sectors, ds.meta["sector"])
        np.testing.assert_array_equal(mat[srow, tidx], labels)  # one map per (sector, time)
        cls = r("sector_class")
        sec = ds.meta["sector"]
        assert set(cls[np.isin(sec, [5, 14])]) == {"flow"}
        assert set(cls[np.isin(sec, [1, 9, 10, 18])]) == {"vorticity"}
        # stress minima lie inside the maps' time window, after cessation
        m = r("stress_minima/time")
        assert np.all((m >= 0) & (m <= t.max()))
        # the simulator's stress dips are found (default prominence, 30 s smoothing)
        events = [e["t_min"] for e in json.loads(ds.attrs["simulation_json"])["events"]]
        events = [e for e in events if 0 <= e <= t.max()]
        assert len(m) == len(events)
        np.testing.assert_allclose(np.sort(m), np.sort(events), atol=20)


def test_rerun_replaces_results(tmp_path, rng):
    n = 60
    c = write_dataset(tmp_path / "c.h5", meta=small_meta(n), latents=rng.random((n, 4)))
    precompute(c, k=5, **NOMODEL)
    with open_dataset(c) as ds:
        before = ds.result_names()
        assert ds.result_attrs["k"] == 5
    precompute(c, k=3, **NOMODEL)
    with open_dataset(c) as ds:
        assert ds.result_names() == before
        assert ds.result_attrs["k"] == 3 and ds.read_result("labels").max() == 2
        assert ds.read_result("tables/counts").shape[1] == 3


def e031_dataset(e031_dir, path):
    lat = np.load(e031_dir / "latents_64.npy")
    sector = np.load(e031_dir / "sector.npy")
    time = np.load(e031_dir / "start_time_s.npy")
    import csv

    with open(e031_dir / "rheology.csv") as fh:
        rows = list(csv.DictReader(fh))
    rt = np.array([float(r["time"]) for r in rows]) - 200.0  # rheometer clock -> XPCS clock (README)
    stress = np.array([float(r["shear_stress"]) for r in rows])
    return write_dataset(path, meta={"time": time, "sector": sector, "source": [f"e031:{i}" for i in range(len(lat))]},
                         latents=lat, rheology={"time": rt, "shear_stress": stress},
                         source_kind="ainerd-published", flow_axis_deg=90.0)


def test_latents_only_e031(e031_dir, tmp_path):
    """No maps and no decoder: the order is unknown (never time-based), nothing dynamic is stored."""
    p = e031_dataset(e031_dir, tmp_path / "e031.h5")
    res = precompute(p, **FAST)
    with open_dataset(p) as ds:
        names = set(ds.result_names())
        for name in ("latent", "labels", "umap", "labels_k3", "labels_k5", "labels_k8", "tables/counts",
                     "tables/sector_time_labels", "flow_share/share", "similarity/latent_index",
                     "stress_minima/time"):
            assert name in names, name
        for name in ("umap_raw", "similarity/raw_index", "similarity/pca_index", "model/recon_input",
                     "dynamics_score", "order_feature", "dynamics/relaxation_rate"):
            assert name not in names, name
        at = ds.result_attrs
        assert "UNKNOWN" in at["order_rule"] and at["dynamics_source"] == "none"
        assert json.loads(at["order_spearman_json"]) == {}
        assert "retrieval_json" not in at
        lab = ds.read_result("labels")
        assert lab.shape == (900,) and set(np.unique(lab)) == set(range(5))
        np.testing.assert_allclose(ds.read_result("latent"), np.load(e031_dir / "latents_64.npy"), rtol=1e-6)
        # 50 times x 18 sectors: every time has 18 maps
        np.testing.assert_array_equal(ds.read_result("tables/counts").sum(1), np.full(50, 18))
        assert ds.read_result("tables/sector_time_labels").shape == (18, 50)
        cls = ds.read_result("sector_class")
        assert (cls == "flow").sum() == 100 and (cls == "vorticity").sum() == 200
        assert ds.read_result("stress_minima/time").size >= 1
    assert res["_attrs"]["model"] == "none"


def test_model_path_and_diagnostics(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from ainerd_core.model import Autoencoder

    n = 24
    lag = np.abs(np.subtract.outer(np.arange(256), np.arange(256)))
    taus = np.geomspace(2, 100, n)
    maps = np.stack([np.exp(-lag / t) for t in taus]).astype(np.float32)
    p = write_dataset(tmp_path / "m.h5", meta=small_meta(n), maps=maps)
    from ainerd_core.model import atomic_torch_save, checkpoint_sha256, make_checkpoint

    torch.manual_seed(0)
    model = Autoencoder(64).eval()
    atomic_torch_save(make_checkpoint(model), tmp_path / "w.pt")
    sha = checkpoint_sha256(tmp_path / "w.pt")
    model.checkpoint_info = {"learning_curve": {"epoch": [1, 2], "train_loss": [0.2, 0.1], "val_loss": [0.3, 0.2]}}
    model.checkpoint_path = str(tmp_path / "w.pt")
    (tmp_path / "latent_sweep.json").write_text(json.dumps({
        "latent_size": [2, 4], "test_mse": [0.1, 0.05], "epochs": [1, 1],
        "schedule": {"epochs_max": 1, "seconds_per_size": 70.0, "seed": 0, "batch_size": 8, "max_maps": None,
                     "dropout": 0.0, "init_from": "data/demo_weights.pt", "init_sha256": sha}}))
    precompute(p, model=model, k=3, **FAST)
    with open_dataset(p) as ds:
        r = ds.read_result
        assert ds.result_attrs["latent_source"] == "model"
        assert r("latent").shape == (n, 64)
        assert r("model/recon_index").shape == (16,)
        assert r("model/recon_input").shape == (16, 256, 256) and r("model/recon_output").shape == (16, 256, 256)
        np.testing.assert_array_equal(r("model/recon_input"), maps[r("model/recon_index")])
        assert r("model/noise_maps").shape == (16, 256, 256) and ds.result_attrs["noise_sigma"] == 0.3
        np.testing.assert_array_equal(r("model/learning_curve/val_loss"), [0.3, 0.2])
        np.testing.assert_array_equal(r("model/latent_sweep/latent_size"), [2, 4])
        # how the sweep was trained travels with it, for the /model page
        how = ds.result_attrs["latent_sweep_schedule"]
        assert "1 epoch(s) per size" in how and "batch 8" in how and "warm start" in how and "demo_weights.pt" in how
        assert f"sha256 {sha[:12]}" in how and "latent_sweep_note" not in ds.result_attrs
        # a model trained on this dataset's split would say so; this one records none
        assert ds.result_attrs["recon_pool"].startswith("dataset's maps (the model was not trained")
        # maps ordered by decay time: cluster 0 holds the slowest (largest tau)
        lab = r("labels")
        assert lab[-1] == 0 and lab[0] == 2
        assert ds.result_attrs["dynamics_source"] == "maps"
        assert ds.result_attrs["dynamics_units_json"] and "1/pixel" in ds.result_attrs["dynamics_units_json"]
        assert spearmanr(1 / r("dynamics/relaxation_rate"), taus).statistic > 0.99
        # novelty (contract: /results/novelty/score in [0, 1] plus the two quantiles); this model has
        # no stored reference, so it comes from the dataset itself and says so
        score = r("novelty/score")
        assert score.shape == (n,) and score.dtype == np.float32 and 0 <= score.min() and score.max() <= 1
        assert r("novelty/recon_quantile").shape == (n,) and r("novelty/knn_quantile").shape == (n,)
        assert "built from this dataset" in ds.result_attrs["novelty_source"]
        assert ds.result_attrs["novelty_threshold"] == 0.99


def test_a_train_randomized_checkpoint_on_the_model_page_and_a_sweep_of_other_weights(tmp_path):
    """A checkpoint trained on generated maps (no split of this dataset): its curve in MSE and what
    its points are, its own validation in words, and a latent-size sweep beside it that was
    measured from other weights left out, saying why (an explicit one is refused)."""
    torch = pytest.importorskip("torch")
    from ainerd_core import diagnostics as D
    from ainerd_core.errors import InputError
    from ainerd_core.model import Autoencoder, atomic_torch_save, checkpoint_sha256, make_checkpoint
    from ainerd_core.precompute import _latent_sweep

    lag = np.abs(np.subtract.outer(np.arange(256), np.arange(256)))
    maps = np.stack([np.exp(-lag / t) for t in np.geomspace(2, 100, 24)]).astype(np.float32)
    p = write_dataset(tmp_path / "m.h5", meta=small_meta(24), maps=maps)
    torch.manual_seed(0)
    model = Autoencoder(64).eval()
    cfg = {"trainer": D.RANDOMIZED_TRAINER, "objective": "both", "recon_scale": 0.02, "steps": 50,
           "steps_per_epoch": 25, "batch_size": 16, "n_val": 64, "seed": 0}
    info = {"config": cfg, "best_epoch": 2, "test": {"mse": 0.0103, "explained_variance": 0.502, "n_maps": 64},
            "learning_curve": {"epoch": [1, 2], "train_loss": [4.9, 2.4], "recon": [1.5, 0.5],
                               "val_loss": [0.02, 0.0103]}}
    atomic_torch_save(make_checkpoint(model, **info), tmp_path / "w.pt")
    model.checkpoint_info, model.checkpoint_path = info, str(tmp_path / "w.pt")
    other = {"latent_size": [2, 4], "test_mse": [0.1, 0.05], "epochs": [1, 1],
             "schedule": {"init_from": "w.pt", "init_bottleneck": "projected", "init_sha256": "ab" * 32}}
    (tmp_path / "w.latent_sweep.json").write_text(json.dumps(other))
    precompute(p, model=model, k=3, **FAST)
    with open_dataset(p) as ds:
        r, attrs = ds.read_result, ds.result_attrs
        np.testing.assert_allclose(r("model/learning_curve/train_loss"), [0.03, 0.01])   # recon x recon_scale
        np.testing.assert_array_equal(r("model/learning_curve/val_loss"), [0.02, 0.0103])
        assert attrs["model_best_epoch"] == 2 and "one point per 25 steps of 16" in attrs["learning_curve_note"]
        assert attrs["model_heldout"] == ("validation on 64 unseen randomised maps (training ranges, never trained "
                                          "on): explained variance 50.2 %, MSE 0.01030")
        assert r("model/latent_sweep/latent_size") is None and "latent_sweep_schedule" not in attrs
        assert "from other weights (sha256 abababababab)" in attrs["latent_sweep_note"]
        assert checkpoint_sha256(tmp_path / "w.pt")[:12] in attrs["latent_sweep_note"]
    with pytest.raises(InputError, match="other weights"):
        _latent_sweep(model, info, tmp_path / "w.latent_sweep.json", checkpoint_sha256(tmp_path / "w.pt"))
    # the same sweep made from these weights is used; one from random initialisation always is
    other["schedule"]["init_sha256"] = checkpoint_sha256(tmp_path / "w.pt")
    (tmp_path / "w.latent_sweep.json").write_text(json.dumps(other))
    assert _latent_sweep(model, info, None, other["schedule"]["init_sha256"])["latent_size"] == [2, 4]
    assert _latent_sweep(model, info, None, None).get("skipped")
    other["schedule"] = {"init_from": None}
    (tmp_path / "w.latent_sweep.json").write_text(json.dumps(other))
    assert _latent_sweep(model, info, None, None)["latent_size"] == [2, 4]


def test_latents_only_with_a_decoder_measures_reconstructions(tmp_path, rng):
    """Latents-only data and the model that made them: the decoded maps are measured, and the
    results say that they are reconstructions."""
    torch = pytest.importorskip("torch")
    from ainerd_core.model import Autoencoder

    n = 24
    torch.manual_seed(0)
    model = Autoencoder(64).eval()
    model.checkpoint_path = str(tmp_path / "w.pt")
    p = write_dataset(tmp_path / "lat.h5", meta=small_meta(n), latents=rng.random((n, 64)).astype(np.float32))
    precompute(p, model=model, k=3, **FAST)
    with open_dataset(p) as ds:
        at = ds.result_attrs
        assert at["dynamics_source"] == "decoded latents (reconstruction)"
        assert "reconstructions" in at["order_rule"] and "UNKNOWN" not in at["order_rule"]
        assert ds.read_result("dynamics/relaxation_rate").shape == (n,)
        assert ds.read_result("dynamics/g2").shape == (n, 255)
        assert json.loads(at["dynamics_units_json"])["relaxation_rate"] == "1/pixel"  # no c2_time_step_s
        assert ds.read_result("dynamics_score").shape == (n,)


def test_cli_errors(tmp_path, rng, capsys):
    n = 12
    p = write_dataset(tmp_path / "x.h5", meta=small_meta(n), maps=rng.random((n, 256, 256)).astype(np.float32))
    assert main(["precompute", str(p), "--model", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    q = write_dataset(tmp_path / "y.h5", meta=small_meta(n), latents=rng.random((n, 4)))
    assert main(["precompute", str(q), "--k", "1"]) == 2
    assert "--k" in capsys.readouterr().err
    assert main(["precompute", str(q), "--grid", "1"]) == 2
    assert "--grid: must be >= 2" in capsys.readouterr().err
    assert main(["precompute", str(q), "--no-model", "--neighbours", "0"]) == 2
    assert "--neighbours" in capsys.readouterr().err
    with open_dataset(q) as ds:
        assert not ds.has_results  # nothing written on failure


def test_cli_runs(tmp_path, rng, capsys):
    n = 60
    q = write_dataset(tmp_path / "z.h5", meta=small_meta(n), latents=rng.random((n, 4)))
    assert main(["precompute", str(q), "--k", "0", "--neighbours", "5", "--bootstrap", "2"]) == 0
    out = capsys.readouterr().out
    assert "[2. kmeans sweep]" in out and "precompute: 60 maps" in out
    with open_dataset(q) as ds:
        assert ds.result_attrs["k"] == ds.result_attrs["suggested_k"]
