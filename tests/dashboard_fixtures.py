"""Small precomputed datasets for the dashboard tests.

:func:`build_precomputed` makes a simulated experiment (``python -m ainerd_core simulate``,
8 times x 18 sectors = 144 maps by default) and its ``/results``: through the real pipeline
(``python -m ainerd_core precompute``); a failing pipeline fails the tests. Only with
``AINERD_FIXTURE_PIPELINE=synthetic`` does :func:`synthetic_results` stand in; it writes every array of the README "Results" table with
realistic values (latents = 8 x 8 block means of the map, k-means at k = 3, 5, 8 renumbered by
mean intensity, a PCA plane standing in for UMAP, tables, stress minima, flow share grid,
neighbours, reconstructions). ``AINERD_FIXTURE_PIPELINE=synthetic`` forces the synthetic
results (for working on the pages while the pipeline is broken).

:func:`build_latents_only` makes an E031-like latents-only dataset (900 maps, 50 times x 18
sectors, sector-major, ``source_kind='ainerd-published'``, no ``/c2``).

``explorer_data`` (session fixture) is a folder with ``demo.h5`` (precomputed, with maps) and
``e031.h5`` (latents only) (plus ``model.pt``, a checkpoint for reconstructions, when the
results are synthetic); it is cached across sessions, keyed by a hash of the pipeline's code
(:func:`build_explorer_data`). Import it into a test module with
``from dashboard_fixtures import explorer_data  # noqa: F401``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from ainerd_core.dataset import open_dataset, write_dataset, write_results
from ainerd_core.geometry import sector_class

REPO = Path(__file__).resolve().parents[1]

REQUIRED = ("latent", "labels", "umap", "labels_k3", "labels_k5", "labels_k8", "tables/times",
            "tables/time_index", "tables/counts", "tables/sector_time_labels", "tables/sectors",
            "stress_minima/time", "flow_share/share", "sector_class", "dynamics_score")


# --------------------------------------------------------------------------- synthetic results
def _renumber(labels: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Renumber labels so cluster 0 has the highest mean feature (broad band = slowest)."""
    ks = np.unique(labels[labels >= 0])
    means = np.array([feature[labels == k].mean() for k in ks])
    order = ks[np.argsort(-means)]
    mapping = {int(old): new for new, old in enumerate(order)}
    return np.array([mapping.get(int(v), -1) for v in labels], dtype=np.int32)


def _kmeans(latent, k, seed=0):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit(latent)


def _flow_share(umap2, cls, grid: int = 48):
    lo, hi = umap2.min(0), umap2.max(0)
    pad = 0.05 * (hi - lo + 1e-9)
    x = np.linspace(lo[0] - pad[0], hi[0] + pad[0], grid).astype(np.float32)
    y = np.linspace(lo[1] - pad[1], hi[1] + pad[1], grid).astype(np.float32)
    radius = 0.08 * float(np.max(hi - lo) + 1e-9)
    gx, gy = np.meshgrid(x, y)  # row index = y
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    is_flow, is_vort = (cls == "flow").astype(np.int32), (cls == "vorticity").astype(np.int32)
    share = np.empty(len(pts), np.float32)
    for a in range(0, len(pts), 64):  # chunks keep memory small for 13,000 points
        near = ((pts[a:a + 64, None, :] - umap2[None, :, :]) ** 2).sum(-1) <= radius ** 2
        n = near.sum(1)
        diff = near @ is_flow - near @ is_vort
        share[a:a + 64] = np.where(n > 0, diff / np.maximum(n, 1), np.nan)
    return x, y, share.reshape(grid, grid)


def _neighbours(x, k):
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x) - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return idx[:, 1:].astype(np.int32), dist[:, 1:].astype(np.float32)


