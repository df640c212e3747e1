"""Training: augmentation, split, a real optimisation step, checkpoints, resume, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ainerd_core import model as M
from ainerd_core import train as T
from ainerd_core.dataset import write_dataset
from ainerd_core.errors import InputError
from conftest import small_meta
from test_model import band_maps


@pytest.fixture
def tiny_dataset(tmp_path):
    return write_dataset(tmp_path / "tiny.h5", maps=band_maps(8, seed=5), meta=small_meta(8, n_sectors=4),
                         source_kind="simulation")


def test_diagonal_roll_keeps_the_diagonal_structure(rng):
    a = rng.random((256, 256)).astype(np.float32)
    a = (a + a.T) / 2                                   # symmetric, like a C2 map
    x = torch.from_numpy(a)
    for k in (0, 1, 37, 255):
        b = T.diagonal_roll(x[None], [k])[0].numpy()
        i, j = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
        # the rolled map is the original shifted along the diagonal ...
        np.testing.assert_array_equal(b, a[(i - k) % 256, (j - k) % 256])
        np.testing.assert_array_equal(b, np.roll(a, (k, k), axis=(0, 1)))
        # ... its diagonal is the original diagonal (shifted), and it is still symmetric
        np.testing.assert_array_equal(np.diag(b), np.roll(np.diag(a), k))
        np.testing.assert_array_equal(b, b.T)
    # a map that depends only on (t2 - t1) mod 256 is invariant
    toe = np.abs(((i - j + 128) % 256) - 128).astype(np.float32)
    np.testing.assert_array_equal(T.diagonal_roll(torch.from_numpy(toe)[None], [91])[0].numpy(), toe)


def test_random_shift_is_per_map_and_seeded():
    x = torch.from_numpy(band_maps(4) + np.arange(256, dtype=np.float32)[None, :, None] / 1e3).unsqueeze(1)
    a = T.random_diagonal_shift(x, np.random.default_rng(1))
    b = T.random_diagonal_shift(x, np.random.default_rng(1))
    torch.testing.assert_close(a, b)
    ks = np.random.default_rng(1).integers(0, 256, size=4)
    assert ks.min() >= 0 and ks.max() < 256
    for n, k in enumerate(ks):
        np.testing.assert_array_equal(a[n, 0].numpy(), np.roll(x[n, 0].numpy(), (k, k), axis=(0, 1)))


def test_split_is_disjoint_complete_and_seeded():
    s = T.make_split(100, seed=4)
    assert [len(s[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    assert sorted(allidx.tolist()) == list(range(100))
    t = T.make_split(100, seed=4)
    assert all((s[k] == t[k]).all() for k in s)
    assert not (T.make_split(100, seed=5)["test"] == s["test"]).all()
    assert [len(v) for v in T.make_split(3, 0).values()] == [1, 1, 1]
    with pytest.raises(InputError):
        T.make_split(2, 0)


def test_explained_variance_definition():
    maps = band_maps(6).astype(np.float64)
    assert T.explained_variance(maps, maps)["explained_variance"] == pytest.approx(1.0)
    mean = np.broadcast_to(maps.mean(axis=0), maps.shape)
    ev = T.explained_variance(maps, mean)
    assert ev["explained_variance"] == pytest.approx(0.0, abs=1e-12)
    assert ev["pixel_variance"] == pytest.approx(maps.var(axis=0).mean())


def test_one_real_training_step_lowers_the_loss():
    torch.manual_seed(0)
    net = M.Autoencoder(64).train()
    x = torch.from_numpy(band_maps(4, seed=3)).unsqueeze(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def eval_loss():
        net.eval()
        with torch.no_grad():
            loss = float(F.mse_loss(net(x), x))
        net.train()
        return loss

    before = eval_loss()
    xa = T.random_diagonal_shift(x, np.random.default_rng(0))   # exactly the training step
    loss = F.mse_loss(net(xa), xa)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert np.isfinite(float(loss.detach()))
    assert eval_loss() < before


def test_train_cli_one_epoch_writes_checkpoint_and_curve(tmp_path, tiny_dataset, capsys):
    from ainerd_core.cli import main

    out = tmp_path / "model.pt"
    rc = main(["train", str(tiny_dataset), "--out", str(out), "--epochs", "1", "--batch-size", "4",
               "--latent", "8", "--seed", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "epoch   1/1" in printed and "explained variance" in printed
    assert out.exists() and not T.state_path(out).exists()
    curve = json.loads(T.curve_path(out).read_text())
    assert curve["epoch"] == [1] and len(curve["train_loss"]) == len(curve["val_loss"]) == 1
    model = M.load_model(out, device="cpu")
    info = model.checkpoint_info
    assert model.latent_size == 8
    assert info["config"]["seed"] == 3 and info["config"]["latent"] == 8 and info["config"]["augment"] is True
    assert info["learning_curve"]["epoch"] == [1]
    split = info["split"]
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(8))
    assert 0 <= info["test"]["mse"] < 1
    assert info["normalisation"]["map_size"] == 256


def test_resume_continues_an_interrupted_run(tmp_path, tiny_dataset):
    out = tmp_path / "m.pt"
    lines = []

    def stop_after_first_epoch(msg):
        lines.append(msg)
        if msg.startswith("epoch   1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.train(tiny_dataset, out, epochs=2, batch_size=4, latent=8, seed=1, log=stop_after_first_epoch)
    assert out.exists() and T.state_path(out).exists()
    state = M.read_checkpoint(T.state_path(out))
    assert state["epoch"] == 1 and "optimizer" in state
    res = T.train(tiny_dataset, out, epochs=2, batch_size=4, seed=1, resume=T.state_path(out), log=lines.append)
    assert res["learning_curve"]["epoch"] == [1, 2]
    assert any("resumed" in m for m in lines)
    assert M.load_model(out, device="cpu").latent_size == 8      # the latent size comes from the state


def test_resume_into_a_new_file_without_improvement_keeps_the_given_weights(tmp_path, tiny_dataset):
    first = tmp_path / "first.pt"
    T.train(tiny_dataset, first, epochs=1, batch_size=4, latent=8, seed=1, log=lambda m: None)
    fine = tmp_path / "fine.pt"  # no epochs left to run: nothing can beat the given weights
    T.train(tiny_dataset, fine, epochs=1, batch_size=4, seed=1, resume=first, log=lambda m: None)
    a, b = M.read_checkpoint(first)["state_dict"], M.read_checkpoint(fine)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_equal_lr_bounds_give_a_constant_learning_rate_recorded_in_the_checkpoint(tmp_path, tiny_dataset):
    out = tmp_path / "const.pt"
    res = T.train(tiny_dataset, out, epochs=2, batch_size=4, latent=8, seed=1, lr_base=3e-5, lr_max=3e-5,
                  log=lambda m: None)
    assert res["learning_curve"]["lr"] == pytest.approx([3e-5, 3e-5], rel=1e-9)
    sched = M.read_checkpoint(out)["config"]["scheduler"]
    assert (sched["base_lr"], sched["max_lr"]) == (3e-5, 3e-5)
    # the default stays the published range, rising from 1e-4 towards 1e-3
    res = T.train(tiny_dataset, tmp_path / "default.pt", epochs=1, batch_size=4, latent=8, seed=1,
                  log=lambda m: None)
    assert T.LR_BASE < res["learning_curve"]["lr"][0] <= T.LR_MAX


def test_resuming_a_finished_checkpoint_continues_from_its_best_epoch(tmp_path, tiny_dataset):
    first = tmp_path / "first.pt"
    T.train(tiny_dataset, first, epochs=3, batch_size=4, latent=8, seed=1, log=lambda m: None)
    ck = M.read_checkpoint(first)
    best = int(ck["best_epoch"])
    assert ck["learning_curve"]["epoch"] == [1, 2, 3]
    lines = []
    res = T.train(tiny_dataset, tmp_path / "fine.pt", epochs=best + 2, batch_size=4, seed=1, resume=first,
                  lr_base=1e-5, lr_max=1e-5, log=lines.append)
    # the epochs after the resumed (best) weights are replaced by the new phase: no epoch twice
    assert res["learning_curve"]["epoch"] == list(range(1, best + 3))
    assert res["learning_curve"]["lr"][best:] == pytest.approx([1e-5, 1e-5], rel=1e-9)
    history = res["config"]["history"][-1]
    assert history["until_epoch"] == best and history["base_lr"] == T.LR_BASE and history["max_lr"] == T.LR_MAX
    assert any(m.startswith(f"resumed from {first} at epoch {best}") for m in lines)


def test_init_from_warm_starts_the_convolutions_and_keeps_a_new_bottleneck_random(tmp_path, tiny_dataset):
    source = tmp_path / "source.pt"
    T.train(tiny_dataset, source, epochs=1, batch_size=4, latent=8, seed=1, log=lambda m: None)
    src = M.read_checkpoint(source)["state_dict"]
    # same latent size, a negligible learning rate: the run starts from (and stays at) the source weights
    same = T.train(tiny_dataset, tmp_path / "same.pt", epochs=1, batch_size=4, latent=8, seed=2, init_from=source,
                   lr_base=1e-12, lr_max=1e-12, log=lambda m: None)
    got = M.read_checkpoint(tmp_path / "same.pt")["state_dict"]
    assert all(torch.allclose(got[k], src[k], atol=1e-8) for k in src)
    assert same["config"]["init_from"]["tensors_random"] == []
    # another latent size: convolutions from the source, the bottleneck's Linear layers random
    lines = []
    other = T.train(tiny_dataset, tmp_path / "other.pt", epochs=1, batch_size=4, latent=16, seed=2,
                    init_from=source, lr_base=1e-12, lr_max=1e-12, log=lines.append)
    got = M.read_checkpoint(tmp_path / "other.pt")["state_dict"]
    random_keys = other["config"]["init_from"]["tensors_random"]
    # Linear(1024, latent) entirely; of Linear(latent, 1024) the weight (its 1024 biases fit any size)
    assert random_keys == ["bottleneck.1.bias", "bottleneck.1.weight", "bottleneck.3.weight"]
    assert all(torch.allclose(got[k], src[k], atol=1e-8) for k in src if k not in random_keys)
    assert got["bottleneck.1.weight"].shape == (16, 1024)
    assert any(m.startswith(f"initialised from {source}") for m in lines)


def test_train_rejects_bad_input(tmp_path, tiny_dataset):
    from ainerd_core.cli import main

    lat_only = write_dataset(tmp_path / "lat.h5", meta=small_meta(6), latents=np.ones((6, 4)))
    with pytest.raises(InputError, match="latents only"):
        T.train(lat_only, tmp_path / "m.pt", epochs=1)
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "no" / "m.pt"), "--epochs", "1"]) == 2
    for bad in (["--lr-base", "0"], ["--lr-max=-1e-3"], ["--lr-base", "1e-3", "--lr-max", "1e-4"],
                ["--lr-base", "nan"]):
        assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "m.pt"), "--epochs", "1", *bad]) == 2
        assert not (tmp_path / "m.pt").exists()
    both = ["--init-from", str(tiny_dataset), "--resume", str(tiny_dataset)]
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "m.pt"), "--epochs", "1", *both]) == 2
    junk = tmp_path / "junk.pt"
    junk.write_text("junk")
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "m.pt"), "--resume", str(junk)]) == 2
    assert not (tmp_path / "m.pt").exists()


def test_a_train_randomized_checkpoint_is_fine_tuned_with_init_from_not_resumed(tmp_path, tiny_dataset):
    """Its epochs and validation loss were measured on generated maps: resuming would compare this
    dataset's validation loss with theirs. --init-from starts a fresh run on this dataset's split."""
    from ainerd_core import ssl
    from ainerd_core.cli import main

    ck = tmp_path / "randomized.pt"
    ssl.train_randomized(ck, steps=1, batch_size=4, objective="recon", seed=0, threads=1, n_val=4,
                         novelty_bank=0, novelty_ref=0, log=lambda *_: None)
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "m.pt"), "--epochs", "1", "--resume", str(ck)]) == 2
    assert not (tmp_path / "m.pt").exists()
    r = T.train(tiny_dataset, tmp_path / "m.pt", epochs=1, batch_size=4, seed=0, init_from=ck, log=lambda m: None)
    assert r["config"]["init_from"]["tensors_random"] == [] and r["learning_curve"]["epoch"] == [1]
    assert sorted(np.concatenate(list(r["split"].values())).tolist()) == list(range(8))


def test_latent_sweep_cli(tmp_path, tiny_dataset):
    from ainerd_core.cli import main

    out = tmp_path / "sweep.json"
    assert main(["latent-sweep", str(tiny_dataset), "--budget-s", "1", "--sizes", "2,4", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["latent_size"] == [2, 4] and len(res["test_mse"]) == 2 and res["epochs"] == [1, 1]
    assert all(0 <= v < 1 for v in res["test_mse"])
    assert "schedule" in res


def test_latent_sweep_can_warm_start_from_a_checkpoint(tmp_path, tiny_dataset):
    from ainerd_core.cli import main

    source = tmp_path / "source.pt"
    T.train(tiny_dataset, source, epochs=1, batch_size=4, latent=8, seed=1, log=lambda m: None)
    out = tmp_path / "sweep.json"
    assert main(["latent-sweep", str(tiny_dataset), "--budget-s", "1", "--sizes", "4,8", "--epochs", "1",
                 "--batch-size", "4", "--init-from", str(source), "--init-bottleneck", "random",
                 "--lr-base", "3e-4", "--lr-max", "3e-4", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["schedule"]["init_from"] == str(source) and res["latent_size"] == [4, 8]
    assert res["schedule"]["lr"] == [3e-4, 3e-4]
    from ainerd_core.diagnostics import sweep_schedule_text
    how = sweep_schedule_text(res)
    assert "warm start" in how and "source.pt" in how and "1 epoch(s) per size" in how and "random" in how
    assert res["schedule"]["augment"] is True and "augmentation" not in how
    # the default warm start projects the checkpoint's code; a fine-tune may skip augmentation
    assert main(["latent-sweep", str(tiny_dataset), "--budget-s", "1", "--sizes", "4", "--epochs", "1",
                 "--batch-size", "4", "--init-from", str(source), "--no-augment", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["schedule"]["init_bottleneck"] == "projected" and res["schedule"]["init_latent"] == 8
    assert res["schedule"]["augment"] is False and res["best_epoch"][0] in (0, 1)
    how = sweep_schedule_text(res)
    assert "no diagonal-shift augmentation" in how and "projected" in how
    # the sweep names the weights it started from by checksum (precompute shows it only beside them)
    assert res["schedule"]["init_sha256"] == M.checkpoint_sha256(source)
    assert f"(latent 8, sha256 {M.checkpoint_sha256(source)[:12]})" in how
    # the checkpoint's own size gets a random bottleneck too: no size starts ahead
    fresh = T.train(tiny_dataset, tmp_path / "fresh.pt", epochs=1, batch_size=4, latent=8, seed=0, init_from=source,
                    init_bottleneck="random", lr_base=1e-12, lr_max=1e-12, log=lambda m: None)
    assert [k for k in fresh["config"]["init_from"]["tensors_random"] if not k.startswith("bottleneck.")] == []
    assert len(fresh["config"]["init_from"]["tensors_random"]) == 4
    assert main(["latent-sweep", str(tiny_dataset), "--budget-s", "1", "--sizes", "4", "--init-from",
                 str(tmp_path / "missing.pt"), "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


def _bottleneck_out(params, h):
    """The decoder's first pre-activation for flattened encoder outputs h (N, 1024)."""
    z = torch.relu(h @ params["bottleneck.1.weight"].double().T + params["bottleneck.1.bias"].double())
    return z @ params["bottleneck.3.weight"].double().T + params["bottleneck.3.bias"].double()


