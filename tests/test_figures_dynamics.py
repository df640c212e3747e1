"""Pure tests of the dynamics figures: C2 axes in seconds, colour bar and limits, the diagonal
fix, the g2 fit curve and numbers, the rate panel of the timeline, the ordering sentence."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from dashboard.figures import dynamics as D
from dashboard.figures.timeline import timeline_figure


def _map(n=64, rate=0.5, step=0.1, spike=0.3, seed=0):
    t = np.arange(n) * step
    lag = np.abs(t[:, None] - t[None, :])
    c2 = 0.05 + 0.6 * np.exp(-2 * (rate * lag) ** 1.3)
    c2 += np.random.default_rng(seed).normal(0, 0.01, c2.shape)
    c2[np.diag_indices(n)] += spike  # the correlator's spiky diagonal
    return c2.astype(np.float32)


def test_correct_diagonal_takes_the_mean_of_the_neighbouring_off_diagonals():
    c2 = _map(8)
    fixed = D.correct_diagonal(c2)
    i = 3
    expected = np.mean([c2[i, i + 1], c2[i + 1, i], c2[i - 1, i], c2[i, i - 1]])
    assert fixed[i, i] == pytest.approx(expected, rel=1e-6)
    assert fixed[0, 0] == pytest.approx((c2[0, 1] + c2[1, 0]) / 2, rel=1e-6)
    assert fixed[7, 7] == pytest.approx((c2[6, 7] + c2[7, 6]) / 2, rel=1e-6)
    off = ~np.eye(8, dtype=bool)
    np.testing.assert_array_equal(fixed[off], c2[off])  # only the diagonal changes
    assert c2[3, 3] > fixed[3, 3] + 0.2  # the spike is gone, the input untouched


def test_c2_map_axes_are_in_seconds_with_a_colour_bar_at_percentile_limits():
    c2 = _map(64, step=0.1)
    fig = D.c2_map_figure(c2, time_step_s=0.1, limits="1-99", diagonal_fix=True)
    assert fig.layout.xaxis.range == (0.0, pytest.approx(6.4)) and fig.layout.yaxis.range[1] == pytest.approx(6.4)
    assert "(s)" in fig.layout.xaxis.title.text and fig.layout.xaxis.title.text.startswith("t1")
    assert fig.layout.yaxis.title.text.startswith("t2") and fig.layout.yaxis.scaleanchor == "x"
    bar = [t for t in fig.data if t.name == "colour scale"][0]
    assert bar.marker.showscale is True and bar.marker.colorbar.title.text == "C2"
    lo, hi = np.percentile(D.correct_diagonal(c2), [1, 99])
    assert bar.marker.cmin == pytest.approx(lo, rel=1e-5) and bar.marker.cmax == pytest.approx(hi, rel=1e-5)
    img = fig.layout.images[0]
    assert img.source.startswith("data:image/png;base64,") and img.sizex == pytest.approx(6.4)
    from PIL import Image

    png = Image.open(io.BytesIO(base64.b64decode(img.source.split(",", 1)[1])))
    assert png.size == (64, 64)
    # no heatmap array of the map goes to the browser
    assert all(t.type != "heatmap" for t in fig.data)


def test_c2_map_without_a_time_step_is_in_pixels_and_says_so():
    fig = D.c2_map_figure(_map(32), time_step_s=None)
    assert "pixel; time step unknown" in fig.layout.xaxis.title.text
    assert fig.layout.xaxis.range == (0.0, 32.0)
    assert fig.layout.meta["unit"] == "pixel"


def test_diagonal_fix_and_limits_change_the_colour_range():
    c2 = _map(64, spike=5.0)
    raw = D.c2_map_figure(c2, time_step_s=0.1, limits="minmax", diagonal_fix=False).layout.meta
    fixed = D.c2_map_figure(c2, time_step_s=0.1, limits="minmax", diagonal_fix=True).layout.meta
    assert raw["vmax"] > 5.0 > fixed["vmax"]  # the spike set the range until corrected
    assert D.color_limits(c2, "1-99")[1] < D.color_limits(c2, "minmax")[1]
    with pytest.raises(ValueError):
        D.color_limits(c2, "2-98 nonsense")


def test_g2_panel_draws_the_fitted_curve_and_the_numbers():
    lag = np.arange(1, 100) * 0.1
    fit = dict(relaxation_rate=0.5, rate_stderr=0.02, stretching=1.3, stretching_stderr=0.05, contrast=0.6,
               contrast_stderr=0.01, baseline=0.05, baseline_stderr=0.003, fit_r2=0.991, fit_status=0)
    g2 = D.stretched_exponential(lag, 0.5, 1.3, 0.6, 0.05)
    fig = D.g2_figure(lag, g2, fit, lag_unit="s", rate_unit="1/s")
    curve = [t for t in fig.data if t.name == "fit"][0]
    np.testing.assert_allclose(curve.y, D.stretched_exponential(np.asarray(curve.x), 0.5, 1.3, 0.6, 0.05))
    assert curve.x[0] == pytest.approx(0.1) and curve.x[-1] == pytest.approx(9.9)
    assert fig.layout.xaxis.type == "log" and "lag τ (s)" == fig.layout.xaxis.title.text
    numbers = fig.layout.meta["fit"]
    assert numbers["relaxation rate Γ"] == "0.5 ± 0.02 1/s"
    assert numbers["stretching γ"] == "1.3 ± 0.05" and numbers["R²"] == "0.991"
    assert numbers["fit status"] == "ok" and numbers["relaxation time 1/Γ"] == "2 s"
    note = [a for a in fig.layout.annotations if a.name == "fit-numbers"][0].text
    assert "Γ: 0.5 ± 0.02 1/s" in note and "baseline: 0.05 ± 0.003" in note


def test_g2_panel_without_a_fit_draws_no_curve_and_says_failed():
    lag = np.arange(1, 50, dtype=float)
    fit = dict(relaxation_rate=np.nan, fit_status=3, fit_r2=np.nan)
    fig = D.g2_figure(lag, np.ones(49), fit, lag_unit="pixel", rate_unit="1/pixel")
    assert not [t for t in fig.data if t.name == "fit"]
    assert fig.layout.meta["fit"]["fit status"] == "failed"
    assert fig.layout.meta["fit"]["relaxation rate Γ"] == "n/a"
    assert "time step unknown" in fig.layout.xaxis.title.text


def test_rate_per_time_gives_medians_and_quartiles_per_class_from_ok_fits_only():
    ti = np.array([0, 0, 0, 1, 1, 1, 0])
    rate = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 99.0, 1000.0])
    status = np.array([0, 0, 0, 0, 0, 3, 0])
    cls = np.array(["flow", "flow", "flow", "vorticity", "vorticity", "vorticity", "other"])
    out = D.rate_per_time(ti, 2, rate, status, cls)
    assert out["flow"]["median"][0] == 2.0 and np.isnan(out["flow"]["median"][1])
    assert out["flow"]["q25"][0] == 1.5 and out["flow"]["q75"][0] == 2.5
    assert out["vorticity"]["median"][1] == 15.0 and out["vorticity"]["n"].tolist() == [0, 2]  # failed fit left out
    assert "other" not in out


def test_timeline_gains_a_log_rate_row_on_the_shared_time_axis():
    times = np.array([0.0, 60.0, 120.0])
    counts = np.array([[3, 1], [2, 2], [1, 3]])
    rates = D.rate_per_time([0, 1, 2, 0, 1, 2], 3, [1, 2, 3, 0.1, 0.2, 0.3], np.zeros(6),
                            ["flow"] * 3 + ["vorticity"] * 3)
    st = np.linspace(-10, 130, 50)
    fig = timeline_figure(times, counts, st, 50 + np.sin(st), [60.0], rates=rates, rate_unit="1/s")
    med = [t for t in fig.data if t.name == "flow median rate"][0]
    assert med.xaxis == "x3" and list(med.y) == [1, 2, 3]
    assert fig.layout.yaxis3.type == "log" and fig.layout.yaxis3.title.text == "fitted Γ (1/s)"
    assert fig.layout.xaxis.matches == "x3" and fig.layout.xaxis2.matches == "x3"
    assert [t for t in fig.data if t.name == "vorticity IQR"][0].fill == "toself"
    bars = [t for t in fig.data if t.type == "bar"]
    assert bars[0].xaxis == "x2"
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted(s.xref for s in lines) == ["x", "x2", "x3"]  # the minimum on every row
    # without rates: the figure is unchanged (two rows)
    assert "xaxis3" not in timeline_figure(times, counts, st, 50 + np.sin(st)).layout.to_plotly_json()


def test_order_text_states_the_rule_and_spearman_or_says_unknown():
    text, unknown = D.order_text({"order_rule": "cluster 0 = slowest median fitted rate",
                                  "order_spearman_json": json.dumps({"3": 0.93, "5": 0.88, "8": 0.81}),
                                  "dynamics_source": "maps"})
    assert not unknown
    assert "cluster 0 = slowest median fitted rate" in text and "k = 3: +0.93" in text and "k = 8: +0.81" in text
    text, unknown = D.order_text({"order_rule": "unknown: latents only, no decoder", "dynamics_source": "none"})
    assert unknown and text.startswith("Cluster order unknown") and "not a ranking" in text
    text, unknown = D.order_text({"order_feature_name": "latent PC1 signed by time"})
    assert not unknown and "proxy" in text


def test_csv_exports_carry_the_rate_per_time_and_the_fits_per_cell():
    import csv

    from dashboard.exports import counts_csv, sector_time_csv

    text = counts_csv([0.0, 60.0], np.array([[2, 1], [0, 3]]), [60.0],
                      extra_columns={"rate_median_flow_per_s": np.array([0.5, np.nan]), "n_fits_flow": [2, 0]})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["rate_median_flow_per_s"] == "0.5" and rows[1]["rate_median_flow_per_s"] == ""
    assert rows[1]["n_fits_flow"] == "0" and rows[1]["stress_minimum"] == "1"
    with pytest.raises(ValueError):
        counts_csv([0.0, 60.0], np.array([[2, 1], [0, 3]]), extra_columns={"x": [1.0]})
    text = sector_time_csv([0.0, 60.0], [5, 9], np.array([[0, 1], [-1, 2]]), {5: "flow"}, [[0, 1], [-1, 2]],
                           map_columns={"relaxation_rate_per_s": np.array([0.1, 0.2, 0.3]),
                                        "fit_status": np.array(["ok", "failed", "ok"], dtype=object)})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["relaxation_rate_per_s"] for r in rows] == ["0.1", "0.2", "", "0.3"]
    assert [r["fit_status"] for r in rows] == ["ok", "failed", "", "ok"]


def test_order_text_of_the_precompute_rules():
    from ainerd_core.dynamics import ORDER_RULE, ORDER_UNKNOWN

    text, unknown = D.order_text({"order_rule": ORDER_UNKNOWN, "dynamics_source": "none",
                                  "order_spearman_json": "{}"})
    assert unknown and text.startswith("Cluster order unknown: no C2 maps") and "UNKNOWN" not in text
    text, unknown = D.order_text({"order_rule": ORDER_RULE, "dynamics_source": "maps",
                                  "order_spearman_json": json.dumps({"3": 0.9, "5": None})})
    assert not unknown and "k = 3: +0.90" in text and "k = 5: n/a" in text


def test_fit_numbers_sit_where_the_curve_is_not():
    lag = np.geomspace(0.1, 25, 200)
    slow = D.stretched_exponential(lag, 0.01, 1.0, 0.6, 0.1)  # still high at long lags
    fast = D.stretched_exponential(lag, 5.0, 1.0, 0.6, 0.1)   # decayed early
    pos = {}
    for name, g2 in (("slow", slow), ("fast", fast)):
        note = [a for a in D.g2_figure(lag, g2, {}).layout.annotations if a.name == "fit-numbers"][0]
        pos[name] = (note.x, note.y)
    assert pos["slow"] == (0.01, 0.01) and pos["fast"] == (0.99, 0.99)


def test_latent_map_colours_by_fitted_rate_with_failed_fits_grey():
    from dashboard.figures.latent_map import NO_FIT_COLOR, latent_figure

    xy = np.random.default_rng(0).normal(size=(6, 2))
    values = np.array([-1.0, 0.0, np.nan, 0.5, np.nan, 1.0])
    fig = latent_figure(xy, "rate", values, color_title="log10 fitted Γ (1/s)")
    grey = [t for t in fig.data if t.name == "no fit"][0]
    assert list(grey.customdata) == [2, 4] and grey.marker.color == NO_FIT_COLOR
    main = [t for t in fig.data if t.name == "log10 fitted rate"][0]
    assert list(main.customdata) == [0, 1, 3, 5] and main.marker.colorbar.title.text == "log10 fitted Γ (1/s)"


def test_fit_numbers_avoid_a_curve_that_decays_late_in_the_window():
    lag = np.geomspace(0.1, 25, 250)
    g2 = D.stretched_exponential(lag, 0.08, 1.3, 0.74, 0.1)  # high until a few s, decayed by 20 s
    note = [a for a in D.g2_figure(lag, g2, {}).layout.annotations if a.name == "fit-numbers"][0]
    assert (note.x, note.y) == (0.01, 0.01)
