"""ainerd_core.novelty: out-of-distribution maps are flagged, in-distribution maps mostly not."""
from __future__ import annotations

import numpy as np
import pytest

from ainerd_core import model as M
from ainerd_core import novelty as NV
from ainerd_core.dataset import open_dataset
from conftest import simulated
from dashboard_fixtures import explorer_data  # noqa: F401


@pytest.fixture(scope="module")
def demo_maps(tmp_path_factory):
    """Two runs of the demo simulator (part of the shipped weights' training distribution): one gives the
    reference, the other (another seed) the in-distribution test maps."""
    out = []
    for seed in (0, 3):
        p = simulated(tmp_path_factory, f"nov{seed}", times=8, sectors=6, seed=seed)
        with open_dataset(p) as ds:
            out.append(ds.read_maps(np.arange(ds.n_maps)))
    return out


def ood_maps(size=256):
    rng = np.random.default_rng(5)
    noise = rng.random((size, size)).astype(np.float32)
    ii, jj = np.indices((size, size))
    checker = (((ii // 16) + (jj // 16)) % 2).astype(np.float32)
    stripes = (0.5 + 0.5 * np.sin(ii / 3.0)).astype(np.float32)       # horizontal stripes: not a C2 map
    return np.stack([noise, checker, stripes])


def shipped_without_reference():
    """The shipped weights with any stored novelty reference set aside: these tests build the
    reference from maps, whichever checkpoint is shipped (tests/test_demo_weights.py checks its own)."""
    model = M.load_model(device="cpu")
    model.checkpoint_info = {k: v for k, v in model.checkpoint_info.items() if k != "novelty_reference"}
    return model


def test_out_of_distribution_maps_are_flagged(demo_maps):
    model = shipped_without_reference()
    ref_maps, test_maps = demo_maps
    ref = NV.reference_for(model, ref_maps, seed=0)
    assert "built from this dataset" in ref["source"] and ref["n_reference"] == 24
    ood = NV.novelty_of_maps(model, ood_maps(), ref)
    assert ood["novel"].all(), ood["score"]
    assert (ood["recon_quantile"] == 1).all()
    inn = NV.novelty_of_maps(model, test_maps, ref)
    assert inn["score"].shape == (48,) and inn["score"].dtype == np.float32
    assert inn["novel"].mean() <= 0.25, inn["score"]        # mostly not flagged (another seed, same physics)
    assert np.median(inn["score"]) < 0.9
    assert NV.novelty_message(float(ood["score"][0])).startswith("this map is unlike anything")
    assert NV.novelty_message(0.5) is None
    # deterministic
    again = NV.novelty_of_maps(model, ood_maps(), NV.reference_for(model, ref_maps, seed=0))
    np.testing.assert_array_equal(again["score"], ood["score"])


def test_stored_reference_is_used_and_survives_a_checkpoint(tmp_path, demo_maps):
    model = M.load_model(device="cpu")
    ref_maps, _ = demo_maps
    ref = NV.build_reference(model, ref_maps[:24], ref_maps[24:], source="unit test")
    ck = M.read_checkpoint(M.DEMO_WEIGHTS)
    ck["novelty_reference"] = ref
    M.atomic_torch_save(ck, tmp_path / "w.pt")
    m2 = M.load_model(tmp_path / "w.pt", device="cpu")       # weights_only load: tensors, numbers, text
    got = NV.reference_for(m2, maps=None)
    assert got["source"] == "unit test" and got["n_bank"] == 24
    nov = NV.novelty_of_maps(m2, ood_maps()[:1], got)
    assert nov["novel"].all() and nov["source"] == "unit test"


def test_reference_from_precomputed_arrays_equals_the_one_built_from_maps(demo_maps):
    """Precompute reuses one decode of every map for the reference and the scores: the same
    seeded bank/reference split, so the same reference and scores as encoding the maps again."""
    model = shipped_without_reference()
    maps = demo_maps[0]
    built = NV.reference_for(model, maps, seed=0)
    errors, latents = NV.recon_errors(model, maps)
    reused = NV.reference_from_arrays(latents, errors, seed=0)
    assert reused["n_bank"] == built["n_bank"] and reused["n_reference"] == built["n_reference"]
    for key in ("bank", "recon", "knn", "combined"):
        np.testing.assert_allclose(NV._as_np(reused[key]), NV._as_np(built[key]), rtol=1e-4, atol=1e-6)
    a = NV.novelty_of_maps(model, maps, reused, latents=latents, errors=errors)
    b = NV.novelty_of_maps(model, maps, built)
    np.testing.assert_allclose(a["score"], b["score"], atol=0.05)


def test_latent_map_is_coloured_by_the_stored_novelty_score(explorer_data, tmp_path):  # noqa: F811
    import shutil

    from dashboard.catalog import Catalog
    from dashboard.figures.latent_map import NOVELTY_COLORSCALE
    from dashboard.pages.latent_map import build_figure, color_values

    shutil.copy(explorer_data / "demo.h5", tmp_path / "demo.h5")
    entry = Catalog(tmp_path).get("demo")
    score = entry.result("novelty/score")
    assert score is not None and len(score) == entry.n_maps
    np.testing.assert_array_equal(color_values(entry, "novelty", entry.k), score)
    fig = build_figure(entry, "novelty", entry.k, False, [])
    main = [t for t in fig.data if t.name == "novelty score"][0]
    # every map with its own score, on the fixed [0, 1] scale
    idx = np.asarray(main.customdata, int)
    np.testing.assert_allclose(np.asarray(main.marker.color, float), score[idx], rtol=1e-6)
    assert main.marker.cmin == 0 and main.marker.cmax == 1
    assert main.marker.colorscale[0][1] != main.marker.colorscale[-1][1] and NOVELTY_COLORSCALE == "YlOrRd"
