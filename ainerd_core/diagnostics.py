"""Model diagnostics the reviewers asked for: reconstructions, latent neighbourhoods, latent size.

* :func:`reconstructions` - random held-out maps next to the model's reconstructions.
* :func:`latent_noise` - one latent vector plus Gaussian noise (sigma 0.3, the mean latent std
  in the paper) decoded into artificial maps: a smooth latent space gives similar maps.
* :func:`latent_size_sweep` - test MSE vs latent size (2, 4, ... 1024), each size trained with
  a short schedule under a shared time budget; CLI
  ``python -m ainerd_core latent-sweep DATASET --budget-s 600 --out sweep.json``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import InputError

SWEEP_SIZES = tuple(2 ** k for k in range(1, 11))  # 2 .. 1024


def _held_out_indices(model, n_maps: int) -> np.ndarray:
    """Test-split indices recorded in the model's checkpoint, else all maps."""
    info = getattr(model, "checkpoint_info", {}) or {}
    split = info.get("split") or {}
    test = np.asarray(split.get("test", []), dtype=np.int64)
    if test.size and info.get("dataset_n_maps") in (None, n_maps) and test.max() < n_maps:
        return test
    return np.arange(n_maps)


def has_held_out_split(model, n_maps: int) -> bool:
    """Whether the model's checkpoint holds a test split of a dataset of ``n_maps`` maps (a
    ``train`` checkpoint of this dataset; a ``train-randomized`` one never does)."""
    return _held_out_indices(model, n_maps).size < n_maps


from .ssl import TRAINER as RANDOMIZED_TRAINER  # noqa: E402  (config.trainer of a train-randomized checkpoint)


def curve_as_mse(curve: dict, info: dict) -> tuple[dict, str | None]:
    """A checkpoint's learning curve as ``/results`` stores it (losses in MSE) and a sentence on
    what its points are (None for a ``train`` curve: one point per epoch of the dataset).

    A ``train-randomized`` curve has one point per ``steps_per_epoch`` steps; its ``train_loss``
    is the objective (reconstruction / ``recon_scale`` + self-supervised term), not an MSE, so
    the training-view reconstruction MSE (``recon`` x ``recon_scale``) replaces it where there is
    one (objective ``recon`` or ``both``)."""
    cfg = info.get("config") or {}
    if cfg.get("trainer") != RANDOMIZED_TRAINER or not curve.get("epoch"):
        return curve, None
    out = dict(curve)
    recon, scale = curve.get("recon") or [], cfg.get("recon_scale")
    if cfg.get("objective") != "ssl" and scale and len(recon) == len(curve["epoch"]):
        out["train_loss"] = [float(r) * float(scale) for r in recon]
        train = "reconstruction MSE of the training views"
    else:
        train = "the self-supervised loss (not an MSE)"
    note = (f"train-randomized: one point per {cfg.get('steps_per_epoch', '?')} steps of {cfg.get('batch_size', '?')} "
            f"freshly generated randomised maps (no map seen twice); train loss: {train}; validation loss: MSE on "
            f"{cfg.get('n_val', '?')} unseen randomised maps; the weights are those after the last step")
    return out, note


def held_out_text(info: dict) -> str | None:
    """One sentence on the checkpoint's own held-out scores (its ``test`` dict), saying what the
    held-out maps were: the test split of its training dataset (``train``) or unseen generated
    maps (``train-randomized``). None when the checkpoint records none (e.g. the published one)."""
    test = info.get("test") or {}
    if "explained_variance" not in test or "mse" not in test:
        return None
    n = test.get("n_maps", "?")
    cfg = info.get("config") or {}
    if cfg.get("trainer") == RANDOMIZED_TRAINER:
        what = f"validation on {n} unseen randomised maps (training ranges, never trained on)"
    else:
        what = f"test split of {n} held-out maps of {Path(str(cfg.get('dataset', 'its training dataset'))).name}"
    return f"{what}: explained variance {100 * float(test['explained_variance']):.1f} %, MSE {float(test['mse']):.5f}"


def reconstructions(model, dataset, n: int = 16, seed: int = 0, indices=None) -> dict:
    """n random held-out maps, their reconstructions and their indices.

    Held-out = the test split stored in the model's checkpoint when it was trained on this
    dataset (same number of maps), otherwise any map. Returns ``{"index": (n,), "input":
    (n, 256, 256), "output": (n, 256, 256), "mse": (n,)}``.
    """
    from .model import reconstruct

    if not dataset.has_maps:
        raise InputError(dataset.path, "this dataset holds latents only, no C2 maps to reconstruct")
    if indices is None:
        pool = _held_out_indices(model, dataset.n_maps)
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(pool, size=min(n, pool.size), replace=False))
    indices = np.asarray(indices, dtype=np.int64)
    maps = dataset.read_maps(indices)
    out = reconstruct(model, maps)
    return {"index": indices, "input": maps, "output": out,
            "mse": ((maps.astype(np.float64) - out) ** 2).mean(axis=(1, 2))}


