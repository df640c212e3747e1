"""Training on domain-randomised maps, with a self-supervised objective: ``python -m ainerd_core train-randomized``.

``python -m ainerd_core train-randomized --out data/demo_weights.pt --steps 600 --objective both --seed 0``

The published architecture is unchanged (same state_dict keys: the published checkpoint still
loads strict, the latent stays 64-d); only the training data and the loss change.

* Data: fresh maps every step from :mod:`ainerd_core.randomsim` (training split: wide,
  independent parameter ranges, the held-out ranges never drawn), seeded by (seed, step).
* Views: each map gives two views by augmentations that keep its dynamics (:func:`augment`):
  an independent circular shift along the diagonal (time translation), an intensity power law
  x^u (u in 0.75..1.35: contrast / normalisation effects), added symmetric speckle noise
  (std 0..0.06 of the [0, 1] range), with probability 0.3 a 2x down- and up-sampling (blur /
  resampling), then the project's min-max normalisation.
* Objective (``--objective``): ``recon`` = MSE of the reconstruction of view 1 (the published
  loss, divided by ``RECON_SCALE``, a typical map variance, so that it is ~1 - explained
  variance); ``ssl`` = VICReg (Bardes et al. 2022) on the two views' 64-d latents: invariance
  (MSE between views) + variance (hinge at std 1 per latent dimension) + covariance (squared
  off-diagonal covariances / d), weights 25 / 25 / 1 divided by 25; ``both`` = recon +
  ``ssl_weight`` x VICReg. Encoder and decoder are the published network; no projector head.
  ``--ssl-loss infonce`` replaces VICReg by InfoNCE (:func:`info_nce`) on the latent itself, with
  squared Euclidean distances (the geometry of similarity search) divided by their batch mean and
  a temperature: each view must pick its partner among the batch's other views. Unlike VICReg it
  does not force every latent dimension to unit variance, so dimensions that carry nuisances
  (contrast, noise) for the decoder can stay small. With ``--positives physics`` the targets are
  soft: other maps of similar simulated dynamics count as positives too (:func:`physics_targets`).
  The shipped demo weights use ``infonce`` with re-rendered pairs, fine-tuned from the published
  checkpoint (Makefile ``DEMO_WEIGHTS_ARGS``; docs/model.md).
* ``--decoder-steps N``: after the joint steps, N more steps that train the decoder alone on the
  reconstruction of fresh un-augmented maps, the encoder frozen (:func:`decoder_phase`): the
  latents stay as they are, the explained variance rises (shipped weights: 83.5 -> 85.6 %).
* Optimiser: Adam, one-cycle learning rate (linear warm-up over 5 % of the steps to ``lr_max``,
  cosine decay to lr_max / 100), dropout ``--dropout`` (default 0: faster on few CPU steps).
  ``--init-from`` fine-tunes a checkpoint (e.g. the published state_dict) instead of training
  from scratch.
* Deterministic for a seed and a thread count (``--threads``, default 2): every map, view and
  dropout mask is seeded.
* After training: validation MSE / explained variance on 128 fresh maps, and the novelty
  reference (:func:`ainerd_core.novelty.build_reference`: a bank of 400 latents of training-like
  maps and the reconstruction-error / k-NN distributions of 200 other ones), stored in the
  checkpoint under ``novelty_reference``. The learning curve (one entry per ``--steps-per-epoch``
  steps) is also written beside the checkpoint as ``<out stem>.curve.json``, as ``train`` does.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .model import DEFAULT_LATENT, Autoencoder, _fast_encode, atomic_torch_save, make_checkpoint, read_checkpoint

TRAINER = "ainerd_core.ssl.train_randomized"   # config.trainer of every checkpoint this module writes
OBJECTIVES = ("recon", "ssl", "both")
PAIRS = ("augment", "rerender")
SSL_LOSSES = ("vicreg", "infonce")
POSITIVES = ("pair", "physics")
# widths of the physics kernel of ``--positives physics`` (log10 rate; fringe frequency, cycles/pixel)
PHYSICS_WIDTH = {"log_rate": 0.15, "fringe_frequency": 0.006}
RECON_SCALE = 0.02      # a typical per-pixel variance of a normalised C2 map
VICREG = (25.0, 25.0, 1.0)


def _renorm(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / torch.clamp(hi - lo, min=1e-6)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One physics-preserving view of each map of (B, 1, S, S) in [0, 1] (see the module docstring)."""
    b, _, s, _ = x.shape
    shifts = torch.randint(0, s, (b,), generator=gen)
    out = torch.empty_like(x)
    for i in range(b):
        k = int(shifts[i])
        out[i] = torch.roll(x[i], shifts=(k, k), dims=(-2, -1))
    u = 0.75 + 0.6 * torch.rand(b, 1, 1, 1, generator=gen)
    out = out.clamp_min(0).pow(u)
    sigma = 0.06 * torch.rand(b, 1, 1, 1, generator=gen)
    z = torch.randn(b, 1, s, s, generator=gen)
    z = (z + z.transpose(-2, -1)) / math.sqrt(2.0)
    out = out + sigma * z
    blur = torch.rand(b, generator=gen) < 0.3
    if bool(blur.any()):
        small = F.avg_pool2d(out[blur], 2)
        out[blur] = F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
    return _renorm(out)


