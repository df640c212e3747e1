"""The autoencoder: published architecture, fast CPU path, encode/decode API, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ainerd_core import model as M
from ainerd_core.dataset import open_dataset, write_dataset
from ainerd_core.errors import InputError
from conftest import small_meta

EXPECTED_KEYS = ([f"encoder.{i}.{p}" for i in (0, 3, 7, 10, 14, 17) for p in ("weight", "bias")]
                 + [f"bottleneck.{i}.{p}" for i in (1, 3) for p in ("weight", "bias")]
                 + [f"decoder1.{i}.{p}" for i in (0, 3, 7, 10, 14, 17, 21) for p in ("weight", "bias")])


def band_maps(n: int, seed: int = 0) -> np.ndarray:
    """C2-like maps: a bright diagonal band of random width, plus a little noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    maps = [np.exp(-np.abs(i - j) / (2 + 30 * rng.random())) + 0.02 * rng.random((256, 256)) for _ in range(n)]
    return np.clip(np.stack(maps) / 1.02, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def published(request):
    from conftest import E031

    path = E031 / "published_checkpoint_state_dict.pth"
    if not path.exists():
        pytest.skip("../shared/data/ainerd_e031 is not beside this checkout")
    return M.load_model(path, device="cpu")


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return M.Autoencoder(64).eval()


def test_state_dict_keys_are_the_published_ones():
    sd = M.Autoencoder().state_dict()
    assert sorted(sd) == sorted(EXPECTED_KEYS)
    assert sd["encoder.0.weight"].shape == (16, 1, 3, 3)
    assert sd["bottleneck.1.weight"].shape == (64, 1024)
    assert sd["decoder1.21.weight"].shape == (1, 32, 3, 3)
    assert M.Autoencoder(16).state_dict()["bottleneck.3.weight"].shape == (1024, 16)


def test_published_checkpoint_loads_strictly(e031_dir):
    sd = torch.load(e031_dir / "published_checkpoint_state_dict.pth", map_location="cpu", weights_only=True)
    net = M.Autoencoder(64)
    net.load_state_dict(sd, strict=True)  # raises on any missing / unexpected / mis-shaped key
    model = M.load_model(e031_dir / "published_checkpoint_state_dict.pth", device="cpu")
    assert not model.training and model.latent_size == 64
    for k, v in sd.items():
        torch.testing.assert_close(model.state_dict()[k], v.cpu())


def test_encode_decode_shapes_nonnegative_deterministic(random_model):
    maps = band_maps(5)
    z1 = M.encode(random_model, maps, batch_size=2)
    z2 = M.encode(random_model, maps, batch_size=64)
    assert z1.shape == (5, 64) and z1.dtype == np.float32
    assert (z1 >= 0).all()
    np.testing.assert_array_equal(z2, M.encode(random_model, maps))          # deterministic: bit-identical
    np.testing.assert_array_equal(z1, M.encode(random_model, maps, batch_size=2))
    np.testing.assert_allclose(z1, z2, atol=1e-6)     # other batch sizes: float rounding only
    out = M.decode(random_model, z1, batch_size=3)
    assert out.shape == (5, 256, 256) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, M.decode(random_model, z1, batch_size=3))
    np.testing.assert_allclose(out, M.decode(random_model, z1), atol=1e-6)
    assert M.encode(random_model, maps[0]).shape == (1, 64)   # a single map
    with pytest.raises(InputError):
        M.encode(random_model, np.zeros((2, 128, 128), np.float32))
    with pytest.raises(InputError):
        M.decode(random_model, np.zeros((2, 8), np.float32))


def test_module_encode_decode_methods(random_model):
    x = torch.from_numpy(band_maps(3))
    with torch.inference_mode():
        z = random_model.encode(x)
        assert z.shape == (3, 64)
        assert random_model.decode(z).shape == (3, 1, 256, 256)
        assert random_model(x.unsqueeze(1)).shape == (3, 1, 256, 256)


@pytest.mark.parametrize("fuse,jit,rewrite", [(True, False, True), (False, False, True), (True, True, True),
                                              (True, False, False)])
def test_fast_path_matches_plain_eager(published, fuse, jit, rewrite, monkeypatch):
    monkeypatch.setattr(M, "LAST_CONV_REWRITE", rewrite)
    maps = band_maps(6, seed=1)
    x = torch.from_numpy(maps).unsqueeze(1)
    published.fast = False
    with torch.no_grad():
        z_ref = published.encode(x)
        y_ref = published.decode(z_ref)
    published.fast, published.fuse, published.jit = True, fuse, jit
    try:
        z = torch.from_numpy(M.encode(published, maps, batch_size=4))
        y = torch.from_numpy(M.decode(published, z_ref.numpy()))
    finally:
        published.fuse, published.jit = True, False
    torch.testing.assert_close(z, z_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y, y_ref[:, 0], atol=1e-5, rtol=1e-4)