def test_projected_bottleneck_keeps_the_trained_code():
    gen = torch.Generator().manual_seed(0)
    trained = {"bottleneck.1.weight": torch.randn(8, 1024, generator=gen) / 32,
               "bottleneck.1.bias": torch.full((8,), 30.0),    # every unit active: relu(u) = u
               "bottleneck.3.weight": torch.randn(1024, 8, generator=gen),
               "bottleneck.3.bias": torch.randn(1024, generator=gen)}
    # features whose latents vary in 2 directions only: a 2-d code holds all of it
    h = (torch.randn(40, 2, generator=gen, dtype=torch.float64) @ torch.randn(2, 1024, generator=gen, dtype=torch.float64))
    want = _bottleneck_out(trained, h)
    for size in (2, 3):
        got = T.projected_bottleneck(trained, h.numpy(), size)
        assert got["bottleneck.1.weight"].shape == (size, 1024) and got["bottleneck.3.weight"].shape == (1024, size)
        torch.testing.assert_close(_bottleneck_out(got, h), want, rtol=1e-4, atol=1e-4)
    # one dimension loses information: not exact
    assert not torch.allclose(_bottleneck_out(T.projected_bottleneck(trained, h.numpy(), 1), h), want, atol=1e-2)
    # at and above the trained size the code is copied, extra units start inactive in the decoder
    for size in (8, 20):
        got = T.projected_bottleneck(trained, np.zeros((1, 1024)), size, seed=3)
        torch.testing.assert_close(_bottleneck_out(got, h), want, rtol=1e-5, atol=1e-4)
        assert torch.equal(got["bottleneck.3.weight"][:, 8:], torch.zeros(1024, size - 8))
        assert size == 8 or got["bottleneck.1.weight"][8:].abs().sum() > 0  # the new units can learn


