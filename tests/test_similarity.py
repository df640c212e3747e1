"""ainerd_core.similarity: exact neighbours against brute-force numpy, streaming PCA, any target."""
from __future__ import annotations

import numpy as np
import pytest

from ainerd_core import similarity as S
from ainerd_core.dataset import open_dataset, write_dataset
from conftest import small_meta


def brute(x, k):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    d = np.stack([np.sqrt(((x - row) ** 2).sum(-1)) for row in x])
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


def test_knn_array_matches_brute_force(rng):
    x = rng.normal(size=(70, 5))
    idx, dist = S.knn_array(x, 6, block=16)
    bi, bd = brute(x, 6)
    np.testing.assert_array_equal(idx, bi)
    np.testing.assert_allclose(dist, bd, rtol=1e-5)


@pytest.mark.parametrize("block_rows,col_batch", [(8, 4), (12, 5), (1000, 256)])
def test_raw_knn_matches_brute_force(rng, block_rows, col_batch):
    maps = rng.random((37, 16, 16)).astype(np.float32)
    seen = []
    idx, dist = S.raw_knn(maps, 5, block_rows=block_rows, col_batch=col_batch,
                          on_block=lambda s, b: seen.append((s, len(b))))
    bi, bd = brute(maps, 5)
    np.testing.assert_allclose(dist, bd, rtol=1e-4)
    np.testing.assert_array_equal(idx, bi)
    assert sum(n for _, n in seen) == 37  # every map passes on_block exactly once
    assert idx.dtype == np.int32 and dist.dtype == np.float32


def _smoothed_reference(maps, sigma=S.SMOOTH_SIGMA_PX):
    """Each map Gaussian-filtered (SciPy, per map) and min-max renormalised, flattened."""
    from scipy.ndimage import gaussian_filter

    out = []
    for m in np.asarray(maps, np.float64):
        g = gaussian_filter(m, sigma)[::int(sigma), ::int(sigma)]  # sampled every floor(sigma) px
        out.append(((g - g.min()) / (g.max() - g.min())).ravel())
    return np.array(out, np.float32)


@pytest.mark.parametrize("block_rows", [8, 64])
def test_smoothed_knn_matches_brute_force_on_filtered_maps(rng, block_rows):
    maps = rng.random((29, 24, 24)).astype(np.float32)
    idx, dist = S.smoothed_knn(maps, 4, sigma_px=2.5, block_rows=block_rows)
    bi, bd = brute(_smoothed_reference(maps, 2.5), 4)   # 24 px sampled every 2 px: 12 x 12
    np.testing.assert_array_equal(idx, bi)
    np.testing.assert_allclose(dist, bd, rtol=1e-3, atol=1e-5)
    # smoothing changes who is near whom on noise (else the space would add nothing)
    assert (idx != S.raw_knn(maps, 4)[0]).any()


@pytest.mark.parametrize("space", ["smoothed", "raw"])
def test_pixel_neighbours_across_datasets_match_brute_force(rng, space):
    """/compare's pixel search: neighbours of one map among the maps of several datasets equal a
    brute-force search over all of them together (the chosen map itself excluded)."""
    a = rng.random((9, 24, 24)).astype(np.float32)
    b = np.concatenate([a[:3] * 0.5 + 0.2, rng.random((6, 24, 24)).astype(np.float32)])  # 3 rescaled twins
    both = np.concatenate([a, b])
    x = _smoothed_reference(both) if space == "smoothed" else both.reshape(len(both), -1)
    bi, bd = brute(x, 7)
    seen = []
    which, index, dist = S.pixel_neighbours_across([a, b], (0, 2), 7, space, batch_size=4,
                                                   on_batch=lambda done, n: seen.append((done, n)))
    np.testing.assert_array_equal(np.where(which == 0, index, index + len(a)), bi[2])
    np.testing.assert_allclose(dist, bd[2], rtol=1e-4, atol=1e-5)
    assert seen[-1] == (18, 18) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    if space == "smoothed":  # min-max renormalisation: the rescaled twin in the other dataset is at 0
        assert (which[0], index[0]) == (1, 2) and dist[0] < 1e-4
    with pytest.raises(S.InputError, match="differ in size"):
        S.pixel_neighbours_across([a, rng.random((2, 16, 16))], (0, 0), 3, space)


def test_raw_knn_k_larger_than_n(rng):
    maps = rng.random((4, 8, 8)).astype(np.float32)
    idx, dist = S.raw_knn(maps, 10)
    assert idx.shape == (4, 3)
    assert all(i not in row for i, row in enumerate(idx))