def test_bulk_encoding_runs_the_frozen_plain_graph_and_matches_plain_eager(published, monkeypatch):
    monkeypatch.setattr(M, "BULK_MIN_MAPS", 8)
    maps = band_maps(13, seed=4)        # 13 maps: one short chunk at the end
    published.fast = False
    with torch.no_grad():
        z_ref = published.encode(torch.from_numpy(maps)).numpy()
    published.fast = True
    published._graphs.pop("encode_plain", None)
    z = M.encode(published, maps, batch_size=13)
    assert published._graphs["encode_plain"][1] is not None       # the bulk graph was built and used
    np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(M.encode(published, maps, batch_size=13), z)    # deterministic
    # below the threshold the eager fast path runs: same latents to float32 rounding
    np.testing.assert_allclose(M.encode(published, maps[:5]), z[:5], atol=1e-5, rtol=1e-4)
    # a caller encoding a large dataset piece by piece forces the bulk path (precompute does)
    monkeypatch.setattr(M, "BULK_MIN_MAPS", 10 ** 9)
    published._graphs.pop("encode_plain", None)
    np.testing.assert_allclose(M.encode(published, maps[:5], bulk=True), z[:5], atol=1e-6, rtol=1e-5)
    assert published._graphs["encode_plain"][1] is not None


def test_default_encode_of_one_or_a_few_maps_runs_the_shared_frozen_graph(published):
    # issue 12 item 7: the default path is the fastest variant of benchmarks/encode.py for any
    # number of maps, a single upload included, with the plain network's latents
    maps = band_maps(3, seed=5)
    published.fast = False
    with torch.no_grad():
        z_ref = published.encode(torch.from_numpy(maps)).numpy()
    published.fast = True
    published._graphs.pop("encode_plain", None)
    z1 = M.encode(published, maps[:1])
    graph = published._graphs["encode_plain"][1]
    assert graph is not None
    np.testing.assert_allclose(z1, z_ref[:1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(M.encode(published, maps), z_ref, atol=1e-5, rtol=0)
    # another model object with the same weights reuses the graph (no second build)...
    again = M.Autoencoder(published.latent_size)
    again.load_state_dict(published.state_dict())
    again.eval()
    np.testing.assert_allclose(M.encode(again, maps), z_ref, atol=1e-5, rtol=0)
    assert again._graphs["encode_plain"][1] is graph
    # ...and changed weights get their own graph, with their own latents
    with torch.no_grad():
        again.bottleneck[1].bias += 1.0
    z_changed = M.encode(again, maps)
    assert again._graphs["encode_plain"][1] is not graph
    again.fast = False
    with torch.no_grad():
        np.testing.assert_allclose(z_changed, again.encode(torch.from_numpy(maps)).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rewrite", [True, False])
def test_fast_training_path_has_the_plain_gradients(rewrite, monkeypatch):
    # both implementations of the last convolution, whichever this CPU would pick
    monkeypatch.setattr(M, "LAST_CONV_REWRITE", rewrite)
    torch.manual_seed(1)
    net = M.Autoencoder(64, dropout=0.0).train()
    x = torch.from_numpy(band_maps(2, seed=2)).unsqueeze(1)
    grads = []
    for fast in (False, True):
        net.fast = fast
        net.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), x)
        loss.backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for g_plain, g_fast in zip(*grads):
        torch.testing.assert_close(g_fast, g_plain, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("kernel", [True, False], ids=["numba-kernel", "torch-ops"])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_drop_relu_is_dropout_then_relu(monkeypatch, kernel, layout):
    monkeypatch.setattr(M, "DROP_RELU_KERNEL", kernel)
    torch.manual_seed(0)
    x = torch.randn(4, 16, 64, 64).contiguous(memory_format=layout).requires_grad_()
    y = M._drop_relu(x, 0.25, True)
    assert y.is_contiguous(memory_format=layout)
    kept = y != 0
    positive = x.detach() > 0
    assert not (kept & ~positive).any()                       # ReLU
    torch.testing.assert_close(y[kept], x.detach()[kept] / 0.75)  # inverted-dropout scaling
    frac = kept.sum().item() / positive.sum().item()
    assert abs(frac - 0.75) < 0.01                            # keep probability 1 - p
    # the gradient flows only where the map was kept, scaled; also for a gradient in the other layout
    other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format
    g = torch.randn(x.shape).contiguous(memory_format=other)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / 0.75, 0.0))