def test_projected_warm_start_keeps_the_split_and_never_ends_worse(tmp_path, tiny_dataset, monkeypatch):
    source = tmp_path / "source.pt"
    src = T.train(tiny_dataset, source, epochs=2, batch_size=4, latent=8, seed=1, log=lambda m: None)
    src_state = M.read_checkpoint(source)["state_dict"]
    # a larger projected code starts exactly where the source model is, on the source's split
    lines = []
    r = T.train(tiny_dataset, tmp_path / "w16.pt", epochs=1, batch_size=4, latent=16, seed=7, init_from=source,
                init_bottleneck="projected", log=lines.append)
    assert {k: v.tolist() for k, v in r["split"].items()} == {k: v.tolist() for k, v in src["split"].items()}
    assert r["config"]["init_from"]["split_kept"]
    assert r["config"]["init_from"]["tensors_projected"] == sorted(
        ["bottleneck.1.weight", "bottleneck.1.bias", "bottleneck.3.weight", "bottleneck.3.bias"])
    assert r["config"]["init_from"]["tensors_random"] == []
    epoch0 = [m for m in lines if m.startswith("epoch   0 (warm start)  val ")]
    assert epoch0 and float(epoch0[0].split()[-1]) == pytest.approx(src["best_val_loss"], rel=1e-3)
    assert r["best_val_loss"] <= float(epoch0[0].split()[-1]) + 1e-5
    # when every epoch scores worse on validation, the warm start itself is the result
    real = T.evaluate_mse
    calls = []

    def worse_each_time(model, source_, indices, *a, **k):
        if k.get("return_recon"):
            return real(model, source_, indices, *a, **k)
        calls.append(1)
        return 0.01 * len(calls)  # epoch 0: 0.01, epoch 1: 0.02, ...

    monkeypatch.setattr(T, "evaluate_mse", worse_each_time)
    r = T.train(tiny_dataset, tmp_path / "kept.pt", epochs=2, batch_size=4, latent=16, seed=7, init_from=source,
                init_bottleneck="projected", log=lambda m: None)
    assert r["best_epoch"] == 0 and r["best_val_loss"] == 0.01 and len(calls) == 3
    kept = M.read_checkpoint(tmp_path / "kept.pt")["state_dict"]
    for k, v in src_state.items():
        if k.startswith("bottleneck.1.") or k == "bottleneck.3.weight":
            torch.testing.assert_close(kept[k][tuple(slice(0, n) for n in v.shape)], v)
        else:
            torch.testing.assert_close(kept[k], v)
    monkeypatch.setattr(T, "evaluate_mse", real)
    with pytest.raises(InputError, match="--init-bottleneck must be one of copy, random, projected"):
        T.train(tiny_dataset, tmp_path / "bad.pt", epochs=1, init_from=source, init_bottleneck="pca")
    assert not (tmp_path / "bad.pt").exists()