def synthetic_results(path, k: int = 5, seed: int = 0, model_path: str | None = None, full: bool | None = None) -> dict:
    """Write a realistic ``/results`` following the README table; returns the arrays.

    ``full=False`` (default for more than 2,000 maps, e.g. the 13,000-map benchmark set) streams
    the maps once for the latents and skips what needs every map in memory (raw-pixel
    neighbours and PCA, reconstructions) and the slow algorithm/stability extras."""
    from scipy.ndimage import gaussian_filter
    from scipy.signal import find_peaks
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score, silhouette_score

    rng = np.random.default_rng(seed)
    with open_dataset(path) as ds:
        meta, attrs, rheo = ds.meta, ds.attrs, ds.rheology
        n = ds.n_maps
        full = n <= 2000 if full is None else full
        maps, latent = None, None
        if ds.has_maps and full:
            maps = np.stack([m for _, batch in ds.iter_maps(256) for m in batch])
        elif ds.has_maps:
            latent = np.empty((n, 64), np.float32)
            for start, batch in ds.iter_maps(256):
                latent[start:start + len(batch)] = batch.reshape(len(batch), 8, 32, 8, 32).mean(axis=(2, 4)).reshape(len(batch), 64)
        shipped = ds.latents
    if maps is not None:
        latent = maps.reshape(n, 8, 32, 8, 32).mean(axis=(2, 4)).reshape(n, 64).astype(np.float32)
        feature = maps.mean(axis=(1, 2)).astype(np.float32)
    elif latent is not None:
        feature = latent.mean(1).astype(np.float32)
    else:
        latent = np.asarray(shipped, dtype=np.float32)
        feature = latent.mean(1).astype(np.float32)
    res: dict[str, object] = {"latent": latent, "order_feature": feature}
    for kk in sorted({3, 5, 8, k}):
        res[f"labels_k{kk}"] = _renumber(_kmeans(latent, kk, seed).labels_, feature)
    res["labels"] = res[f"labels_k{k}"]
    ks = np.arange(2, 13)
    inertia, sil, dbi, chi = [], [], [], []
    sample = rng.choice(n, size=min(n, 2000), replace=False)
    for kk in ks:
        km = _kmeans(latent, int(kk), seed)
        inertia.append(km.inertia_)
        sil.append(silhouette_score(latent[sample], km.labels_[sample]))
        dbi.append(davies_bouldin_score(latent, km.labels_))
        chi.append(calinski_harabasz_score(latent, km.labels_))
    res.update({"kmeans/k": ks, "kmeans/inertia": np.array(inertia), "kmeans/silhouette": np.array(sil),
                "kmeans/davies_bouldin": np.array(dbi), "kmeans/calinski_harabasz": np.array(chi)})
    from sklearn.cluster import AgglomerativeClustering, Birch
    from sklearn.mixture import GaussianMixture

    if not full:
        res["algorithms/gmm"] = GaussianMixture(k, covariance_type="diag", random_state=seed).fit(latent).predict(latent).astype(np.int32)
        res["stability/ari_seeds"] = np.ones(10)
        res["stability/ari_bootstrap"] = np.ones(5)
        return _finish(path, res, latent, feature, meta, attrs, rheo, k, seed, model_path, rng, maps)
    res["algorithms/agglomerative"] = AgglomerativeClustering(n_clusters=k).fit_predict(latent).astype(np.int32)
    res["algorithms/birch"] = Birch(n_clusters=3).fit_predict(latent).astype(np.int32)
    res["algorithms/gmm"] = GaussianMixture(k, covariance_type="diag", random_state=seed).fit(latent).predict(latent).astype(np.int32)
    res["stability/ari_seeds"] = np.array([adjusted_rand_score(res["labels"], _kmeans(latent, k, s).labels_)
                                           for s in range(10)])
    res["stability/ari_bootstrap"] = np.clip(rng.normal(0.9, 0.04, 5), 0, 1)
    return _finish(path, res, latent, feature, meta, attrs, rheo, k, seed, model_path, rng, maps)