def test_fused_dropout_mask_follows_the_seed_not_the_threads(monkeypatch):
    import numba

    monkeypatch.setattr(M, "DROP_RELU_KERNEL", True)
    x = torch.rand(2, 16, 128, 128).contiguous(memory_format=torch.channels_last)  # all > 0
    masks = []
    for seed, threads in ((1, numba.get_num_threads()), (1, 1), (2, 1)):
        numba.set_num_threads(threads)
        try:
            torch.manual_seed(seed)
            masks.append(M._drop_relu(x.clone().requires_grad_(), 0.25, True) != 0)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    # exactly Bernoulli(0.75) per element: the kept share of 524,288 values is within 5 sigma
    n = x.numel()
    for m in masks:
        assert abs(m.sum().item() / n - 0.75) < 5 * (0.75 * 0.25 / n) ** 0.5
    # neighbouring values are independent (a broken generator repeats bytes or blocks)
    a, b = masks[0].reshape(-1)[:-1].float(), masks[0].reshape(-1)[1:].float()
    assert abs(((a - 0.75) * (b - 0.75)).mean().item()) < 5 * 0.1875 / (n ** 0.5)


def test_bf16_is_opt_in(random_model):
    assert random_model.precision == "fp32"
    maps = band_maps(2)
    z = M.encode(random_model, maps)
    random_model.precision = "bf16"
    try:
        zb = M.encode(random_model, maps)
    finally:
        random_model.precision = "fp32"
    np.testing.assert_allclose(zb, z, atol=0.1 * max(1.0, float(np.abs(z).max())))


def test_encode_streams_a_dataset(tmp_path, random_model):
    maps = band_maps(7)
    path = write_dataset(tmp_path / "d.h5", maps=maps, meta=small_meta(7, n_sectors=7))
    with open_dataset(path) as ds:
        z = M.encode(random_model, ds, batch_size=3, progress=True)
    np.testing.assert_allclose(z, M.encode(random_model, maps), atol=1e-6)


def test_checkpoint_round_trip_and_latent_size(tmp_path):
    torch.manual_seed(3)
    net = M.Autoencoder(8).eval()
    curve = {"epoch": [1], "train_loss": [0.1], "val_loss": [0.2]}
    path = M.save_checkpoint(net, tmp_path / "m.pt", config={"epochs": 1, "seed": 3}, learning_curve=curve)
    back = M.load_model(path, device="cpu")
    assert back.latent_size == 8 and not back.training
    assert back.checkpoint_info["config"] == {"epochs": 1, "seed": 3}
    assert back.checkpoint_info["learning_curve"] == curve
    assert back.checkpoint_info["format_version"] == M.FORMAT_VERSION
    assert "normalisation" in back.checkpoint_info
    maps = band_maps(2)
    np.testing.assert_array_equal(M.encode(back, maps), M.encode(net, maps))


def test_bad_checkpoints_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="no such"):
        M.load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="junk.pt"):
        M.load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(InputError, match="not an AI-NERD"):
        M.load_model(other)
    wrong = tmp_path / "wrong.pt"
    sd = M.Autoencoder(64).state_dict()
    sd["encoder.3.weight"] = torch.zeros(16, 16, 5, 5)
    torch.save(sd, wrong)
    with pytest.raises(InputError, match="do not fit"):
        M.load_model(wrong)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InputError):
        M.load_model(tmp_path / "list.pt")


def test_encode_cli_prints_a_summary(tmp_path, capsys):
    from ainerd_core.cli import main

    torch.manual_seed(0)
    ck = M.save_checkpoint(M.Autoencoder(16), tmp_path / "m.pt")
    ds = write_dataset(tmp_path / "d.h5", maps=band_maps(4), meta=small_meta(4, n_sectors=4))
    assert main(["encode", str(ds), "--model", str(ck), "--no-progress", "--out", str(tmp_path / "z.npy")]) == 0
    out = capsys.readouterr().out
    assert "encoded 4 maps -> 16-d latents" in out
    assert np.load(tmp_path / "z.npy").shape == (4, 16)
    assert main(["encode", str(ds), "--model", str(tmp_path / "nope.pt"), "--no-progress"]) == 2


def test_diagnostics_reconstructions_and_latent_noise(tmp_path, random_model):
    from ainerd_core.diagnostics import latent_noise, reconstructions

    ds_path = write_dataset(tmp_path / "d.h5", maps=band_maps(6), meta=small_meta(6, n_sectors=6))
    with open_dataset(ds_path) as ds:
        r = reconstructions(random_model, ds, n=4, seed=0)
    assert r["input"].shape == r["output"].shape == (4, 256, 256)
    assert len(set(r["index"].tolist())) == 4 and r["mse"].shape == (4,)
    z = M.encode(random_model, band_maps(3))
    noise = latent_noise(random_model, z, sigma=0.3, n=5, seed=1)
    assert noise["maps"].shape == (5, 256, 256) and noise["noisy"].shape == (5, 64)
    assert (noise["noisy"] >= 0).all()
    again = latent_noise(random_model, z, sigma=0.3, n=5, seed=1)
    np.testing.assert_array_equal(noise["maps"], again["maps"])


def test_flop_counts():
    # conv FLOPs dominate; the published encoder is ~0.46 GFLOP per map
    assert 4.5e8 < M.encoder_flops(64) < 4.8e8
    assert 2.9e8 < M.decoder_flops(64) < 3.2e8