def vicreg(z1: torch.Tensor, z2: torch.Tensor, weights=VICREG) -> tuple[torch.Tensor, dict]:
    """VICReg loss of two (B, D) batches of embeddings (divided by the invariance weight)."""
    wi, wv, wc = weights
    inv = F.mse_loss(z1, z2)
    var = cov = 0.0
    d = z1.shape[1]
    for z in (z1, z2):
        zc = z - z.mean(dim=0)
        std = torch.sqrt(zc.var(dim=0) + 1e-4)
        var = var + torch.mean(F.relu(1.0 - std)) / 2
        c = (zc.T @ zc) / max(z.shape[0] - 1, 1)
        off = c - torch.diag(torch.diag(c))
        cov = cov + (off ** 2).sum() / d / 2
    loss = (wi * inv + wv * var + wc * cov) / wi
    return loss, {"inv": float(inv.detach()), "var": float(var.detach()) if torch.is_tensor(var) else var,
                  "cov": float(cov.detach()) if torch.is_tensor(cov) else cov}


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
             soft: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive (InfoNCE / NT-Xent) loss of two (B, D) batches of embeddings, on squared
    Euclidean distances - the geometry similarity search uses - divided by their batch mean, so the
    loss does not depend on the latent's scale (the decoder can absorb any scale).

    Every one of the 2B embeddings must pick its partner (row i of the other batch) among the
    2B - 1 others; with ``soft`` ((2B, 2B) rows summing to 1, zero diagonal) the target is that
    distribution instead (several positives, weighted)."""
    z = torch.cat([z1, z2])
    n = z.shape[0]
    sq = (z * z).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0)
    off = ~torch.eye(n, dtype=torch.bool)
    logits = (-d / (temperature * d[off].mean().clamp_min(1e-12))).masked_fill(~off, float("-inf"))
    if soft is None:
        return F.cross_entropy(logits, torch.arange(n).roll(n // 2))
    logp = torch.log_softmax(logits, dim=1).masked_fill(~off, 0.0)
    return -(soft * logp).sum(1).mean()


def physics_targets(truth: dict) -> torch.Tensor:
    """(2B, 2B) soft positives from the simulator's truth of B maps and their B partners: a
    Gaussian kernel in log10 relaxation rate and fringe frequency (:data:`PHYSICS_WIDTH`), zero
    unless aging class and burst agree; each map's own partner weighs at least 1; rows sum to 1."""
    lr = np.log10(np.maximum(np.asarray(truth["relaxation_rate"], float), 1e-12))
    f = np.asarray(truth["fringe_frequency"], float)
    same = (np.asarray(truth["aging"])[:, None] == np.asarray(truth["aging"])[None, :]) & (
        np.asarray(truth["burst"])[:, None] == np.asarray(truth["burst"])[None, :])
    w = np.exp(-0.5 * ((lr[:, None] - lr[None, :]) / PHYSICS_WIDTH["log_rate"]) ** 2
               - 0.5 * ((f[:, None] - f[None, :]) / PHYSICS_WIDTH["fringe_frequency"]) ** 2) * same
    w = np.tile(w, (2, 2))
    b = len(lr)
    idx = np.arange(2 * b)
    w[idx, (idx + b) % (2 * b)] = np.maximum(w[idx, (idx + b) % (2 * b)], 1.0)
    w[idx, idx] = 0.0
    return torch.from_numpy(w / w.sum(1, keepdims=True)).float()