def _finish(path, res, latent, feature, meta, attrs, rheo, k, seed, model_path, rng, maps):
    from scipy.ndimage import gaussian_filter
    from scipy.signal import find_peaks
    from sklearn.decomposition import PCA

    n = latent.shape[0]
    umap2 = PCA(2, random_state=seed).fit_transform(latent).astype(np.float32)
    res["umap"] = umap2
    cls = sector_class(meta["phi"], float(attrs.get("flow_axis_deg", 90.0)))
    res["sector_class"] = cls.astype(object)
    times, tindex = np.unique(meta["time"], return_inverse=True)
    res["tables/times"], res["tables/time_index"] = times.astype(np.float64), tindex.astype(np.int32)
    for name, kk in (("tables/counts", k), ("tables/counts_k3", 3), ("tables/counts_k5", 5), ("tables/counts_k8", 8)):
        lab = res[f"labels_k{kk}"]
        table = np.zeros((times.size, kk), np.int32)
        np.add.at(table, (tindex, lab), 1)
        res[name] = table
    sectors = np.unique(meta["sector"]).astype(np.int32)
    stl = np.full((sectors.size, times.size), -1, np.int32)
    stl[np.searchsorted(sectors, meta["sector"]), tindex] = res["labels"]
    res["tables/sectors"], res["tables/sector_time_labels"] = sectors, stl
    if rheo is not None:
        from scipy.ndimage import uniform_filter1d

        after = rheo["time"] >= 60.0  # skip the stress drop right after cessation
        smooth = uniform_filter1d(rheo["shear_stress"][after], 9)
        prominence = 0.03 * float(np.ptp(smooth) or 1.0)
        peaks, _ = find_peaks(-smooth, prominence=prominence)
        res["stress_minima/time"] = rheo["time"][after][peaks].astype(np.float64)
    else:
        prominence = 0.0
        res["stress_minima/time"] = np.zeros(0, np.float64)
    fx, fy, share = _flow_share(umap2, cls)
    res["flow_share/x"], res["flow_share/y"], res["flow_share/share"] = fx, fy, share
    kn = 20
    res["similarity/latent_index"], res["similarity/latent_distance"] = _neighbours(latent, kn)
    z = (feature - feature.mean()) / (feature.std() + 1e-9)
    res["dynamics_score"] = z.astype(np.float32)
    if maps is not None:
        flat = maps.reshape(n, -1)
        res["similarity/raw_index"], res["similarity/raw_distance"] = _neighbours(flat, kn)
        ncomp = min(64, n)
        pca = PCA(ncomp, random_state=seed).fit(flat)
        proj = pca.transform(flat)
        res["similarity/pca_index"], res["similarity/pca_distance"] = _neighbours(proj, kn)
        comps = np.zeros((64, flat.shape[1]), np.float32)
        comps[:ncomp] = pca.components_
        res["similarity/pca_components"], res["similarity/pca_mean"] = comps, pca.mean_.astype(np.float32)
        res["umap_raw"] = PCA(2, random_state=seed).fit_transform(proj).astype(np.float32)
        ridx = np.sort(rng.choice(n, size=min(16, n), replace=False)).astype(np.int32)
        res["model/recon_index"] = ridx
        res["model/recon_input"] = maps[ridx]
        res["model/recon_output"] = np.clip(gaussian_filter(maps[ridx], (0, 2, 2)), 0, 1).astype(np.float32)
        res["model/noise_maps"] = np.clip(gaussian_filter(maps[rng.choice(n, 16)], (0, 3, 3))
                                          + rng.normal(0, 0.02, (16, 256, 256)), 0, 1).astype(np.float32)
    epochs = np.arange(1, 11)
    res["model/learning_curve/epoch"] = epochs
    res["model/learning_curve/train_loss"] = 0.02 + 0.1 * np.exp(-epochs / 3)
    res["model/learning_curve/val_loss"] = 0.025 + 0.1 * np.exp(-epochs / 3)
    res["model/latent_sweep/latent_size"] = 2 ** np.arange(1, 11)
    res["model/latent_sweep/test_mse"] = 0.01 + 0.05 / 2 ** np.arange(1, 11)
    rattrs = {"k": k, "suggested_k": k, "k_rule": "synthetic fixture: chosen k", "seed": seed,
              "order_feature_name": "mean_intensity", "dynamics_score_rule": "z-score of mean intensity",
              "dynamics_score_r": 1.0, "noise_sigma": 0.3,
              "timings_json": json.dumps({"latents": 0.1, "kmeans": 0.2, "umap": 0.05, "tables": 0.01}),
              "retrieval_json": json.dumps({}), "pipeline": "synthetic-fixture"}
    if model_path:  # the fixture's decoder (its latents are block means: decoding tests the plumbing)
        rattrs["model_path"] = str(model_path)
        rattrs["latent_source"] = "model"
    else:
        rattrs["latent_source"] = "dataset /latents" if maps is None else "8 x 8 block means (synthetic)"
        rattrs["model"] = "none"
    write_results(path, res, rattrs)
    # the prominence attr of stress_minima lives on the dataset; write_results takes top-level attrs only
    res["_prominence"] = prominence
    return res


