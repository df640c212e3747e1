"""ainerd_core.retrieval: relevance rule, precision@k by hand, CIs, permutation test, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ainerd_core import retrieval as R
from ainerd_core.cli import main
from ainerd_core.dataset import write_dataset
from conftest import small_meta


def tiny_truth():
    # maps 0..5: rates, fringe visibility, burst
    return {"relaxation_rate": np.array([1.0, 1.1, 1.2, 5.0, 1.05, 1.0]),
            "fringe_visibility": np.array([0.0, 0.0, 0.0, 0.0, 0.5, 0.0]),
            "burst": np.array([0, 0, 0, 0, 0, 1])}


def test_relevance_rule_by_hand():
    rel = R.relevance(tiny_truth(), np.array([0, 3]), rate_tol=0.1, fringe_min=0.1)
    # target 0: 1 (rate ratio 1.1, log10 0.041) and 2 (0.079) are relevant; 3 (rate), 4 (fringes),
    # 5 (burst) are not; itself never
    np.testing.assert_array_equal(rel[0], [False, True, True, False, False, False])
    np.testing.assert_array_equal(rel[1], [False] * 6)  # nothing within a factor 1.26 of 5.0


def test_precision_at_k_by_hand():
    rel = R.relevance(tiny_truth(), np.array([0]))
    neigh = np.array([[1, 3, 2, 4, 5]])  # relevant, not, relevant, not, not
    p = R.precision_at_k(neigh, rel, ks=(1, 2, 3, 5))
    np.testing.assert_allclose(p[0], [1.0, 0.5, 2 / 3, 2 / 5])
    p = R.precision_at_k(neigh, rel, ks=(10,))  # k capped at the neighbours there are
    np.testing.assert_allclose(p[0], [2 / 5])


def test_bootstrap_ci_and_permutation():
    v = np.r_[np.zeros(50), np.ones(50)]
    lo, hi = R.bootstrap_ci(v, n_boot=2000, seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.3
    a = np.full(30, 0.8)
    b = np.full(30, 0.8)
    assert R.paired_permutation_p(a, b) == 1.0
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 0.5, 30)
    assert R.paired_permutation_p(b + 0.3, b, n_resamples=999) < 0.01
    noise = rng.normal(0, 0.1, 30)
    assert R.paired_permutation_p(b + noise, b, n_resamples=999) > 0.01


def test_benchmark_latent_better_than_raw_when_built_so(rng):
    n = 120
    rate = 10 ** rng.uniform(-1, 1, n)
    truth = {"relaxation_rate": rate, "burst": np.zeros(n, int), "fringe_visibility": np.zeros(n)}
    latent = np.log10(rate)[:, None] + rng.normal(0, 0.01, (n, 1))  # perfect latent
    maps = rng.random((n, 8, 8)).astype(np.float32)                 # useless pixels
    table = R.benchmark({"latent": latent, "maps": maps, "pca": maps.reshape(n, -1)[:, :4]}, truth,
                        n_targets=30, seed=0, ks=(5, 10), n_boot=200)
    assert set(table["spaces"]) == {"latent", "raw", "pca", "smoothed"}
    assert table["spaces"]["latent"]["5"]["mean"] > 0.9
    assert table["spaces"]["raw"]["5"]["mean"] < 0.5
    t = table["tests"]["latent_vs_raw"]["5"]
    assert t["mean_difference"] > 0.4 and t["p_value"] < 0.01
    assert 0 < table["chance"] < 0.5
    json.dumps(table)
    text = R.format_table(table)
    assert "latent" in text and "P@5" in text


def test_cli_on_a_dataset_with_truth(tmp_path, rng, capsys):
    n = 30
    maps = rng.random((n, 256, 256)).astype(np.float32)
    truth = {"relaxation_rate": 10 ** rng.uniform(-1, 1, n), "burst": np.zeros(n, np.int32),
             "fringe_visibility": np.zeros(n)}
    p = write_dataset(tmp_path / "t.h5", meta=small_meta(n), maps=maps, truth=truth,
                      latents=rng.random((n, 4)).astype(np.float32))
    out = tmp_path / "table.json"
    assert main(["benchmark-retrieval", str(p), "--targets", "10", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "retrieval benchmark: 10 targets of 30 maps" in text
    table = json.loads(out.read_text())
    assert set(table["spaces"]) == {"latent", "raw", "pca", "smoothed"}
    assert table["smooth_sigma_px"] == 2.0
    assert table["ks_effective"] == [10, 29, 29]
    # no ground truth: one clear error line, status 2
    q = write_dataset(tmp_path / "u.h5", meta=small_meta(n), latents=rng.random((n, 4)))
    assert main(["benchmark-retrieval", str(q)]) == 2
    assert "ground truth" in capsys.readouterr().err


def _noisy_groups(rng, n=60, side=32, noise=0.5, amplitude=0.5):
    """Two groups of maps that differ by a faint smooth pattern (a diagonal band vs none) under
    strong independent pixel noise: what speckle does to raw-pixel distances."""
    group = np.arange(n) % 2
    i, j = np.mgrid[:side, :side]
    band = np.exp(-np.abs(i - j) / 4.0)
    maps = 0.5 + amplitude * group[:, None, None] * band + rng.normal(0, noise, (n, side, side))
    lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    return ((maps - lo) / (hi - lo)).astype(np.float32), {"group": group}


def test_smoothed_pixels_baseline_sees_through_pixel_noise(rng):
    """The smoothed-pixels baseline finds the groups raw pixels cannot, and a latent that is no
    better than noise is tested against it (a negative difference, not hidden)."""
    maps, truth = _noisy_groups(rng)
    n = len(maps)
    table = R.benchmark({"latent": rng.random((n, 4)), "maps": maps}, truth, rules="group:eq", n_targets=None,
                        ks=(5,), n_boot=200)
    sp = table["spaces"]
    assert sp["smoothed"]["5"]["mean"] > 0.9 > 0.75 > sp["raw"]["5"]["mean"]
    t = table["tests"]["latent_vs_smoothed"]["5"]
    assert t["ci_high"] < 0 and t["p_value"] < 0.01
    assert "latent_vs_smoothed" in R.format_table(table)
    # sigma 0 leaves the baseline out; the raw one is unchanged
    off = R.benchmark({"latent": rng.random((n, 4)), "maps": maps}, truth, rules="group:eq", n_targets=None,
                      ks=(5,), n_boot=200, smooth_sigma_px=0)
    assert "smoothed" not in off["spaces"] and "latent_vs_smoothed" not in off["tests"]
    assert off["spaces"]["raw"] == sp["raw"]


def test_smooth_sigma_on_the_cli(tmp_path, rng, capsys):
    maps, truth = _noisy_groups(rng, n=24, side=256)
    p = write_dataset(tmp_path / "g.h5", meta=small_meta(len(maps)), maps=maps, latents=rng.random((len(maps), 4)))
    csv_path = tmp_path / "truth.csv"
    csv_path.write_text("group\n" + "".join(f"{g}\n" for g in truth["group"]))
    out = tmp_path / "t.json"
    assert main(["benchmark-retrieval", str(p), "--truth-csv", str(csv_path), "--targets", "all", "--ks", "5",
                 "--smooth-sigma", "3", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["smooth_sigma_px"] == 3.0
    assert table["spaces"]["smoothed"]["5"]["mean"] > table["spaces"]["raw"]["5"]["mean"]
    capsys.readouterr()
    for bad in ("-1", "nan"):
        assert main(["benchmark-retrieval", str(p), "--truth-csv", str(csv_path), "--smooth-sigma", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "--smooth-sigma" in err and len(err.splitlines()) == 1


def test_benchmark_reads_the_stored_maps_once_for_both_pixel_spaces(tmp_path, rng, monkeypatch):
    """Raw and smoothed neighbours come from one pass over the file (the maps dominate the cost),
    and equal what each space gives alone."""
    from ainerd_core import mapstack
    from ainerd_core import similarity as S
    from ainerd_core.dataset import open_dataset

    maps, truth = _noisy_groups(rng, n=36, side=256)
    p = write_dataset(tmp_path / "g.h5", meta=small_meta(len(maps)), maps=maps, latents=rng.random((len(maps), 4)))
    rows_read = []
    plain_read = mapstack.MapSource.read
    monkeypatch.setattr(mapstack.MapSource, "read",
                        lambda self, a, b: rows_read.append(b - a) or plain_read(self, a, b))
    with open_dataset(p) as ds:
        table = R.benchmark(ds, truth, rules="group:eq", n_targets=10, ks=(5,), n_boot=50)
        assert {"raw", "smoothed"} <= set(table["spaces"])
        assert sum(rows_read) == len(maps) + 10  # one pass, plus the 10 targets themselves
        both = S.pixel_neighbours_of_targets(ds, [3, 7], 5)
        for space in ("raw", "smoothed"):
            alone = S.neighbours_of_targets(ds, [3, 7], space, 5)
            np.testing.assert_array_equal(both[space][0], alone[0])
            np.testing.assert_allclose(both[space][1], alone[1])


def test_relevance_rules_by_hand():
    cols = {"rate": np.array([1.0, 1.7, 1.9, 3.0, np.nan, 1.0]),
            "fringe": np.array([0.0, 0.4, 0.0, 0.0, 0.0, 0.6]),
            "aging": np.array(["a", "a", "a", "a", "a", "b"])}
    rules = R.parse_relevance("rate:ratio=1.8, fringe:abs=0.5,aging:eq")
    assert rules == [("rate", "ratio", 1.8), ("fringe", "abs", 0.5), ("aging", "eq", None)]
    rel = R.relevance_from_rules(cols, rules, np.array([0, 3]))
    # target 0: 1 (x1.7, fringe 0.4) yes; 2 (x1.9) no; 3 no; 4 (rate missing) no; 5 (other aging) no
    np.testing.assert_array_equal(rel[0], [False, True, False, False, False, False])
    np.testing.assert_array_equal(rel[1], [False, True, True, False, False, False])  # 3.0 / 1.7, 3.0 / 1.9
    np.testing.assert_array_equal(R.complete_rows(cols, rules), [True, True, True, True, False, True])
    for bad in ("rate", "rate:near", "rate:ratio=0.5", "rate:abs=x", "rate:eq=1", ""):
        with pytest.raises(R.InputError):
            R.parse_relevance(bad)
    with pytest.raises(R.InputError, match="no column"):
        R.relevance_from_rules(cols, [("speed", "eq", None)], np.array([0]))


def test_external_truth_csv_on_the_cli(tmp_path, rng, capsys):
    """A user's own labels: two groups of maps that differ in raw pixels only by a small offset,
    a latent that knows the groups. The table has latent, raw and exact PCA with paired CIs."""
    n = 36
    group = np.repeat(["slow", "fast"], n // 2)
    base = rng.random((n, 256, 256)).astype(np.float32)
    maps = np.clip(base * 0.9 + (group == "fast")[:, None, None] * 0.02, 0, 1).astype(np.float32)
    latent = np.c_[(group == "fast") * 5.0, rng.normal(0, 0.1, n)].astype(np.float32)
    p = write_dataset(tmp_path / "u.h5", meta=small_meta(n), maps=maps, latents=latent)
    csv_path = tmp_path / "truth.csv"
    rows = ["index,group,rate"] + [f"{i},{group[i]},{1.0 if group[i] == 'slow' else 9.0}" for i in range(n)][::-1]
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "t.json"
    assert main(["benchmark-retrieval", str(p), "--truth-csv", str(csv_path), "--targets", "all",
                 "--ks", "5,10", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["n_targets"] == n and set(table["spaces"]) == {"latent", "raw", "pca", "smoothed"}
    assert table["spaces"]["latent"]["5"]["mean"] == 1.0
    t = table["tests"]["latent_vs_raw"]["5"]
    assert t["ci_low"] > 0.2 and t["ci_low"] <= t["mean_difference"] <= t["ci_high"]
    assert "group equal" in capsys.readouterr().out
    # numeric rule on the same CSV: same answer
    assert main(["benchmark-retrieval", str(p), "--truth-csv", str(csv_path), "--relevance", "rate:ratio=2",
                 "--targets", "all", "--ks", "5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["spaces"]["latent"]["5"]["mean"] == 1.0
    # bad CSVs: one error line naming the file, status 2
    bad = tmp_path / "bad.csv"
    bad.write_text("index,group\n0,a\n99,b\n")
    assert main(["benchmark-retrieval", str(p), "--truth-csv", str(bad)]) == 2
    assert "bad.csv" in capsys.readouterr().err
    bad.write_text("group,x\na,1\n")
    assert main(["benchmark-retrieval", str(p), "--truth-csv", str(bad)]) == 2
    assert "1 rows for 36 maps" in capsys.readouterr().err
    assert main(["benchmark-retrieval", str(p), "--truth-csv", str(csv_path), "--relevance", "speed:eq"]) == 2
    assert "no column 'speed'" in capsys.readouterr().err


def test_clusters_page_table_shows_the_smoothed_baseline(rng):
    """The /clusters retrieval table (built from ``retrieval_json``) has the smoothed row, the
    latent-vs-smoothed test and says what "smoothed" means."""
    from types import SimpleNamespace

    from dashboard.pages.clusters import _retrieval_table

    maps, truth = _noisy_groups(rng)
    table = R.benchmark({"latent": rng.random((len(maps), 4)), "maps": maps}, truth, rules="group:eq",
                        n_targets=None, ks=(5,), n_boot=50)
    div = _retrieval_table(SimpleNamespace(result_attrs={"retrieval_json": json.dumps(table)}))
    note, grid = div.children
    assert "Gaussian filter of 2 px" in note.children
    spaces = [row["space"] for row in grid.data]
    assert "smoothed" in spaces and "latent vs smoothed" in spaces
