"""The shipped demo weights (data/demo_weights.pt) against the demo experiment they were trained on.

The demo is re-simulated here exactly as ``make demo`` does (seed 0, 900 maps), so this test
also fails when a change to the simulator silently invalidates the shipped weights.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from ainerd_core import model as M
from ainerd_core.dataset import open_dataset
from ainerd_core.train import curve_path, explained_variance
from conftest import simulated


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return simulated(tmp_path_factory, "demo", times=50, sectors=18, size=256, seed=0)  # = make demo


def test_shipped_weights_explain_90_percent_of_the_held_out_demo_variance(demo):
    model = M.load_model(device="cpu")          # no path: the shipped demo weights
    info = model.checkpoint_info
    test_idx = np.asarray(info["split"]["test"])
    assert info["dataset_n_maps"] == 900 and test_idx.size == 90
    with open_dataset(demo) as ds:
        maps = ds.read_maps(test_idx)
    ev = explained_variance(maps, M.reconstruct(model, maps))
    assert ev["explained_variance"] >= 0.90
    # the number the checkpoint (and the README) reports is the one measured here
    assert info["test"]["mse"] == pytest.approx(ev["mse"], rel=1e-3)
    # the held-out maps were never trained on, nor used to pick the epoch
    assert not set(test_idx) & (set(info["split"]["train"]) | set(info["split"]["val"]))


def test_shipped_weights_record_how_they_were_trained():
    ck = M.read_checkpoint(M.DEMO_WEIGHTS)
    cfg = ck["config"]
    assert cfg["seed"] == 0 and cfg["latent"] == 64 and cfg["augment"] is True
    epochs = ck["learning_curve"]["epoch"]
    assert epochs == list(range(1, len(epochs) + 1))          # one entry per epoch, none twice
    assert ck["best_epoch"] in epochs
    curve = json.loads(curve_path(M.DEMO_WEIGHTS).read_text())
    assert curve["epoch"] == epochs and curve["test"]["explained_variance"] == ck["test"]["explained_variance"]



def test_projected_bottlenecks_of_the_shipped_weights_keep_their_code(demo):
    """The latent-size sweep's warm start on the real weights: a 16-d projection of the 64-d code
    loses almost nothing, a 2-d one keeps most of it, a random 2-d bottleneck keeps nothing."""
    import torch

    from ainerd_core.train import MapSource, _encoder_features, projected_bottleneck

    model = M.load_model(device="cpu")
    split = {k: np.asarray(v) for k, v in model.checkpoint_info["split"].items()}
    state = model.state_dict()
    with open_dataset(demo) as ds:
        source = MapSource(ds, np.concatenate([split["train"], split["test"]]))
        feats = _encoder_features(model, source, split["train"], "cpu")
        maps = ds.read_maps(split["test"])
    ev = {}
    for size, how in ((2, "projected"), (16, "projected"), (2, "random")):
        small = M.Autoencoder(size, dropout=0.0).eval()
        torch.manual_seed(0)
        params = {k: v for k, v in state.items() if not k.startswith("bottleneck.")}
        if how == "projected":
            params.update(projected_bottleneck(state, feats, size))
        small.load_state_dict({**small.state_dict(), **params})
        ev[size, how] = explained_variance(maps, M.reconstruct(small, maps))["explained_variance"]
    full = model.checkpoint_info["test"]["explained_variance"]
    assert ev[16, "projected"] > full - 0.01
    assert ev[2, "projected"] > 0.6 and ev[2, "random"] < 0.3