def _write_model(path: Path) -> Path | None:
    """A (randomly initialised, seeded) checkpoint so reconstructions can be decoded."""
    try:
        import torch

        from ainerd_core.model import Autoencoder, save_checkpoint
    except Exception:  # noqa: BLE001 - no torch: reconstructions are reported unavailable
        return None
    torch.manual_seed(0)
    save_checkpoint(Autoencoder(), path)
    return path


def _real_precompute(path: Path) -> bool:
    if importlib.util.find_spec("ainerd_core.precompute") is None:
        return False
    # small settings: the fixture needs every result, not the best statistics
    proc = subprocess.run([sys.executable, "-m", "ainerd_core", "precompute", str(path), "--seed", "0", "--quiet",
                           "--neighbours", "30", "--n-init", "3", "--bootstrap", "5", "--targets", "20"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        if os.environ.get("AINERD_FIXTURE_PIPELINE", "real") == "real":
            raise RuntimeError(f"precompute failed on the test data: {proc.stderr[-2000:]}")
        warnings.warn(f"precompute failed, using synthetic results: {proc.stderr[-500:]}")
        return False
    with open_dataset(path) as ds:
        missing = [r for r in REQUIRED if ds.read_result(r) is None]
    if missing:
        warnings.warn(f"precompute lacks {missing}, using synthetic results")
        return False
    return True


def build_precomputed(folder, name: str = "demo", times: int = 8, sectors: int = 18, seed: int = 0) -> Path:
    """A simulated dataset with results in ``folder/<name>.h5`` (built once: reused if present)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.h5"
    with_results = False
    if path.exists():
        with open_dataset(path) as ds:
            with_results = ds.read_result("labels") is not None
    if with_results:
        return path
    subprocess.run([sys.executable, "-m", "ainerd_core", "simulate", "--out", str(path), "--times", str(times),
                    "--sectors", str(sectors), "--seed", str(seed), "--quiet"], cwd=REPO, check=True, timeout=600)
    mode = os.environ.get("AINERD_FIXTURE_PIPELINE", "real")
    if mode != "synthetic" and _real_precompute(path):
        return path
    if mode == "real":
        raise RuntimeError("AINERD_FIXTURE_PIPELINE=real but the precompute pipeline is not usable")
    model = _write_model(folder / "model.pt")
    synthetic_results(path, seed=seed, model_path=model.name if model else None)
    return path


def build_latents_only(folder, name: str = "e031", seed: int = 0) -> Path:
    """An E031-like latents-only dataset (900 maps, 50 times x 18 sectors) with results
    (real ``precompute`` when available, else :func:`synthetic_results`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.h5"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    n_t, n_s = 50, 18
    times = np.linspace(-5.0, 2802.0, n_t)
    sector = np.repeat(np.arange(1, n_s + 1), n_t)
    time = np.tile(times, n_s)
    centers = rng.gamma(2.0, 1.0, (5, 64))
    which = (np.tile(np.arange(n_t), n_s) * 5 // n_t + rng.integers(0, 2, n_t * n_s)) % 5
    latents = np.abs(centers[which] + rng.normal(0, 0.3, (n_t * n_s, 64))).astype(np.float32)
    t_r = np.linspace(-200, 2810, 560)
    stress = 5 + 20 * np.exp(-np.clip(t_r, 0, None) / 300) + 0.8 * np.sin(t_r / 150)
    write_dataset(path, meta=dict(time=time, sector=sector, q=np.full(time.size, np.nan),
                                  source=[f"E031 latents row {i}" for i in range(time.size)]),
                  latents=latents, rheology=dict(time=t_r, shear_stress=stress),
                  source_kind="ainerd-published", title="E031 published latents (fixture)",
                  provenance="tests/dashboard_fixtures.py, E031 layout", flow_axis_deg=90.0,
                  sector_width_deg=20.0, n_sectors=n_s)
    mode = os.environ.get("AINERD_FIXTURE_PIPELINE", "real")
    if mode != "synthetic" and _real_precompute(path):
        return path
    if mode == "real":
        raise RuntimeError("AINERD_FIXTURE_PIPELINE=real but the precompute pipeline is not usable")
    synthetic_results(path, seed=seed)
    return path


# the fixture is rebuilt when this file, any pipeline code or the shipped demo weights (which
# precompute uses, with their curve and latent-size sweep) change (AINERD_FIXTURE_REBUILD=1 forces
# a rebuild)
_SOURCES = ("tests/dashboard_fixtures.py", *sorted(str(p.relative_to(REPO)) for p in (REPO / "ainerd_core").rglob("*.py")),
            "data/demo_weights.pt", "data/demo_weights.curve.json", "data/demo_weights.latent_sweep.json")


def fixture_key() -> str:
    """Hash of what the fixture data depend on (format, this file, which pipeline)."""
    import hashlib

    h = hashlib.sha256(os.environ.get("AINERD_FIXTURE_PIPELINE", "real").encode())
    h.update(str(importlib.util.find_spec("ainerd_core.precompute") is not None).encode())
    for rel in _SOURCES:
        p = REPO / rel
        h.update(rel.encode())
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_explorer_data(root=None) -> Path:
    """The test data folder (``demo.h5`` with maps, ``e031.h5`` latents only), built once per
    version of the pipeline and reused across test sessions from a cache folder under the
    system temp dir (``AINERD_FIXTURE_CACHE`` overrides it). Treat it as read-only: copy a file
    before changing it."""
    import shutil
    import tempfile

    root = Path(root or os.environ.get("AINERD_FIXTURE_CACHE") or Path(tempfile.gettempdir()) / "ainerd-dashboard-fixtures")
    final = root / fixture_key()
    if os.environ.get("AINERD_FIXTURE_REBUILD") == "1" and (final / "COMPLETE").exists():
        shutil.rmtree(final, ignore_errors=True)
    if (final / "COMPLETE").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        build_precomputed(work)
        build_latents_only(work)
        (work / "COMPLETE").write_text("ok\n")
        try:
            work.rename(final)
        except OSError:  # another session finished first
            if not (final / "COMPLETE").exists():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final


@pytest.fixture(scope="session")
def explorer_data() -> Path:
    """Folder with ``demo.h5`` (144 simulated maps, precomputed) and ``e031.h5`` (latents only).

    Read-only (cached across sessions): copy a file before modifying it."""
    return build_explorer_data()
