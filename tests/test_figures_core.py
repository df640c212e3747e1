"""The explorer's figure builders and CSV exports, without a server: the figures hold the data."""
from __future__ import annotations

import csv
import io

import numpy as np

from dashboard.figures.common import WEBGL_MIN_POINTS
import pytest

from dashboard.exports import counts_csv, figure_to_csv, points_csv, sector_time_csv
from dashboard.figures.common import (CLASS_COLORS, FLOW_COLOR, VORTICITY_COLOR, as_array, cluster_color,
                                      discrete_colorscale)
from dashboard.figures.latent_map import latent_figure
from dashboard.figures.sectors import sector_heatmap
from dashboard.figures.timeline import timeline_figure


@pytest.fixture
def table():
    rng = np.random.default_rng(1)
    times = np.arange(10) * 57.0 - 5.0
    counts = rng.multinomial(18, [0.3, 0.2, 0.2, 0.2, 0.1], size=10).astype(np.int32)
    t_r = np.linspace(-5, 600, 300)
    stress = 80 + 10 * np.cos(t_r / 40.0)
    minima = np.array([125.6, 377.0])
    return times, counts, t_r, stress, minima


def _bars(fig):
    return [t for t in fig.data if t.type == "bar"]


def test_timeline_bars_are_the_count_table(table):
    times, counts, t_r, stress, minima = table
    fig = timeline_figure(times, counts, t_r, stress, minima, k_label="k = 5")
    bars = _bars(fig)
    assert len(bars) == counts.shape[1]
    for c, bar in enumerate(bars):
        np.testing.assert_array_equal(bar.y, counts[:, c])
        np.testing.assert_array_equal(bar.x, times)
        np.testing.assert_array_equal(bar.customdata, np.arange(times.size))  # time index for clicks
        assert bar.marker.color == cluster_color(c)
        assert bar.name == f"cluster {c}"
    assert fig.layout.barmode == "stack"
    # stacked heights add up to the number of maps at each time
    np.testing.assert_array_equal(np.sum([b.y for b in bars], axis=0), counts.sum(1))


def test_timeline_shares_the_time_axis_and_marks_minima_on_both_rows(table):
    times, counts, t_r, stress, minima = table
    fig = timeline_figure(times, counts, t_r, stress, minima)
    stress_trace = [t for t in fig.data if t.type == "scatter"][0]
    np.testing.assert_allclose(stress_trace.y, stress)
    assert stress_trace.xaxis == "x" and _bars(fig)[0].xaxis == "x2"
    assert fig.layout.xaxis.matches == "x2"  # zooming one zooms both
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 2 * minima.size
    for t in minima:
        on = [s for s in lines if s.x0 == pytest.approx(t) and s.x1 == pytest.approx(t)]
        assert sorted(s.xref for s in on) == ["x", "x2"]
    # the stress axis is focused on the post-cessation relaxation
    lo, hi = fig.layout.yaxis.range
    assert lo <= stress[t_r > 0].min() and hi >= stress[t_r > 0].max() and hi < 100


def test_timeline_without_rheology_is_the_histogram_alone(table):
    times, counts, *_ = table
    fig = timeline_figure(times, counts)
    assert [t.type for t in fig.data] == ["bar"] * counts.shape[1]
    assert not [s for s in fig.layout.shapes if s.type == "line"]
    assert "xaxis2" not in fig.layout.to_plotly_json()


def test_timeline_rejects_a_table_of_the_wrong_shape(table):
    times, counts, *_ = table
    with pytest.raises(ValueError):
        timeline_figure(times[:-1], counts)