def low_rank_maps(rng, n=60, size=16, rank=3):
    basis = rng.random((rank, size * size)).astype(np.float32)
    coef = rng.normal(size=(n, rank)).astype(np.float32)
    x = coef @ basis + 0.5
    x += rng.normal(0, 1e-3, x.shape).astype(np.float32)
    return x.reshape(n, size, size)


def test_streaming_pca_matches_exact_pca(rng):
    maps = low_rank_maps(rng)
    pca, norms = S.fit_pca_stream(maps, n_components=3, batch_size=16, seed=0)
    from sklearn.decomposition import PCA

    ref = PCA(3).fit(maps.reshape(60, -1))
    np.testing.assert_allclose(pca.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-3)
    # same subspace: |cos| of the component pairs ~ 1
    cos = np.abs((pca.components_ * ref.components_).sum(1))
    np.testing.assert_allclose(cos, 1, atol=1e-3)
    # scores reproduce the projection, and uploads are projected the same way
    np.testing.assert_allclose(np.abs(pca.scores_), np.abs(ref.transform(maps.reshape(60, -1))), atol=1e-2)
    np.testing.assert_allclose(S.pca_transform(pca.components_, pca.mean_, maps), pca.scores_, atol=1e-3)
    np.testing.assert_allclose(norms, (maps.reshape(60, -1).astype(np.float64) ** 2).sum(1), rtol=1e-5)


@pytest.fixture
def small_ds(tmp_path, rng):
    n = 24
    maps = rng.random((n, 256, 256)).astype(np.float32)
    lat = rng.random((n, 8)).astype(np.float32)
    p = write_dataset(tmp_path / "s.h5", meta=small_meta(n), maps=maps, latents=lat)
    return p, maps, lat


def test_nearest_neighbours_every_space(small_ds):
    path, maps, lat = small_ds
    flat = maps.reshape(len(maps), -1)
    pca, _ = S.fit_pca_stream(maps, 8, batch_size=10)
    parts = {"latent": lat, "maps": maps, "pca": pca.scores_, "pca_components": pca.components_,
             "pca_mean": pca.mean_}
    smooth = _smoothed_reference(maps)
    with open_dataset(path) as ds:
        for space, x in (("latent", lat), ("raw", flat), ("pca", pca.scores_), ("smoothed", smooth)):
            bi, bd = brute(x, 5)
            for src in (parts, {**parts, "maps": ds}):
                idx, dist = S.nearest_neighbours(src, 7, space, k=5)
                np.testing.assert_array_equal(idx, bi[7])
                np.testing.assert_allclose(dist, bd[7], rtol=1e-4)
            ti, td = S.neighbours_of_targets({**parts, "maps": ds}, [3, 7], space, 5)
            np.testing.assert_array_equal(ti, bi[[3, 7]])
            np.testing.assert_allclose(td, bd[[3, 7]], rtol=1e-4)
        # an uploaded map: raw and PCA (self not excluded: it is not a dataset map)
        up = maps[7] * 0.5 + 0.25
        idx, dist = S.nearest_neighbours({**parts, "maps": ds}, up, "raw", k=3)
        d = np.sqrt(((flat - up.reshape(-1)) ** 2).sum(1))
        np.testing.assert_array_equal(idx, np.argsort(d)[:3])
        np.testing.assert_allclose(dist, np.sort(d)[:3], rtol=1e-4)
        idx, dist = S.nearest_neighbours({**parts, "maps": ds}, up, "smoothed", k=3)
        d = np.sqrt(((smooth - _smoothed_reference(up[None])[0]) ** 2).sum(1))
        assert idx[0] == 7 and dist[0] < 1e-3  # min-max renormalisation undoes the affine change
        np.testing.assert_array_equal(idx, np.argsort(d)[:3])
        np.testing.assert_allclose(dist, np.sort(d)[:3], rtol=1e-4, atol=1e-3)
        idx, _ = S.nearest_neighbours(parts, up, "pca", k=3)
        z = S.pca_transform(pca.components_, pca.mean_, up[None])[0]
        np.testing.assert_array_equal(idx, np.argsort(((pca.scores_ - z) ** 2).sum(1))[:3])
        # the Dataset itself as the source (latents shipped with the data, no results yet)
        idx, _ = S.nearest_neighbours(ds, 7, "latent", k=5)
        np.testing.assert_array_equal(idx, brute(lat, 5)[0][7])


