"""ainerd_core.evaluation against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ainerd_core import evaluation as ev

nan = np.nan


def test_average_and_smoothing_by_hand():
    y = np.array([[1, 0, 1, nan, 0],
                  [1, 1, nan, nan, 0]], float)
    np.testing.assert_allclose(ev.average_accuracy(y), [1.0, 0.5, 1.0, nan, 0.0])
    # window 3: rank1 pools ranks 1-2 -> cells 1,0,1,1 = 3/4; rank2: ranks1-3 -> 1,0,1,1,1 = 4/5;
    # rank3: ranks 2-4 -> 0,1,1 = 2/3; rank4: ranks 3-5 -> 1,0,0 = 1/3; rank5: ranks 4-5 -> 0,0 = 0
    np.testing.assert_allclose(ev.smoothed_accuracy(y, 3), [3 / 4, 4 / 5, 2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(ev.smoothed_accuracy(y, 1), [1.0, 0.5, 1.0, nan, 0.0])
    with pytest.raises(ValueError):
        ev.smoothed_accuracy(y, 4)


def test_crossing_rank():
    curve = np.array([0.9, 0.7, 0.5, 0.49, 0.8, 0.2])
    assert ev.crossing_rank(curve) == 4
    assert ev.last_rank_above(curve) == 3
    assert ev.crossing_rank([0.6, 0.7]) is None
    assert ev.last_rank_above([0.6, 0.7]) == 2
    assert ev.last_rank_above([0.1, 0.7]) == 0
    assert ev.crossing_rank([nan, 0.4]) == 2
    assert ev.last_rank_above([0.9, 0.8, nan, nan]) == 2  # never below, answers up to rank 2
    assert ev.last_rank_above([nan, nan]) is None


def test_bootstrap_band_brackets_and_degenerate():
    y = np.array([[1, 1, 1, 1, 0, 0, 0, 0]], float)
    lo, hi = ev.bootstrap_band(y, window=3, n_boot=4000, seed=1)
    sm = ev.smoothed_accuracy(y, 3)
    assert np.all(lo <= sm + 1e-12) and np.all(hi >= sm - 1e-12)
    # all-ones windows have zero width
    assert lo[0] == hi[0] == 1.0 and lo[-1] == hi[-1] == 0.0
    # a mixed window of k=3 cells (2 of 3 similar): binomial(3, 2/3)/3 takes values 0,1/3,2/3,1
    assert set(np.round([lo[3], hi[3]], 6)) <= {0.0, round(1 / 3, 6), round(2 / 3, 6), 1.0}


def test_paired_permutation_exact_by_hand():
    # 3 rank pairs, one expert: d = (1, 1, 0); T = 2/3. Sign flips: 8 equally likely;
    # |T*| >= 2/3 when both nonzero d have the same sign: 2 of 4 sign patterns x 2 (sign of the zero) = 4 -> p = 1/2
    ya = np.array([[1, 1, 0]], float)
    yb = np.array([[0, 0, 0]], float)
    res = ev.paired_permutation_test(ya, yb)
    assert res["exact"] and res["n_pairs"] == 3
    assert res["statistic"] == pytest.approx(2 / 3)
    assert res["p_value"] == pytest.approx(0.5)
    # 5 pairs, all d = 1: only all-+ and all-- reach |T| = 1: p = 2/32
    res = ev.paired_permutation_test(np.ones((2, 5)), np.zeros((2, 5)))
    assert res["p_value"] == pytest.approx(2 / 32)
    # unrated ranks are dropped
    ya = np.array([[1, nan, 1]], float)
    yb = np.array([[0, 1, 0]], float)
    assert ev.paired_permutation_test(ya, yb)["n_pairs"] == 2


def test_paired_permutation_monte_carlo():
    rng = np.random.default_rng(0)
    ya = (rng.random((3, 200)) < 0.8).astype(float)
    yb = (rng.random((3, 200)) < 0.3).astype(float)
    res = ev.paired_permutation_test(ya, yb, n_perm=2000, seed=0)
    assert not res["exact"] and res["p_value"] == pytest.approx(1 / 2001)
    same = ev.paired_permutation_test(ya, ya, n_perm=500)
    assert same["p_value"] == 1.0


def _fleiss_by_hand(x):
    n_raters, n_items = x.shape
    ones = x.sum(0)
    counts = np.stack([n_raters - ones, ones], 1)
    p_j = counts.sum(0) / (n_items * n_raters)
    p_i = ((counts ** 2).sum(1) - n_raters) / (n_raters * (n_raters - 1))
    p_bar, p_e = p_i.mean(), (p_j ** 2).sum()
    return (p_bar - p_e) / (1 - p_e)


def test_fleiss_kappa_by_hand():
    x = np.array([[1, 1, 0, 0, 1, 0],
                  [1, 0, 0, 0, 1, 1],
                  [1, 1, 0, 1, 1, 0]], float)
    # by hand: counts (0s,1s) per item: (0,3),(1,2),(3,0),(2,1),(0,3),(2,1); p_j = (8/18, 10/18)
    # P_i = (1, 1/3, 1, 1/3, 1, 1/3) -> P_bar = 2/3; P_e = (64+100)/324; kappa = (2/3 - 164/324)/(1 - 164/324)
    expect = (2 / 3 - 164 / 324) / (1 - 164 / 324)
    assert ev.fleiss_kappa(x) == pytest.approx(expect)
    assert ev.fleiss_kappa(x) == pytest.approx(_fleiss_by_hand(x))
    # incomplete items are dropped
    x2 = np.concatenate([x, [[1], [nan], [0]]], axis=1)
    assert ev.fleiss_kappa(x2) == pytest.approx(expect)
    assert ev.fleiss_kappa(x[:1]) is None


def test_krippendorff_alpha_nominal_by_hand():
    # 2 raters, 4 units: (1,1), (0,0), (1,0), (0, missing).
    # pairable values: unit1 1,1; unit2 0,0; unit3 1,0 -> n = 6 values; coincidences:
    # o_11 = 2 (unit1), o_00 = 2 (unit2), o_10 = o_01 = 1 (unit3); n_1 = 3, n_0 = 3
    # D_o = (o_10 + o_01) / n = 2/6; D_e = 2 n_0 n_1 / (n (n-1)) = 18/30; alpha = 1 - D_o/D_e = 1 - (1/3)/(3/5) = 4/9
    x = np.array([[1, 0, 1, 0], [1, 0, 0, nan]], float)
    assert ev.krippendorff_alpha(x) == pytest.approx(4 / 9)
    assert ev.krippendorff_alpha(np.array([[1, 1], [1, 1]], float)) is not None  # undefined -> NaN, not an error
    assert math.isnan(ev.krippendorff_alpha(np.array([[1, 1], [1, 1]], float)))


def test_analyse_is_json_safe_and_consistent():
    import json

    rng = np.random.default_rng(3)
    n = 60
    p_lat = np.linspace(0.95, 0.3, n)
    p_raw = np.linspace(0.8, 0.05, n)
    ya = (rng.random((3, n)) < p_lat).astype(float)
    yb = (rng.random((3, n)) < p_raw).astype(float)
    ya[2, 40:] = nan
    res = ev.analyse({"latent": ya, "raw": yb}, np.concatenate([ya, yb], 1), ["A", "B", "C"], window=11,
                     n_boot=200, n_perm=500)
    json.dumps(res)
    lat = res["methods"]["latent"]
    np.testing.assert_allclose(np.array(lat["smoothed"], float), ev.smoothed_accuracy(ya, 11))
    assert lat["last_rank_at_or_above_50"] == ev.last_rank_above(ev.smoothed_accuracy(ya, 11))
    assert res["permutation_tests"][0]["a"] == "latent" and res["permutation_tests"][0]["statistic"] > 0
    assert len(lat["experts"]) == 3 and lat["experts"][2]["n_rated"] == 40