def _batch(seed: int, step: int, batch_size: int, pairs: bool = False):
    """(B, 1, S, S) maps of step ``step`` (and, with ``pairs``, their re-rendered partners and the truth)."""
    from .randomsim import generate

    # maps of step t are maps t*B .. t*B+B-1 of the training split: no map is drawn twice
    if pairs:
        maps, partners, truth = generate(batch_size, seed, "train", start=step * batch_size, pairs=True)
        return torch.from_numpy(maps).unsqueeze(1), torch.from_numpy(partners).unsqueeze(1), truth
    maps, _ = generate(batch_size, seed, "train", start=step * batch_size)
    return torch.from_numpy(maps).unsqueeze(1)


def he_init(model: Autoencoder) -> None:
    """He (Kaiming normal, fan-in, ReLU gain) weights and zero biases for every layer followed by
    a ReLU. PyTorch's default initialisation shrinks the signal ~6x in variance per layer: after
    the encoder's six convolutions and the bottleneck Linear the latents of different maps differ
    by ~1e-3 and a short from-scratch run never leaves that collapsed start (measured: latent std
    9e-4 after 60 steps)."""
    last = model.decoder1[21]
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod is not last:
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            torch.nn.init.zeros_(mod.bias)


def _lr_at(step: int, steps: int, lr_max: float) -> float:
    warm = max(1, int(0.05 * steps))
    if step < warm:
        return lr_max * (step + 1) / warm
    p = (step - warm) / max(1, steps - warm)
    return lr_max / 100 + 0.5 * (lr_max - lr_max / 100) * (1 + math.cos(math.pi * p))


def evaluate(model: Autoencoder, maps: np.ndarray, batch_size: int = 32) -> dict:
    """Reconstruction MSE and explained variance (as :func:`ainerd_core.train.explained_variance`)."""
    from .model import decode, encode
    from .train import explained_variance

    # bulk=False: the weights change between calls, a frozen graph would be rebuilt every time
    z = encode(model, maps, batch_size=batch_size, bulk=False)
    return explained_variance(maps, decode(model, z, batch_size=batch_size))


