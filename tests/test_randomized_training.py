"""Domain-randomised maps (held-out settings never drawn in training) and train-randomized."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ainerd_core import model as M
from ainerd_core import randomsim as RS
from ainerd_core import ssl as SSL
from ainerd_core.train import curve_path


def test_training_split_never_draws_held_out_settings():
    rng = np.random.default_rng(0)
    train = [RS.draw_params(rng, "train") for _ in range(3000)]
    held = [RS.draw_params(rng, "heldout") for _ in range(500)]
    lo, hi = RS.HELD_OUT["log_rate"]
    assert not any(lo <= p["log_rate"] < hi for p in train)
    assert max(p["stretching"] for p in train) <= RS.HELD_OUT["stretching"][0]
    fa, fb = RS.HELD_OUT["fringe_frequency"]
    assert not any(fa <= p["fringe_frequency"] <= fb for p in train)
    assert not any(p["aging"] == 2 and p["fringe_frequency"] > 0 for p in train)
    assert all(p["stretching"] >= 1.5 and p["noise_rel"] >= 0.2 for p in held)
    assert all(fa <= p["fringe_frequency"] <= fb for p in held if p["fringe_frequency"] > 0)
    assert any(p["aging"] == 2 and p["fringe_frequency"] > 0 for p in held)
    # independent ranges: every aging class and both fringe states occur, rates span > 2 decades
    assert {p["aging"] for p in train} == {0, 1, 2}
    assert np.ptp([p["log_rate"] for p in train]) > 2


def test_generate_is_deterministic_and_batch_independent():
    a, ta = RS.generate(6, seed=3, split="train")
    b, tb = RS.generate(3, seed=3, split="train", start=3)
    np.testing.assert_array_equal(a[3:], b)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1 and a.shape == (6, 256, 256)
    for k in ta:
        np.testing.assert_array_equal(ta[k][3:], tb[k])
    h, th = RS.generate(4, seed=3, split="heldout")
    assert (th["generator"] == 0).all() and (th["stretching"] >= 1.5).all()


def test_rerendered_partners_share_the_dynamics_and_redraw_the_nuisances():
    maps, truth = RS.generate(8, seed=2, split="train")
    m2, partners, t2 = RS.generate(8, seed=2, split="train", pairs=True)
    np.testing.assert_array_equal(maps, m2)          # the maps do not depend on pairs
    for k in truth:
        np.testing.assert_array_equal(truth[k], t2[k])
    analytic = truth["generator"] == 0
    assert analytic.any() and partners.dtype == np.float32 and partners.min() >= 0 and partners.max() <= 1
    assert all(np.abs(partners[i] - maps[i]).max() > 0.01 for i in np.flatnonzero(analytic))
    np.testing.assert_array_equal(partners[~analytic], maps[~analytic])   # simulator maps: their own partner
    p = RS.draw_params(np.random.default_rng(5), "train")
    q = RS.redraw_nuisances(p, np.random.default_rng(6))
    # what the relevance rule compares is kept, the rest redrawn inside the training ranges
    kept = set(p) - set(RS.NUISANCES)
    assert all(q[k] == p[k] for k in kept) and any(q[k] != p[k] for k in RS.NUISANCES)
    assert RS.TRAIN["stretching"][0] <= q["stretching"] <= RS.TRAIN["stretching"][1]
    assert RS.render(q, np.random.default_rng(0))[1]["relaxation_rate"] == RS.render(p, np.random.default_rng(0))[1][
        "relaxation_rate"]


def test_he_initialisation_gives_latents_that_differ_between_maps():
    torch.manual_seed(0)
    model = M.Autoencoder(64, dropout=0.0).eval()
    x = torch.from_numpy(RS.generate(8, seed=0, split="train")[0])
    with torch.no_grad():
        before = float(model.encode(x).std(dim=0).mean())
        SSL.he_init(model)
        after = float(model.encode(x).std(dim=0).mean())
    # PyTorch's default initialisation leaves the latents of different maps nearly equal
    assert after > 20 * before


def test_augmented_views_keep_the_map_normalised():
    x = torch.from_numpy(RS.generate(4, seed=0, split="train")[0]).unsqueeze(1)
    v = SSL.augment(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and float(v.min()) == 0.0 and abs(float(v.amax(dim=(-2, -1)).min()) - 1) < 1e-6
    v2 = SSL.augment(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v, v2)
    z = torch.randn(16, 64)
    loss, parts = SSL.vicreg(z, z)
    assert parts["inv"] == 0 and loss >= 0
    same, _ = SSL.vicreg(torch.zeros(16, 64), torch.zeros(16, 64))   # collapsed: the variance term bites
    assert float(same) > 0.9


def test_train_randomized_writes_a_strict_loading_checkpoint(tmp_path):
    out = tmp_path / "w.pt"
    a = SSL.train_randomized(out, steps=2, batch_size=4, objective="both", seed=0, threads=1, steps_per_epoch=1,
                             n_val=4, novelty_bank=8, novelty_ref=6, log=lambda *_: None)
    model = M.load_model(out, device="cpu")            # strict load into the published architecture
    assert model.latent_size == 64
    ck = M.read_checkpoint(out)
    assert ck["config"]["objective"] == "both" and ck["learning_curve"]["epoch"] == [1, 2]
    # the curve beside it, in `train`'s shape (precompute and /model read it)
    side = json.loads(curve_path(out).read_text())
    assert {k: side[k] for k in ck["learning_curve"]} == ck["learning_curve"]
    assert side["test"] == ck["test"] and side["config"] == ck["config"] and side["best_epoch"] == 2
    ref = ck["novelty_reference"]
    assert ref["bank"].shape == (8, 64) and ref["recon"].shape == (6,)
    # the same seed and thread count give the same weights
    b = SSL.train_randomized(tmp_path / "w2.pt", steps=2, batch_size=4, objective="both", seed=0, threads=1,
                             steps_per_epoch=1, n_val=4, novelty_bank=0, novelty_ref=0, log=lambda *_: None)
    sd1, sd2 = ck["state_dict"], M.read_checkpoint(tmp_path / "w2.pt")["state_dict"]
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert a["val"]["mse"] == b["val"]["mse"]
    with pytest.raises(M.InputError):
        SSL.train_randomized(tmp_path / "x.pt", steps=0)
    # re-rendered pairs: deterministic too, recorded in the checkpoint
    c = [SSL.train_randomized(tmp_path / f"p{i}.pt", steps=1, batch_size=4, objective="ssl", seed=0, threads=1,
                              pairs="rerender", n_val=4, novelty_bank=0, novelty_ref=0, log=lambda *_: None)
         for i in range(2)]
    assert c[0]["val"]["mse"] == c[1]["val"]["mse"] and c[0]["config"]["pairs"] == "rerender"
    with pytest.raises(M.InputError):
        SSL.train_randomized(tmp_path / "x.pt", pairs="mirror")


def test_info_nce_rewards_partners_that_are_nearest_and_ignores_the_latent_scale():
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 64, generator=gen)
    near = z1 + 0.01 * torch.randn(8, 64, generator=gen)       # each partner next to its map
    shuffled = near[torch.randperm(8, generator=gen)]            # partners elsewhere
    assert SSL.info_nce(z1, near) < 0.1 < SSL.info_nce(z1, shuffled)
    # squared distances divided by their batch mean: a rescaled latent has the same loss
    assert float(SSL.info_nce(z1, near)) == pytest.approx(float(SSL.info_nce(1000 * z1, 1000 * near)), rel=1e-4)
    # with soft targets equal to the one-hot partner, the loss is the plain InfoNCE
    n = 16
    onehot = torch.zeros(n, n)
    onehot[torch.arange(n), torch.arange(n).roll(8)] = 1
    assert float(SSL.info_nce(z1, shuffled, soft=onehot)) == pytest.approx(float(SSL.info_nce(z1, shuffled)), rel=1e-5)


def test_physics_positives_weigh_similar_dynamics_and_never_mix_aging_classes():
    truth = {"relaxation_rate": np.array([0.01, 0.011, 0.01, 0.1]), "fringe_frequency": np.zeros(4),
             "aging": np.array([0, 0, 1, 0]), "burst": np.zeros(4, int)}
    w = SSL.physics_targets(truth).numpy()
    assert w.shape == (8, 8) and np.allclose(w.sum(1), 1) and np.all(np.diag(w) == 0)
    assert w[0, 4] > w[0, 1] > 0              # own partner first, then the map with a 10 % faster rate
    assert w[0, 2] == 0 and w[0, 6] == 0       # another aging class: never a positive
    assert w[0, 3] < 1e-6                      # a 10x faster rate: not a positive
    with pytest.raises(M.InputError, match="--positives"):
        SSL.train_randomized("x.pt", positives="physics", pairs="augment", ssl_loss="infonce")


def test_the_decoder_phase_keeps_every_latent_and_improves_reconstructions(tmp_path):
    kw = dict(steps=2, batch_size=4, objective="both", seed=0, threads=1, steps_per_epoch=1, n_val=8,
              pairs="rerender", ssl_loss="infonce", novelty_bank=0, novelty_ref=0, log=lambda *_: None)
    a = SSL.train_randomized(tmp_path / "a.pt", **kw)
    b = SSL.train_randomized(tmp_path / "b.pt", decoder_steps=6, **kw)
    sa, sb = (M.read_checkpoint(tmp_path / f"{n}.pt")["state_dict"] for n in "ab")
    encoder = [k for k in sa if k.startswith(("encoder.", "bottleneck.1."))]
    decoder = [k for k in sa if k.startswith(("decoder1.", "bottleneck.3."))]
    assert encoder and all(torch.equal(sa[k], sb[k]) for k in encoder)        # same latents
    assert any(not torch.equal(sa[k], sb[k]) for k in decoder)
    assert b["val"]["mse"] < a["val"]["mse"]
    assert b["config"]["decoder_steps"] == 6 and len(b["curve"]["epoch"]) == 8
    with pytest.raises(M.InputError, match="--decoder-steps"):
        SSL.train_randomized("x.pt", decoder_steps=-1)