def test_sector_heatmap_is_the_label_matrix_and_marks_flow_and_vorticity():
    times = np.arange(6) * 60.0
    sectors = np.arange(1, 19)
    labels = np.tile(np.arange(6) % 5, (18, 1)).astype(np.int32)
    labels[3, 2] = -1
    classes = {s: ("flow" if s in (5, 14) else "vorticity" if s in (1, 9, 10, 18) else "other") for s in sectors}
    mi = np.arange(18 * 6).reshape(18, 6)
    fig = sector_heatmap(times, sectors, labels, 5, classes, mi)
    hm = fig.data[0]
    assert hm.type == "heatmap"
    np.testing.assert_array_equal(np.asarray(hm.z), labels)
    np.testing.assert_array_equal(hm.x, times)
    np.testing.assert_array_equal(hm.y, sectors)
    np.testing.assert_array_equal(np.asarray(hm.customdata), mi)
    outlined = {s.name: s.line.color for s in fig.layout.shapes}
    assert outlined == {"flow-sector-5": FLOW_COLOR, "flow-sector-14": FLOW_COLOR,
                        **{f"vorticity-sector-{s}": VORTICITY_COLOR for s in (1, 9, 10, 18)}}
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext))
    assert "flow" not in ticks[4] and FLOW_COLOR in ticks[5] and VORTICITY_COLOR in ticks[9]
    # discrete colours: -1 (none) grey, then cluster colours, one flat band per level
    assert hm.zmin == -1.5 and hm.zmax == 4.5
    assert [c for _, c in hm.colorscale][2] == cluster_color(0)


def test_discrete_colorscale_steps():
    scale = discrete_colorscale(["#000", "#fff"])
    assert [p for p, _ in scale] == [0, 0.5, 0.5, 1.0]


@pytest.fixture
def cloud():
    rng = np.random.default_rng(2)
    n = 300
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    cls = np.array(["flow", "vorticity", "other"])[rng.integers(0, 3, n)]
    return xy, labels, cls


def test_latent_map_by_cluster_carries_map_indices_and_uses_webgl_only_when_large(cloud):
    xy, labels, _ = cloud
    fig = latent_figure(xy, "cluster", labels)
    assert all(t.type == "scatter" for t in fig.data)  # 300 points: SVG, no WebGL needed
    big = np.random.default_rng(0).normal(size=(WEBGL_MIN_POINTS, 2))
    assert all(t.type == "scattergl" for t in latent_figure(big, "cluster", np.zeros(len(big), int)).data)
    seen = np.concatenate([t.customdata for t in fig.data])
    assert sorted(seen.tolist()) == list(range(len(xy)))
    for t in fig.data:
        c = int(t.name.split()[-1])
        assert t.marker.color == cluster_color(c)
        assert np.all(labels[np.asarray(t.customdata)] == c)
        np.testing.assert_allclose(t.x, xy[np.asarray(t.customdata), 0])
    assert fig.layout.dragmode == "lasso"


def test_latent_map_colours_by_class(cloud):
    xy, _, cls = cloud
    fig = latent_figure(xy, "class", cls)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"flow", "vorticity", "other"}
    for name, t in by_name.items():
        assert t.marker.color == CLASS_COLORS[name]
        assert np.all(cls[np.asarray(t.customdata)] == name)


def test_latent_map_continuous_colour_and_flow_share_layer(cloud):
    xy, _, _ = cloud
    time = np.linspace(0, 2800, len(xy))
    gx, gy = np.linspace(-3, 3, 20), np.linspace(-2, 2, 16)
    share = np.random.default_rng(0).uniform(-1, 1, (16, 20)).astype(np.float32)
    share[0, 0] = np.nan
    fig = latent_figure(xy, "time", time, flow_share=(gx, gy, share),
                        highlights=[("t = 0 s", [0, 1, 2]), ("t = 60 s", [3, 4])])
    hm, pts, h1, h2 = fig.data
    assert hm.type == "heatmap" and hm.zmin == -1 and hm.zmax == 1
    np.testing.assert_array_equal(np.asarray(hm.z), share)
    assert hm.colorscale[0][1] == "#b2182b" and hm.colorscale[-1][1] == "#2166ac"  # red = vorticity, blue = flow
    assert dict(hm.colorscale)[0.5] == "#ffffff"
    np.testing.assert_allclose(pts.marker.color, time.astype(np.float32))
    assert pts.marker.colorbar.title.text == "time (s)"
    assert h1.name == "t = 0 s" and list(h1.customdata) == [0, 1, 2]
    assert list(h2.customdata) == [3, 4] and h2.marker.symbol != h1.marker.symbol


def test_event_customdata_is_sent_as_plain_lists(table, cloud):
    """dcc.Graph reads click/lasso customdata from gd.data, which it cannot do on base64 arrays."""
    times, counts, *_ = table
    xy, labels, _ = cloud
    figs = [timeline_figure(times, counts), latent_figure(xy, "cluster", labels, highlights=[("a", [1, 2])]),
            sector_heatmap(times[:2], np.array([1]), np.array([[0, 1]]), 2, None, np.array([[4, 5]]))]
    for fig in figs:
        for trace in fig.to_plotly_json()["data"]:
            if "customdata" in trace:
                assert isinstance(trace["customdata"], (list, tuple)), trace["type"]