def latent_noise(model, latents, sigma: float = 0.3, n: int = 16, seed: int = 0, index: int | None = None) -> dict:
    """Decode one latent vector plus Gaussian noise into ``n`` artificial maps.

    ``latents`` is one vector (D,) or a set (N, D); from a set, ``index`` picks the vector
    (default: a seeded random one). Noise is N(0, sigma^2) per dimension; the noisy latents are
    clipped at 0 (latents are ReLU outputs). Returns ``{"latent": (D,), "index", "noisy": (n, D),
    "maps": (n, 256, 256), "center_map": (256, 256), "sigma"}``.
    """
    from .model import decode

    lat = np.asarray(latents, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if lat.ndim == 2:
        if index is None:
            index = int(rng.integers(lat.shape[0]))
        center = lat[int(index)]
    elif lat.ndim == 1:
        center = lat
    else:
        raise InputError(None, f"latents must be (D,) or (N, D), got shape {lat.shape}")
    if center.shape[0] != model.latent_size:
        raise InputError(None, f"latent size {center.shape[0]} does not match the model's {model.latent_size}")
    noisy = np.maximum(center[None] + rng.normal(0.0, sigma, size=(n, center.shape[0])).astype(np.float32), 0)
    maps = decode(model, noisy)
    return {"latent": center, "index": index, "noisy": noisy, "maps": maps,
            "center_map": decode(model, center[None])[0], "sigma": float(sigma)}


def latent_size_sweep(dataset, sizes=SWEEP_SIZES, time_budget_s: float = 600.0, epochs: int = 6,
                      seed: int = 0, batch_size: int = 16, max_maps: int | None = None, device=None,
                      dropout: float | None = None, augment: bool = True, init_from=None,
                      init_bottleneck: str = "projected",
                      lr_base: float | None = None, lr_max: float | None = None, log=print) -> dict:
    """Test MSE vs latent size, every size trained with the same short schedule.

    The budget is shared equally: each size gets ``time_budget_s / len(sizes)`` seconds and at
    most ``epochs`` epochs (training stops after the epoch in which its share ran out). All
    sizes use the same seed, hence the same train / val / test split and augmentation draws.
    ``init_from`` (a checkpoint, e.g. the shipped demo weights) warm-starts every size from its
    convolutional layers and keeps its data split. ``init_bottleneck``: ``"projected"`` derives
    each size's bottleneck from the checkpoint's (leading principal components of its latents
    below its size, an exact copy plus inactive extra units at and above it; see
    :func:`ainerd_core.train.projected_bottleneck`), so that a short schedule measures what
    compressing the trained code costs; sizes above the checkpoint's then show only what a short
    fine-tune adds. ``"random"`` starts every bottleneck at random (the checkpoint's own size
    included, so it has no head start), which needs tens of epochs per size to mean much.
    Say which when reporting (:func:`sweep_schedule_text`).
    Returns ``{"latent_size": [...], "test_mse": [...], "explained_variance": [...], "epochs":
    [...], "seconds": [...], "schedule": {...}}``.
    """
    from .train import train

    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1:
        raise InputError(None, f"latent sizes must be positive, got {sizes}")
    share = float(time_budget_s) / len(sizes)
    init_latent = init_sha = None
    if init_from is not None:
        from .model import checkpoint_sha256, read_checkpoint

        init_latent = int(read_checkpoint(init_from)["latent_size"])
        # the sweep describes these weights only: precompute shows it beside a model with this checksum
        init_sha = checkpoint_sha256(init_from)
    res = {"latent_size": [], "test_mse": [], "explained_variance": [], "best_val_mse": [], "epochs": [], "best_epoch": [],
           "seconds": [], "schedule": {"epochs_max": int(epochs), "seconds_per_size": share, "seed": int(seed),
                                       "batch_size": int(batch_size), "max_maps": max_maps,
                                       "dropout": 0.25 if dropout is None else float(dropout),
                                       "augment": bool(augment),
                                       "init_from": None if init_from is None else str(init_from),
                                       "init_bottleneck": None if init_from is None else init_bottleneck,
                                       "init_latent": init_latent, "init_sha256": init_sha,
                                       "lr": [lr_base, lr_max],
                                       "note": "short CPU schedule: each size trains at most epochs_max epochs "
                                               "or until its time share is used (checked after each epoch)"}}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            t0 = time.perf_counter()
            r = train(dataset, Path(tmp) / f"latent{size}.pt", epochs=epochs, latent=size, seed=seed, augment=augment,
                      batch_size=batch_size, max_maps=max_maps, time_budget_s=share, device=device, dropout=dropout,
                      init_from=init_from, init_bottleneck=init_bottleneck, lr_base=lr_base, lr_max=lr_max,
                      log=lambda *a, **k: None, write_curve=False)
            dt = time.perf_counter() - t0
            res["latent_size"].append(size)
            res["test_mse"].append(r["test"]["mse"])
            res["explained_variance"].append(r["test"]["explained_variance"])
            res["best_val_mse"].append(r["best_val_loss"])
            res["epochs"].append(len(r["learning_curve"]["epoch"]))
            res["best_epoch"].append(int(r["best_epoch"]))  # 0: no epoch beat the warm start
            res["seconds"].append(dt)
            log(f"latent {size:5d}: test MSE {r['test']['mse']:.5f} (explained variance "
                f"{r['test']['explained_variance'] * 100:.1f} %), {res['epochs'][-1]} epochs, {dt:.0f} s")
    return res


def sweep_schedule_text(sweep: dict) -> str:
    """One sentence saying how a latent-size sweep was trained (for the dashboard and reports)."""
    sch = sweep.get("schedule") or {}
    epochs = [int(e) for e in sweep.get("epochs", [])]
    if not sch:
        return "schedule not recorded"
    span = (f"{min(epochs)}" if epochs and min(epochs) == max(epochs) else
            f"{min(epochs)}-{max(epochs)}" if epochs else f"<= {sch.get('epochs_max', '?')}")
    parts = [f"short CPU schedule: {span} epoch(s) per size (at most {sch.get('epochs_max', '?')}, "
             f"time share ~{float(sch.get('seconds_per_size', 0)):.0f} s each)",
             f"batch {sch.get('batch_size', '?')}, dropout {sch.get('dropout', '?')}, seed {sch.get('seed', '?')}"]
    if sch.get("augment") is False:
        parts.append("no diagonal-shift augmentation")
    lr = [v for v in (sch.get("lr") or []) if v is not None]
    if lr:
        parts.append(f"learning rate {lr[0]:g}" if len(set(lr)) == 1 else f"learning rate {min(lr):g}..{max(lr):g}")
    if sch.get("max_maps"):
        parts.append(f"{sch['max_maps']} maps")
    sha = f", sha256 {str(sch['init_sha256'])[:12]}" if sch.get("init_sha256") else ""
    if sch.get("init_from") and sch.get("init_bottleneck") == "projected":
        parts.append(f"warm start from {Path(str(sch['init_from'])).name} (latent {sch.get('init_latent', '?')}{sha}), "
                     "each bottleneck projected from its latents (smaller sizes: leading principal components; "
                     "larger: its code plus extra units), its test maps held out")
    elif sch.get("init_from"):
        parts.append(f"warm start from the convolutions of {Path(str(sch['init_from'])).name}{sha and f' ({sha[2:]})'} "
                     "(bottleneck random for each size)")
    else:
        parts.append("random initialisation")
    return "; ".join(parts) + ": a trend, not converged values"


# --------------------------------------------------------------------------- CLI: latent-sweep
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (.h5) with C2 maps")
    parser.add_argument("--out", required=True, help="JSON file for the sweep")
    parser.add_argument("--budget-s", type=float, default=600.0, help="total training time, shared by all sizes")
    parser.add_argument("--sizes", default=",".join(map(str, SWEEP_SIZES)),
                        help="comma-separated latent sizes (default 2,4,...,1024)")
    parser.add_argument("--epochs", type=int, default=6, help="at most this many epochs per size (default 6)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-maps", type=int, default=None, help="seeded random subset of the maps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout while training (default 0.25, the recipe; 0 suits short schedules better)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="random circular shifts along the diagonal (default on, the recipe; a short "
                             "fine-tune from --init-from does better without)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--init-from", default=None,
                        help="warm start: every size starts from this checkpoint's convolutions and keeps its split")
    parser.add_argument("--init-bottleneck", choices=("projected", "random"), default="projected",
                        help="with --init-from: each size's bottleneck projected from the checkpoint's (default) "
                             "or random")
    parser.add_argument("--lr-base", type=float, default=None, help="CyclicLR lower learning rate (default 1e-4)")
    parser.add_argument("--lr-max", type=float, default=None,
                        help="CyclicLR upper learning rate (default 1e-3; equal to --lr-base: constant)")


def run(args) -> int:
    out = Path(args.out)
    if not out.parent.exists():
        raise InputError(out, "the output folder does not exist")
    try:
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    except ValueError:
        raise InputError(None, f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
    res = latent_size_sweep(args.dataset, sizes=sizes, time_budget_s=args.budget_s, epochs=args.epochs,
                            seed=args.seed, batch_size=args.batch_size, max_maps=args.max_maps, device=args.device,
                            dropout=args.dropout, augment=args.augment, init_from=args.init_from,
                            init_bottleneck=args.init_bottleneck,
                            lr_base=args.lr_base, lr_max=args.lr_max)
    res["dataset"] = str(args.dataset)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out)
    best = int(np.argmin(res["test_mse"]))
    print(f"wrote {out}: {len(sizes)} sizes; lowest test MSE {res['test_mse'][best]:.5f} at latent "
          f"{res['latent_size'][best]}")
    return 0
