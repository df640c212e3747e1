"""equalise-latent: every live latent dimension to unit spread, the network's function unchanged."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ainerd_core import model as M
from ainerd_core import ssl as SSL
from ainerd_core.latent_scale import equalise_checkpoint, latent_scales, rescale_latent
from ainerd_core.randomsim import generate


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("eq") / "w.pt"
    SSL.train_randomized(out, steps=2, batch_size=4, objective="both", seed=0, threads=1, steps_per_epoch=1,
                         n_val=4, novelty_bank=12, novelty_ref=10, log=lambda *_: None)
    return out


def test_rescaling_keeps_reconstructions_and_scales_each_latent(small_checkpoint):
    model = M.load_model(small_checkpoint, device="cpu")
    maps, _ = generate(6, 3, "indist")
    z = M.encode(model, maps, bulk=False)
    before = M.decode(model, z)
    scales = np.linspace(0.5, 40.0, model.latent_size)
    rescale_latent(model, scales)
    z2 = M.encode(model, maps, bulk=False)
    np.testing.assert_allclose(z2, z * scales[None, :].astype(np.float32), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(M.decode(model, z2), before, atol=1e-4)
    with pytest.raises(M.InputError):
        rescale_latent(model, -scales)


def test_latent_scales_leave_dead_dimensions_alone():
    z = np.array([[0.0, 1.0, 5.0], [0.0, 3.0, 5.0], [0.0, 5.0, 5.0]])
    s = latent_scales(z)
    assert s[0] == 1.0 and s[2] == 1.0                     # 0 everywhere / constant: not rescaled
    assert (z[:, 1] * s[1]).std() == pytest.approx(1.0)


def test_equalised_checkpoint_has_unit_spread_same_function_and_a_rebuilt_novelty_bank(small_checkpoint, tmp_path):
    out = tmp_path / "eq.pt"
    rec = equalise_checkpoint(small_checkpoint, out, n_maps=40, log=lambda *_: None)
    a, b = M.load_model(small_checkpoint, device="cpu"), M.load_model(out, device="cpu")
    ref_maps, _ = generate(40, 1000, "indist")             # the reference maps of seed 0 + 1000
    zb = M.encode(b, ref_maps, bulk=False)
    live = zb.std(0) > 1e-6
    np.testing.assert_allclose(zb.std(0)[live], 1.0, rtol=1e-3)
    assert rec["dead_dimensions"] == int((~live).sum())
    maps, _ = generate(4, 7, "indist")
    np.testing.assert_allclose(M.reconstruct(b, maps), M.reconstruct(a, maps), atol=1e-4)
    ck = M.read_checkpoint(out)
    assert ck["config"]["latent_scale"] == rec
    # the novelty bank holds the new latents (of the same maps), not the old ones
    bank_a = M.read_checkpoint(small_checkpoint)["novelty_reference"]["bank"].numpy()
    bank_b = ck["novelty_reference"]["bank"].numpy()
    scales = ck["latent_scales"].numpy()
    np.testing.assert_allclose(bank_b, bank_a * scales[None, :], rtol=1e-3, atol=1e-4)
    with pytest.raises(M.InputError, match="already equalised"):
        equalise_checkpoint(out, tmp_path / "again.pt", log=lambda *_: None)
    assert not (tmp_path / "again.pt").exists()


def test_cli_names_a_missing_checkpoint_in_one_line(tmp_path):
    missing = tmp_path / "nope.pt"
    r = subprocess.run([sys.executable, "-m", "ainerd_core", "equalise-latent", str(missing)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and str(missing) in r.stderr and len(r.stderr.strip().splitlines()) == 1