def _check_options(out: Path, *, steps, batch_size, objective, lr_max, dropout, threads, steps_per_epoch, n_val,
                   pairs, ssl_loss="vicreg", positives="pair", temperature=0.1, decoder_steps=0) -> None:
    """Validate ``train_randomized``'s options once, at the edge (one-line errors naming the option)."""
    if not out.parent.exists():
        raise InputError(out, "the output folder does not exist")
    if objective not in OBJECTIVES:
        raise InputError("--objective", f"must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if pairs not in PAIRS:
        raise InputError("--pairs", f"must be one of {', '.join(PAIRS)}, got {pairs!r}")
    if ssl_loss not in SSL_LOSSES:
        raise InputError("--ssl-loss", f"must be one of {', '.join(SSL_LOSSES)}, got {ssl_loss!r}")
    if positives not in POSITIVES:
        raise InputError("--positives", f"must be one of {', '.join(POSITIVES)}, got {positives!r}")
    if positives == "physics" and (pairs != "rerender" or ssl_loss != "infonce"):
        raise InputError("--positives", "physics needs --pairs rerender and --ssl-loss infonce")
    if not (math.isfinite(temperature) and temperature > 0):
        raise InputError("--temperature", f"must be > 0, got {temperature}")
    for name, v, lo in (("--steps", steps, 1), ("--batch-size", batch_size, 4 if objective != "recon" else 1),
                        ("--steps-per-epoch", steps_per_epoch, 1), ("--n-val", n_val, 4),
                        ("--decoder-steps", decoder_steps, 0)):
        if v < lo:
            raise InputError(name, f"must be >= {lo}, got {v}")
    if not (math.isfinite(lr_max) and 0 < lr_max <= 1):
        raise InputError("--lr-max", f"must be in (0, 1], got {lr_max}")
    if not 0 <= dropout < 1:
        raise InputError("--dropout", f"must be in [0, 1), got {dropout}")
    if threads is not None and threads < 1:
        raise InputError("--threads", f"must be >= 1, got {threads}")


def _initial_model(seed: int, dropout: float, init_from) -> tuple[Autoencoder, str]:
    """The seeded starting network (He initialisation, or ``init_from``'s weights) and a note."""
    torch.manual_seed(seed)
    model = Autoencoder(DEFAULT_LATENT, dropout=dropout)
    if init_from is None:
        he_init(model)
        return model, "from scratch (seeded He initialisation)"
    ck = read_checkpoint(init_from)
    model.load_state_dict(ck["state_dict"], strict=True)
    return model, f"fine-tuned from {init_from}"


def _run_config(*, steps, batch_size, objective, seed, lr_max, ssl_weight, dropout, init_note, steps_per_epoch,
                n_val, pairs, ssl_loss, temperature, positives, decoder_steps=0) -> dict:
    """The checkpoint's ``config``: everything needed to repeat the run."""
    config = {"trainer": TRAINER, "data": "ainerd_core.randomsim training split (fresh maps "
              "every step)", "steps": int(steps), "batch_size": int(batch_size), "objective": objective,
              "ssl_weight": float(ssl_weight), "vicreg_weights": list(VICREG), "recon_scale": RECON_SCALE,
              "lr_max": float(lr_max), "schedule": "linear warm-up 5 %, cosine to lr_max/100", "dropout": float(dropout),
              "seed": int(seed), "latent": DEFAULT_LATENT, "augment": True, "init": init_note,
              "augmentation": "two views: diagonal shift, intensity power 0.75..1.35, speckle noise std 0..0.06, "
                              "p=0.3 2x down/up-sampling, min-max renormalisation",
              "torch_threads": torch.get_num_threads(), "steps_per_epoch": int(steps_per_epoch), "n_val": int(n_val),
              "pairs": pairs if objective != "recon" else None, "decoder_steps": int(decoder_steps)}
    if pairs == "rerender":
        config["augmentation"] += ("; view 2 from a re-rendering of the same dynamics with the nuisances redrawn "
                                   "(randomsim.redraw_nuisances)")
    if objective != "recon":
        config.update(ssl_loss=ssl_loss, temperature=float(temperature) if ssl_loss == "infonce" else None,
                      positives=positives, physics_width=PHYSICS_WIDTH if positives == "physics" else None)
    return config


def _ssl_term(model, h1, x2, gen, ssl_loss: str, temperature: float, soft) -> torch.Tensor:
    """The self-supervised term between view 1's pre-activations ``h1`` and a view of ``x2``."""
    h2 = _fast_encode(model, augment(x2, gen), pre_activation=True)
    if ssl_loss == "vicreg":
        return vicreg(h1, h2)[0]
    # InfoNCE acts on the latent itself (after the ReLU): the vectors similarity search compares
    return info_nce(F.relu(h1), F.relu(h2), temperature, soft)


def _optimisation_step(model, opt, x, x2, gen, objective: str, ssl_weight: float, ssl_loss: str = "vicreg",
                       temperature: float = 0.1, soft=None) -> tuple[float, float, float]:
    """One Adam step on a batch; returns (loss, reconstruction term, self-supervised term) as floats."""
    model.train()
    v1 = augment(x, gen)
    loss = torch.zeros(())
    rec_val = ssl_val = 0.0
    # VICReg acts on the latents before the bottleneck ReLU: a latent dimension that is 0 for
    # the whole batch would otherwise give no gradient and stay dead
    h1 = _fast_encode(model, v1, pre_activation=True)
    if objective in ("recon", "both"):
        rec = F.mse_loss(model.decode(F.relu(h1)), v1) / RECON_SCALE
        loss = loss + rec
        rec_val = float(rec.detach())
    if objective in ("ssl", "both"):
        s = _ssl_term(model, h1, x2, gen, ssl_loss, temperature, soft)
        loss = loss + (ssl_weight if objective == "both" else 1.0) * s
        ssl_val = float(s.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach()), rec_val, ssl_val


def _record_epoch(model, val_maps, curve: dict, *, loss: float, recon: float, ssl: float, lr: float,
                  t_epoch: float) -> dict:
    """Append one learning-curve entry (validation on ``val_maps``) to ``curve``; returns the validation."""
    model.eval()
    ev = evaluate(model, val_maps)
    for key, value in (("epoch", len(curve["epoch"]) + 1), ("train_loss", loss), ("recon", recon), ("vicreg", ssl),
                       ("val_loss", ev["mse"]), ("lr", lr), ("seconds", time.perf_counter() - t_epoch)):
        curve[key].append(value)
    return ev


def decoder_phase(model: Autoencoder, *, seed: int, first_step: int, steps: int, batch_size: int, lr_max: float,
                  val_maps: np.ndarray, curve: dict, steps_per_epoch: int, log=print) -> None:
    """Fine-tune the decoder alone (``bottleneck.3`` and ``decoder1``) for ``steps`` steps on the
    reconstruction of fresh, un-augmented training-split maps (step t draws the maps of step
    ``first_step + t``: none seen before). The encoder is frozen, so the latents - and every
    neighbour, cluster and UMAP built on them - do not change; only reconstructions (explained
    variance) improve. Why: the self-supervised term spends some of the joint budget on the
    latent's geometry, and the decoder has to follow a moving latent; once the latent is fixed it
    can fit it. Curve entries are appended to ``curve``."""
    params = list(model.bottleneck[3].parameters()) + list(model.decoder1.parameters())
    opt = torch.optim.Adam(params, lr=lr_max)
    running, t_epoch = [], time.perf_counter()
    for step in range(steps):
        lr = _lr_at(step, steps, lr_max)
        for g in opt.param_groups:
            g["lr"] = lr
        x = _batch(seed, first_step + step, batch_size)
        model.eval()   # the frozen encoder: no dropout, no gradient
        with torch.no_grad():
            z = _fast_encode(model, x)
        model.train()
        loss = F.mse_loss(model.decode(z), x) / RECON_SCALE
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        if (step + 1) % steps_per_epoch == 0 or step + 1 == steps:
            mean = sum(running) / len(running)
            ev = _record_epoch(model, val_maps, curve, loss=mean, recon=mean, ssl=0.0, lr=lr, t_epoch=t_epoch)
            log(f"decoder step {step + 1:5d}/{steps}  recon {mean:.4f}  val MSE {ev['mse']:.5f} "
                f"EV {ev['explained_variance'] * 100:.1f} %  lr {lr:.2e}  {curve['seconds'][-1]:.0f} s")
            running, t_epoch = [], time.perf_counter()


def _novelty_extra(model, seed: int, novelty_bank: int, novelty_ref: int) -> dict:
    """The checkpoint's novelty reference, from in-distribution maps no step trained on."""
    if novelty_bank <= 0 or novelty_ref <= 0:
        return {}
    from .novelty import build_reference
    from .randomsim import generate

    bank, _ = generate(novelty_bank, seed + 1000, "indist")
    ref, _ = generate(novelty_ref, seed + 2000, "indist")
    return {"novelty_reference": build_reference(model, bank, ref, source=(
        f"randomsim in-distribution maps (seed {seed + 1000}: bank of {novelty_bank}; seed {seed + 2000}: "
        f"reference of {novelty_ref}), never trained on"))}


def train_randomized(out, *, steps: int = 600, batch_size: int = 16, objective: str = "both", seed: int = 0,
                     lr_max: float = 1e-3, ssl_weight: float = 0.2, dropout: float = 0.0, threads: int | None = 2,
                     init_from=None, steps_per_epoch: int = 25, n_val: int = 64, log=print,
                     novelty_bank: int = 400, novelty_ref: int = 200, pairs: str = "augment", ssl_loss: str = "vicreg",
                     temperature: float = 0.1, positives: str = "pair", decoder_steps: int = 0) -> dict:
    """Train (or fine-tune) the autoencoder on domain-randomised maps; write the checkpoint to
    ``out`` atomically; return a summary dict. See the module docstring."""
    out = Path(out)
    _check_options(out, steps=steps, batch_size=batch_size, objective=objective, lr_max=lr_max, dropout=dropout,
                   threads=threads, steps_per_epoch=steps_per_epoch, n_val=n_val, pairs=pairs, ssl_loss=ssl_loss,
                   positives=positives, temperature=temperature, decoder_steps=decoder_steps)
    if threads is not None:
        torch.set_num_threads(int(threads))
    from .randomsim import generate

    t_start = time.perf_counter()
    model, init_note = _initial_model(seed, dropout, init_from)
    val_maps, _ = generate(n_val, seed, "val")
    opt = torch.optim.Adam(model.parameters(), lr=lr_max)
    gen = torch.Generator().manual_seed(seed + 17)
    config = _run_config(steps=steps, batch_size=batch_size, objective=objective, seed=seed, lr_max=lr_max,
                         ssl_weight=ssl_weight, dropout=dropout, init_note=init_note,
                         steps_per_epoch=steps_per_epoch, n_val=n_val, pairs=pairs, ssl_loss=ssl_loss,
                         temperature=temperature, positives=positives, decoder_steps=decoder_steps)
    curve = {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "seconds": [], "recon": [], "vicreg": []}
    log(f"train-randomized: {steps} steps x {batch_size} maps, objective {objective}, {init_note}, "
        f"{torch.get_num_threads()} threads, seed {seed}")
    running = []  # (loss, recon, self-supervised term) of each step since the last epoch line
    ssl_name = ssl_loss if objective != "recon" else "ssl"
    t_epoch = time.perf_counter()
    for step in range(steps):
        lr = _lr_at(step, steps, lr_max)
        for g in opt.param_groups:
            g["lr"] = lr
        x = x2 = _batch(seed, step, batch_size, pairs=pairs == "rerender" and objective != "recon")
        soft = None
        if isinstance(x, tuple):
            x, x2, truth = x
            soft = physics_targets(truth) if positives == "physics" else None
        running.append(_optimisation_step(model, opt, x, x2, gen, objective, ssl_weight, ssl_loss, temperature, soft))
        if (step + 1) % steps_per_epoch == 0 or step + 1 == steps:
            loss, rec, ssl = (sum(r[i] for r in running) / len(running) for i in range(3))
            ev = _record_epoch(model, val_maps, curve, loss=loss, recon=rec, ssl=ssl, lr=lr, t_epoch=t_epoch)
            log(f"step {step + 1:5d}/{steps}  loss {loss:.4f} (recon {rec:.4f}, {ssl_name} {ssl:.4f})  val MSE "
                f"{ev['mse']:.5f} EV {ev['explained_variance'] * 100:.1f} %  lr {lr:.2e}  {curve['seconds'][-1]:.0f} s")
            running = []
            t_epoch = time.perf_counter()
    if decoder_steps:
        decoder_phase(model, seed=seed, first_step=steps, steps=decoder_steps, batch_size=batch_size, lr_max=lr_max,
                      val_maps=val_maps, curve=curve, steps_per_epoch=steps_per_epoch, log=log)
    model.eval()
    val = evaluate(model, val_maps)
    extra = _novelty_extra(model, seed, novelty_bank, novelty_ref)
    elapsed = time.perf_counter() - t_start
    ck = make_checkpoint(model, config=config, learning_curve=curve, best_epoch=len(curve["epoch"]),
                         best_val_loss=val["mse"], test=val, train_seconds=elapsed, epoch=len(curve["epoch"]), **extra)
    atomic_torch_save(ck, out)
    # the curve beside the checkpoint, in the shape `train` writes (precompute and /model read it)
    from .train import write_curve_json

    write_curve_json(out, curve, best_epoch=len(curve["epoch"]), best_val_loss=val["mse"], test=val, config=config)
    log(f"validation ({n_val} unseen training-range maps): MSE {val['mse']:.5f}, explained variance "
        f"{val['explained_variance'] * 100:.1f} %; {elapsed:.0f} s; wrote {out}")
    return {"out": str(out), "val": val, "seconds": elapsed, "curve": curve, "config": config}


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps (default 600)")
    parser.add_argument("--batch-size", type=int, default=16, help="maps per step (default 16)")
    parser.add_argument("--objective", choices=OBJECTIVES, default="both", help="recon, ssl or both (default both)")
    parser.add_argument("--ssl-weight", type=float, default=0.2, help="VICReg weight with --objective both (default 0.2)")
    parser.add_argument("--lr-max", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout probability (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, views and initialisation (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2; results depend on it)")
    parser.add_argument("--init-from", default=None, help="fine-tune this checkpoint (e.g. the published state_dict)")
    parser.add_argument("--pairs", choices=PAIRS, default="augment",
                        help="second view of a map: augment (the same map, augmented again; default) or rerender "
                             "(the same dynamics re-rendered with the nuisances redrawn, then augmented)")
    parser.add_argument("--ssl-loss", choices=SSL_LOSSES, default="vicreg",
                        help="self-supervised term: vicreg (default) or infonce (contrastive, on Euclidean distances)")
    parser.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature (default 0.1)")
    parser.add_argument("--positives", choices=POSITIVES, default="pair",
                        help="InfoNCE positives: pair (each map's own second view; default) or physics (also other maps "
                             "of similar simulated dynamics, weighted by a kernel on the simulator's truth)")
    parser.add_argument("--decoder-steps", type=int, default=0,
                        help="after training, fine-tune the decoder alone for N more steps with the encoder frozen: "
                             "better reconstructions, the same latents (default 0)")
    parser.add_argument("--steps-per-epoch", type=int, default=25, help="steps per learning-curve entry (default 25)")


def run(args) -> int:
    train_randomized(args.out, steps=args.steps, batch_size=args.batch_size, objective=args.objective, seed=args.seed,
                     lr_max=args.lr_max, ssl_weight=args.ssl_weight, dropout=args.dropout, threads=args.threads,
                     init_from=args.init_from, steps_per_epoch=args.steps_per_epoch, pairs=args.pairs,
                     ssl_loss=args.ssl_loss, temperature=args.temperature, positives=args.positives,
                     decoder_steps=args.decoder_steps)
    return 0
