"""Figure builders of the similarity, clusters and model pages hold the right data."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard.figures import clusters as fc
from dashboard.figures import model as fm
from dashboard.figures import similarity as fs


def _urls(n, prefix="u"):
    return [f"/img/{prefix}{i}.png" for i in range(n)]


# --------------------------------------------------------------------------- similarity
def test_image_grid_places_tiles_row_major():
    fig = fs.image_grid_figure(_urls(7), 3, captions=[str(i) for i in range(7)],
                               customdata=[[i] for i in range(7)], border_colors=["red"] + [None] * 6)
    imgs = fig.layout.images
    assert [im.source for im in imgs] == _urls(7)
    # tile 4 is row 1, column 1; rows are 1 + CAPTION_H apart (captions below each tile)
    pitch = 1 + fs.CAPTION_H
    assert imgs[4].x == pytest.approx(1.04) and imgs[4].y == pytest.approx(-pitch - 0.04)
    tr = fig.data[0]
    assert list(tr.x) == [0.5, 1.5, 2.5, 0.5, 1.5, 2.5, 0.5]
    np.testing.assert_allclose(tr.y, [-0.5] * 3 + [-pitch - 0.5] * 3 + [-2 * pitch - 0.5])
    assert [c[0] for c in tr.customdata] == list(range(7))
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].line.color == "red"


def test_neighbour_grid_sorted_by_distance_with_rank_and_relevance():
    index = np.array([40, 7, 12, 3])
    dist = np.array([0.9, 0.1, 0.5, 0.5])
    urls = [f"/img/{i}.png" for i in index]
    relevant = [False, True, True, None]
    fig = fs.neighbour_grid_figure("latent", index, dist, urls, n_cols=2, relevant=relevant)
    custom = fig.data[0].customdata
    assert [c[0] for c in custom] == [7, 3, 12, 40]            # by distance, ties -> lower index
    assert [c[1] for c in custom] == pytest.approx([0.1, 0.5, 0.5, 0.9])
    assert [c[2] for c in custom] == [1, 2, 3, 4]
    assert [im.source for im in fig.layout.images] == ["/img/7.png", "/img/3.png", "/img/12.png", "/img/40.png"]
    assert fig.layout.meta["index"] == [7, 3, 12, 40]
    # frames: relevant green, not relevant red, unknown none
    colors = [s.line.color for s in fig.layout.shapes]
    assert colors == [fs.RELEVANT_COLORS[True], fs.RELEVANT_COLORS[True], fs.RELEVANT_COLORS[False]]
    assert "relevant: NO" in fig.data[0].text[3]
    assert fig.layout.annotations[0].text.startswith("#1")


def test_distance_distribution_histograms_of_the_right_columns(rng):
    lat = np.sort(rng.random((50, 120)), axis=1)
    raw = np.sort(rng.random((50, 120)) * 100, axis=1)
    fig = fs.distance_distribution_figure({"latent": lat, "raw": raw}, ranks=(1, 10, 100),
                                          target={"latent": lat[0], "raw": raw[0]})
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {f"{s}: {r} neighbour" for s in ("latent", "raw") for r in ("1st", "10th", "100th")}
    np.testing.assert_allclose(by_name["latent: 1st neighbour"].x, lat[:, 0])
    np.testing.assert_allclose(by_name["latent: 10th neighbour"].x, lat[:, 9])
    np.testing.assert_allclose(by_name["raw: 100th neighbour"].x, raw[:, 99])
    # latent and raw live on their own x axes
    assert by_name["latent: 1st neighbour"].xaxis != by_name["raw: 1st neighbour"].xaxis
    # the target's distances are marked
    xs = sorted(s.x0 for s in fig.layout.shapes)
    assert lat[0, 9] in xs and raw[0, 99] in xs


def test_distance_distribution_skips_ranks_above_k():
    d = np.sort(np.random.default_rng(1).random((20, 12)), axis=1)
    fig = fs.distance_distribution_figure({"latent": d})
    assert [t.name for t in fig.data] == ["latent: 1st neighbour", "latent: 10th neighbour"]


def test_target_umap_highlights_target_and_neighbours(rng):
    xy = rng.random((30, 2))
    fig = fs.target_umap_figure(xy, target=4, latent_nn=[1, 2], raw_nn=[5])
    assert list(fig.data[0].customdata) == list(range(30))
    names = [t.name for t in fig.data]
    assert names == ["maps", "latent neighbours", "raw-pixel neighbours", "target"]
    assert list(fig.data[3].customdata) == [4] and fig.data[3].x[0] == xy[4, 0]


# --------------------------------------------------------------------------- clusters
SWEEP = {"k": np.arange(2, 13), "inertia": np.linspace(100, 10, 11) ** 1.1,
         "silhouette": np.r_[0.3, 0.35, 0.5, 0.45, 0.4, 0.3, 0.2, 0.2, 0.1, 0.1, 0.1],
         "davies_bouldin": np.linspace(1, 2, 11), "calinski_harabasz": np.linspace(300, 100, 11)}


def test_k_sweep_holds_the_metrics_and_marks_chosen_and_suggested_k():
    fig = fc.k_sweep_figure(SWEEP, chosen_k=5, suggested_k=4)
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    np.testing.assert_allclose(lines["inertia"].y, SWEEP["inertia"])
    np.testing.assert_allclose(lines["silhouette"].y, SWEEP["silhouette"])
    np.testing.assert_allclose(lines["davies_bouldin"].y, SWEEP["davies_bouldin"])
    np.testing.assert_allclose(lines["calinski_harabasz"].y, SWEEP["calinski_harabasz"])
    assert list(lines["inertia"].x) == list(range(2, 13))
    chosen = [t for t in fig.data if t.name == "chosen k"]
    assert len(chosen) == 4 and all(t.x[0] == 5 for t in chosen)
    assert chosen[0].y[0] == pytest.approx(SWEEP["inertia"][3])
    assert chosen[1].y[0] == pytest.approx(SWEEP["silhouette"][3])
    suggested = [t for t in fig.data if t.name == "suggested k"]
    assert len(suggested) == 4 and suggested[1].y[0] == pytest.approx(0.5)
    vlines = [s.x0 for s in fig.layout.shapes]
    assert vlines.count(5) == 4 and vlines.count(4) == 4
    assert fig.layout.meta["chosen_k"] == 5 and fig.layout.meta["suggested_k"] == 4


def test_k_sweep_same_suggested_and_chosen_draws_one_mark():
    fig = fc.k_sweep_figure(SWEEP, chosen_k=5, suggested_k=5)
    assert not [t for t in fig.data if t.name == "suggested k"]


def test_k_compare_umap_panels(rng):
    xy = rng.random((40, 2))
    labs = {3: rng.integers(0, 3, 40), 5: rng.integers(0, 5, 40), 8: rng.integers(0, 8, 40)}
    fig = fc.k_compare_umap_figure(xy, labs)
    assert [a.text for a in fig.layout.annotations] == ["k = 3", "k = 5", "k = 8"]
    for k, lab in labs.items():
        traces = [t for t in fig.data if t.meta["panel"] == f"k = {k}"]
        assert sorted(t.meta["label"] for t in traces) == sorted(np.unique(lab).tolist())
        for t in traces:
            np.testing.assert_array_equal(np.sort(t.customdata), np.flatnonzero(lab == t.meta["label"]))
            np.testing.assert_allclose(t.x, xy[t.customdata, 0])
    # the same cluster has the same colour in every panel
    c1 = {t.marker.color for t in fig.data if t.meta["label"] == 1}
    assert len(c1) == 1


def test_latent_vs_raw_umap_uses_same_labels(rng):
    u, r = rng.random((30, 2)), rng.random((30, 2)) + 5
    lab = rng.integers(0, 3, 30)
    fig = fc.latent_vs_raw_umap_figure(u, r, lab)
    raw = [t for t in fig.data if t.meta["panel"].startswith("UMAP of raw")]
    for t in raw:
        np.testing.assert_allclose(t.x, r[t.customdata, 0])
        assert set(lab[t.customdata]) == {t.meta["label"]}


def test_counts_over_time_stacked_per_k(rng):
    times = np.arange(6) * 60.0
    counts = {3: rng.integers(0, 9, (6, 3)), 5: rng.integers(0, 9, (6, 5))}
    fig = fc.counts_over_time_figure(times, counts)
    assert fig.layout.barmode == "stack"
    for t in fig.data:
        np.testing.assert_array_equal(t.y, counts[t.meta["k"]][:, t.meta["label"]])
        np.testing.assert_allclose(t.x, times)
    assert len(fig.data) == 8


def test_algorithm_sizes_and_summary():
    labs = {"kmeans": np.array([0, 0, 0, 1, 1, 2]), "dbscan": np.array([0, 0, 0, 0, -1, -1])}
    fig = fc.algorithm_sizes_figure(labs)
    by = {t.name: t for t in fig.data}
    assert list(by["1. largest"].x) == [3, 4] and list(by["1. largest"].y) == ["kmeans", "dbscan"]
    assert list(by["2. largest"].x) == [2, 0] and list(by["3. largest"].x) == [1, 0]
    assert list(by["noise"].x) == [0, 2]
    rows = fc.algorithm_summary(labs)
    assert rows[0] == {"algorithm": "kmeans", "n_clusters": 3, "noise": 0, "largest_share": 0.5, "sizes": "3 2 1"}
    assert rows[1]["noise"] == 2 and rows[1]["n_clusters"] == 1


def test_stability_boxes_hold_the_ari_arrays():
    a, b = np.array([0.9, 0.95, 1.0]), np.array([0.7, 0.8])
    fig = fc.stability_figure({"seeds": a, "bootstrap": b})
    assert [t.name for t in fig.data] == ["seeds", "bootstrap"]
    np.testing.assert_allclose(fig.data[0].y, a)
    np.testing.assert_allclose(fig.data[1].y, b)


def test_draw_examples_random_seeded_members_only():
    labels = np.repeat([0, 1, 2], [10, 3, 20])
    a = fc.draw_examples(labels, 5, seed=1)
    b = fc.draw_examples(labels, 5, seed=1)
    c = fc.draw_examples(labels, 5, seed=2)
    assert {k: v.tolist() for k, v in a.items()} == {k: v.tolist() for k, v in b.items()}
    assert any(a[k].tolist() != c[k].tolist() for k in a)
    assert len(a[1]) == 3 and len(a[0]) == 5 and len(set(a[2].tolist())) == 5
    for lab, idx in a.items():
        assert (labels[idx] == lab).all()
    fig = fc.examples_figure(a, {k: [f"/i/{j}" for j in v] for k, v in a.items()}, 5, sizes={0: 10, 1: 3, 2: 20}, seed=1)
    custom = fig.data[0].customdata
    assert len(custom) == 15 and [c[0] for c in custom[:5]] == a[0].tolist()
    assert [c[0] for c in custom[5:10]] == a[1].tolist() + [-1, -1]
    assert len(fig.layout.images) == 13


# --------------------------------------------------------------------------- model
def test_learning_curve_marks_best_validation_epoch():
    ep = np.arange(1, 6)
    fig = fm.learning_curve_figure(ep, [5, 4, 3, 2, 1], [6, 3, 2.5, 2.7, 2.9])
    by = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by["train loss"].y, [5, 4, 3, 2, 1])
    np.testing.assert_allclose(by["validation loss"].y, [6, 3, 2.5, 2.7, 2.9])
    assert by["best checkpoint"].x[0] == 3 and fig.layout.meta["best_epoch"] == 3


def test_latent_sweep_sorted_and_in_use_marked():
    fig = fm.latent_sweep_figure([64, 2, 16, 4], [0.01, 0.05, 0.012, 0.03], chosen=64)
    np.testing.assert_allclose(fig.data[0].x, [2, 4, 16, 64])
    np.testing.assert_allclose(fig.data[0].y, [0.05, 0.03, 0.012, 0.01])
    assert fig.data[1].name == "in use" and fig.data[1].x[0] == 64
    assert fig.layout.xaxis.type == "log"


def test_reconstruction_pairs_inputs_above_outputs():
    idx = [11, 5, 9]
    fig = fm.reconstruction_figure(idx, _urls(3, "in"), _urls(3, "out"), mse=[0.1, 0.2, 0.3], n_cols=2)
    srcs = [im.source for im in fig.layout.images]
    assert srcs == ["/img/in0.png", "/img/in1.png", "/img/out0.png", "/img/out1.png", "/img/in2.png", "/img/out2.png"]
    custom = fig.data[0].customdata
    assert [list(c) for c in custom[:4]] == [[11, 0], [5, 0], [11, 1], [5, 1]]


def test_noise_grid_is_four_by_four():
    fig = fm.noise_grid_figure(_urls(16), sigma=0.3)
    assert len(fig.layout.images) == 16
    assert max(im.x for im in fig.layout.images) < 4 and min(im.y for im in fig.layout.images) < -3
    assert "0.3" in fig.layout.title.text


# --------------------------------------------------------------------------- uploads (similarity page)
def _npy_contents(arr) -> str:
    import base64
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return "data:application/octet-stream;base64," + base64.b64encode(buf.getvalue()).decode()


def test_parse_upload_normalises_any_square_map(rng):
    from dashboard.pages.similarity import parse_upload

    a = rng.random((384, 384)) * 7 + 2
    out = parse_upload(_npy_contents(a), "t.npy")
    assert out.shape == (256, 256) and out.dtype == np.float32
    assert out.min() == pytest.approx(0) and out.max() == pytest.approx(1)
    published = pytest.importorskip("conftest").E031 / "target_c2.npy"
    if published.exists():
        t = np.load(published)
        np.testing.assert_allclose(parse_upload(_npy_contents(t), "target_c2.npy"), t, atol=1e-6)


@pytest.mark.parametrize("arr, name, match", [
    (np.zeros((10, 12)), "x.npy", "square"),
    (np.full((64, 64), np.nan), "x.npy", "NaN"),
    (np.zeros((64, 64)), "x.png", ".npy"),
    (np.array([{"a": 1}], dtype=object), "x.npy", "object values"),
])
def test_parse_upload_rejects_bad_files(arr, name, match):
    from dashboard.pages.similarity import parse_upload

    import base64
    import io
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    contents = "data:;base64," + base64.b64encode(buf.getvalue()).decode()
    with pytest.raises(ValueError, match=match):
        parse_upload(contents, name)


def test_recluster_renumbered_slowest_first(rng):
    """Re-clustering on /clusters goes through analysis.recluster (k-means and other algorithms),
    renumbered like precompute (0 = slowest)."""
    from ainerd_core.analysis import recluster

    centers = np.array([[0.0] * 4, [5.0] * 4, [10.0] * 4])
    x = np.concatenate([c + rng.normal(0, 0.3, (20, 4)) for c in centers])
    slowness = np.repeat([1.0, 3.0, 2.0], 20)          # the middle blob is the slowest
    lab = recluster(x, 3, "kmeans", slowness)
    assert (lab[20:40] == 0).all() and (lab[40:] == 1).all() and (lab[:20] == 2).all()
    birch = recluster(x, 3, "birch", slowness)
    assert sorted(np.unique(birch).tolist()) == [0, 1, 2] and (birch[20:40] == 0).all()


def test_point_clouds_use_webgl_only_when_large(rng):
    small = fs.target_umap_figure(rng.random((50, 2)), labels=np.zeros(50, int), target=1)
    big = fs.target_umap_figure(rng.random((fs.WEBGL_MIN_POINTS, 2)), labels=np.zeros(fs.WEBGL_MIN_POINTS, int))
    assert {t.type for t in small.data} == {"scatter"}
    assert big.data[0].type == "scattergl"
    panels = fc.k_compare_umap_figure(rng.random((30, 2)), {3: rng.integers(0, 3, 30)})
    assert {t.type for t in panels.data} == {"scatter"}