def test_nearest_neighbours_uploaded_latent_needs_model(small_ds):
    from ainerd_core.errors import InputError

    _, maps, lat = small_ds
    with pytest.raises(InputError, match="model"):
        S.nearest_neighbours({"latent": lat}, maps[0], "latent", k=3)
    with pytest.raises(InputError, match="unknown space"):
        S.nearest_neighbours({"latent": lat}, 0, "pixels", k=3)
    with pytest.raises(InputError, match="raw"):
        S.nearest_neighbours({"latent": lat}, 0, "raw", k=3)


def test_uploaded_map_encoded_with_model(small_ds):
    torch = pytest.importorskip("torch")
    from ainerd_core.model import Autoencoder, encode

    torch.manual_seed(0)
    model = Autoencoder(8).eval()
    _, maps, _ = small_ds
    lat = encode(model, maps)
    idx, dist = S.nearest_neighbours({"latent": lat}, maps[5], "latent", k=4, model=model)
    d = np.sqrt(((lat.astype(np.float64) - lat[5]) ** 2).sum(1))
    assert idx[0] == 5 and dist[0] < 1e-4  # the map itself is its own nearest neighbour
    np.testing.assert_array_equal(idx, np.lexsort((np.arange(len(d)), d))[:4])


def test_distance_distributions():
    d = np.arange(20 * 120, dtype=np.float32).reshape(20, 120)
    out = S.distance_distributions(d)
    assert set(out) == {1, 10, 100}
    np.testing.assert_array_equal(out[10], d[:, 9])
    assert set(S.distance_distributions(d[:, :50])) == {1, 10}


def slow_spectrum_maps(rng, n=150, size=24):
    """Maps whose PCA spectrum decays slowly (the regime where a randomized sketch drifts)."""
    basis = rng.random((40, size * size))
    coef = rng.normal(size=(n, 40)) * (0.9 ** np.arange(40))
    return (coef @ basis / 10 + 0.4 + rng.normal(0, 0.02, (n, size * size))).astype(np.float32).reshape(n, size, size)


@pytest.mark.parametrize("route", ["raw_knn", "own_pass"])
def test_exact_pca_equals_svd(rng, route):
    """The exact PCA (Gram matrix from the raw-neighbour pass, or its own streamed pass) equals a
    float64 SVD of the centred maps: same explained variance, same top-10 neighbours, subspace
    angles ~0, and uploads project onto the same scores."""
    maps = slow_spectrum_maps(rng)
    flat = maps.reshape(len(maps), -1)
    xc = flat.astype(np.float64) - flat.mean(0, dtype=np.float64)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    ref_scores, ref_comp = (xc @ vt[:20].T), vt[:20]
    if route == "raw_knn":
        pca = S.ExactPCA(len(maps), flat.shape[1], 20)
        for st in range(0, len(maps), 32):
            pca.add_sketch(st, flat[st:st + 32])
        S.raw_knn(maps, 10, block_rows=64, col_batch=16, gram=pca.gram)
        pca.finish(S.MapSource(maps), batch_size=40)
    else:
        pca, _, rule = S.fit_pca(maps, 20, batch_size=40)
        assert rule.startswith("exact PCA")
    np.testing.assert_allclose(pca.explained_variance_ratio_, s[:20] ** 2 / (s ** 2).sum(), rtol=1e-4)
    assert S.subspace_angles_deg(pca.components_, ref_comp).max() < 0.05
    np.testing.assert_allclose(np.abs(pca.scores_), np.abs(ref_scores), atol=2e-3 * np.abs(ref_scores).max())
    assert S.neighbour_overlap(S.knn_array(pca.scores_, 10)[0], S.knn_array(ref_scores, 10)[0]) == 1.0
    np.testing.assert_allclose(S.pca_transform(pca.components_, pca.mean_, maps), pca.scores_, atol=1e-3)


def test_randomized_pca_with_one_power_iteration_is_not_exact(rng):
    """The old baseline: the 1-iteration sketch drifts from the exact subspace on a slowly
    decaying spectrum (which is why the exact PCA replaced it)."""
    maps = slow_spectrum_maps(rng)
    exact, _, _ = S.fit_pca(maps, 20)
    sketch, _ = S.fit_pca_stream(maps, 20, n_iter=1, seed=0)
    assert S.subspace_angles_deg(sketch.components_, exact.components_).max() > 1.0
