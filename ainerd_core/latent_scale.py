"""Equal latent scales: ``python -m ainerd_core equalise-latent CKPT``.

Similarity search, clustering and UMAP compare latents by Euclidean distance, so a latent
dimension with a large spread outweighs the others whatever it encodes. This step rescales every
live latent dimension of a checkpoint to unit standard deviation over reference maps of the
model's own kind, *without changing the network's function*: the latent is
``z_i = relu(w_i . h + b_i)`` and ``relu(s x) = s relu(x)`` for ``s > 0``, so multiplying row i
of the bottleneck's first Linear (weight and bias) by ``s_i`` multiplies ``z_i`` by ``s_i``, and
dividing column i of the second Linear by ``s_i`` leaves every reconstruction as it was (to
float32 rounding). Dimensions that are 0 for every reference map (dead after the ReLU) are left
alone. Measured on the weights shipped before the current ones (docs/model.md, section 5b):
held-out-settings P@10 0.291 -> 0.311.

The reference maps are the domain-randomised generator's in-distribution split at seed
``seed + 1000`` (the novelty bank's maps, never trained on), so the result is deterministic. The
checkpoint's novelty reference (latent k-NN bank) is rebuilt afterwards, because its latents
change scale; its learning-curve JSON is rewritten with the new config.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

MIN_STD = 1e-6   # below this a latent dimension counts as dead (0 for every reference map)


def latent_scales(latents: np.ndarray) -> np.ndarray:
    """(D,) factors that give each live column of ``latents`` (N, D) unit standard deviation (1 for dead ones)."""
    std = np.asarray(latents, np.float64).std(axis=0)
    return np.where(std > MIN_STD, 1.0 / np.maximum(std, MIN_STD), 1.0)


def rescale_latent(model, scales: np.ndarray) -> None:
    """Multiply latent i of ``model`` by ``scales[i]`` (> 0) in place, keeping its reconstructions."""
    s = torch.as_tensor(np.asarray(scales), dtype=torch.float32)
    if s.ndim != 1 or s.numel() != model.latent_size or not bool((s > 0).all()):
        raise InputError("scales", f"need {model.latent_size} positive factors, got shape {tuple(s.shape)}")
    enc, dec = model.bottleneck[1], model.bottleneck[3]
    with torch.no_grad():
        enc.weight.mul_(s[:, None])
        enc.bias.mul_(s)
        dec.weight.div_(s[None, :])


def equalise_checkpoint(path, out=None, n_maps: int = 400, log=print) -> dict:
    """Rescale the latent of the checkpoint at ``path`` (see the module docstring); write ``out``
    (default: in place) and its curve JSON atomically. Returns the recorded ``latent_scale`` dict."""
    from .model import atomic_torch_save, encode, model_from_checkpoint, read_checkpoint
    from .randomsim import generate
    from .ssl import _novelty_extra
    from .train import write_curve_json

    path = Path(path)
    out = Path(out) if out is not None else path
    ck = read_checkpoint(path)
    config = dict(ck.get("config") or {})
    if config.get("latent_scale"):
        raise InputError(path, "the latent of this checkpoint is already equalised")
    if n_maps < 10:
        raise InputError("--maps", f"must be >= 10, got {n_maps}")
    model = model_from_checkpoint(ck, path).eval()
    seed = int(config.get("seed", 0))
    maps, _ = generate(n_maps, seed + 1000, "indist")
    scales = latent_scales(encode(model, maps, batch_size=32, bulk=False))
    rescale_latent(model, scales)
    config["latent_scale"] = {"rule": "each live latent dimension scaled to unit std (ainerd_core.latent_scale)",
                              "maps": f"randomsim in-distribution split, seed {seed + 1000}, {n_maps} maps",
                              "dead_dimensions": int((scales == 1.0).sum())}
    ck["config"] = config
    ck["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ck["latent_scales"] = torch.as_tensor(scales, dtype=torch.float32)
    ref = ck.get("novelty_reference")
    if ref is not None:
        ck.update(_novelty_extra(model, seed, int(ref["n_bank"]), int(ref["n_reference"])))
    atomic_torch_save(ck, out)
    if ck.get("learning_curve"):
        write_curve_json(out, ck["learning_curve"], best_epoch=ck.get("best_epoch"), best_val_loss=ck.get("best_val_loss"),
                         test=ck.get("test"), config=config)
    log(f"equalise-latent: {int((scales != 1.0).sum())} live latent dimensions scaled to unit std "
        f"({config['latent_scale']['dead_dimensions']} dead left alone); wrote {out}")
    return config["latent_scale"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint to rescale (in place unless --out)")
    parser.add_argument("--out", default=None, help="write here instead of in place")
    parser.add_argument("--maps", type=int, default=400, help="reference maps (default 400)")


def run(args) -> int:
    equalise_checkpoint(args.checkpoint, args.out, n_maps=args.maps)
    return 0