def test_latent_map_checks_its_input(cloud):
    xy, labels, _ = cloud
    with pytest.raises(ValueError):
        latent_figure(xy, "cluster", labels[:-1])
    with pytest.raises(ValueError):
        latent_figure(xy, "colour of the sky", labels)


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_counts_csv_is_the_table(table):
    times, counts, _, _, minima = table
    rows = _rows(counts_csv(times, counts, minima))
    assert len(rows) == times.size
    assert [int(rows[3][f"cluster_{c}"]) for c in range(5)] == counts[3].tolist()
    assert float(rows[3]["time_s"]) == times[3]
    assert sum(int(r["stress_minimum"]) for r in rows) == minima.size


def test_figure_to_csv_reads_browser_json_with_typed_arrays(table):
    times, counts, t_r, stress, minima = table
    fig = timeline_figure(times, counts, t_r, stress, minima)
    as_json = fig.to_plotly_json()  # base64 typed arrays, as the browser holds them
    assert isinstance(as_json["data"][1]["y"], dict) and "bdata" in as_json["data"][1]["y"]
    rows = _rows(figure_to_csv(as_json))
    bars = [r for r in rows if r["name"] == "cluster 2"]
    assert [int(float(r["y"])) for r in bars] == counts[:, 2].tolist()
    assert len([r for r in rows if r["type"] == "shape"]) == 2 * minima.size
    assert len([r for r in rows if r["name"] == "shear stress"]) == t_r.size


def test_figure_to_csv_flattens_heatmaps():
    labels = np.array([[0, 1, 2], [2, -1, 0]])
    fig = sector_heatmap(np.array([0.0, 60, 120]), np.array([1, 2]), labels, 3, None, np.arange(6).reshape(2, 3))
    rows = [r for r in _rows(figure_to_csv(fig)) if r["type"] == "heatmap"]
    assert len(rows) == 6
    assert [int(float(r["z"])) for r in rows] == labels.ravel().tolist()
    assert [int(r["customdata"]) for r in rows] == list(range(6))


def test_sector_time_and_points_csv():
    labels = np.array([[0, 1], [-1, 2]])
    rows = _rows(sector_time_csv([0.0, 60.0], [5, 9], labels, {5: "flow", 9: "vorticity"}, [[0, 1], [-1, 3]]))
    assert rows[0] == {"sector": "5", "class": "flow", "time_s": "0.0", "label": "0", "map_index": "0"}
    assert rows[2]["map_index"] == "" and rows[2]["label"] == "-1"
    text = points_csv({"map_index": np.arange(4), "cluster": np.array([1, 0, 1, 2])}, indices=[3, 1])
    assert _rows(text) == [{"map_index": "3", "cluster": "2"}, {"map_index": "1", "cluster": "0"}]


def test_as_array_decodes_typed_arrays():
    from plotly.graph_objects import Heatmap

    z = np.arange(6, dtype=np.int32).reshape(2, 3)
    encoded = Heatmap(z=z).to_plotly_json()["z"]
    np.testing.assert_array_equal(as_array(encoded), z)


def test_timeline_with_hundreds_of_times_stacks_steps_of_the_same_counts():
    from dashboard.figures.timeline import DENSE_TIMES

    rng = np.random.default_rng(3)
    times = np.arange(DENSE_TIMES + 50) * 4.0
    counts = rng.multinomial(18, [0.4, 0.3, 0.3], size=times.size)
    fig = timeline_figure(times, counts, times, 80 + np.sin(times / 50), [100.0])
    areas = [t for t in fig.data if t.type == "scatter" and t.name.startswith("cluster")]
    assert len(areas) == 3 and not _bars(fig)
    for c, t in enumerate(areas):
        np.testing.assert_array_equal(t.y, counts[:, c])
        assert t.stackgroup == "clusters" and t.fillcolor == cluster_color(c) and t.xaxis == "x2"
        assert list(t.customdata) == list(range(times.size))
    assert fig.layout.hovermode == "x"  # a click anywhere in a time column picks that time
