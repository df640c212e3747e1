"""Training the AI-NERD autoencoder: ``python -m ainerd_core train DATASET --out model.pt``.

The published recipe (METHOD.md section 3): MSE loss, Adam, CyclicLR (mode ``triangular2``,
base 1e-4, max 1e-3, ``step_size_up`` = 6 x batches per epoch, stepped every batch; Adam has no
momentum to cycle), dropout 0.25, augmentation by a random circular shift of the whole map
along its diagonal (``roll`` by the same k on both axes, k uniform in [0, 256)), drawn afresh for
every map of every batch instead of materialising 99 shifted copies. One epoch = one pass over
the training maps. The maps are split once, by ``--seed``, into train / validation / test
(80 / 10 / 10 %); the split is stored in the checkpoint. After every epoch the validation MSE
(no augmentation, dropout off) is computed; the best epoch is saved atomically to ``--out``.
A training state (weights, optimizer, scheduler, RNG, curve) is written atomically after every
epoch to ``<out>.state.pt`` so an interrupted run continues with ``--resume <out>.state.pt``;
it is removed when training finishes. At the end the best model is scored on the test split
(MSE and explained variance, see :func:`explained_variance`) and the learning curve is written
beside the model as ``<out stem>.curve.json`` and inside the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_write_text
from .errors import InputError
from .mapstack import MapSource
from .model import (DEFAULT_LATENT, DROPOUT, MAP_SIZE, Autoencoder, atomic_torch_save, make_checkpoint,
                    read_checkpoint)

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
LR_BASE, LR_MAX = 1e-4, 1e-3
# the published CyclicLR settings, as the checkpoint's config["scheduler"] names them
SCHEDULE_DEFAULTS = {"base_lr": LR_BASE, "max_lr": LR_MAX, "step_size_up_epochs": 6.0}
DEFAULT_BATCH = 16
IN_MEMORY_LIMIT = 2 << 30  # bytes of training maps held in RAM; above this, batches are read from disk


# --------------------------------------------------------------------------- pieces
def diagonal_roll(x: torch.Tensor, shifts) -> torch.Tensor:
    """Circularly shift each map of (B, [1,] H, W) along its diagonal by k (same k on both axes).

    ``shifts`` is an int (all maps) or a sequence of B ints. Equivalent to
    ``np.roll(map, (k, k), axis=(0, 1))``.
    """
    if isinstance(shifts, (int, np.integer)):
        return torch.roll(x, shifts=(int(shifts), int(shifts)), dims=(-2, -1))
    out = torch.empty_like(x)
    for b, k in enumerate(shifts):
        out[b] = torch.roll(x[b], shifts=(int(k), int(k)), dims=(-2, -1))
    return out


def random_diagonal_shift(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Augmentation: each map shifted along the diagonal by its own k ~ U{0..size-1}."""
    return diagonal_roll(x, rng.integers(0, x.shape[-1], size=x.shape[0]))


def make_split(n: int, seed: int, fractions=SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Seeded random split of map indices into train / val / test (each sorted, disjoint)."""
    if n < 3:
        raise InputError(None, f"training needs at least 3 maps (train / validation / test), got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        n_train, n_val, n_test = n - 2, 1, 1
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train:n_train + n_val]),
            "test": np.sort(perm[n_train + n_val:n_train + n_val + n_test])}


def explained_variance(maps: np.ndarray, recon: np.ndarray) -> dict:
    """Explained variance of reconstructions: ``1 - MSE / V``.

    MSE = mean over maps and pixels of (map - reconstruction)^2; V = per-pixel variance of the
    maps: for each pixel, the population variance (ddof 0) of its value across the N maps,
    averaged over the 256 x 256 pixels, i.e. the MSE of predicting every map by the mean map.
    """
    maps = np.asarray(maps, np.float64)
    mse = float(np.mean((maps - np.asarray(recon, np.float64)) ** 2))
    var = float(np.mean(maps.var(axis=0)))
    return {"mse": mse, "pixel_variance": var, "explained_variance": 1.0 - mse / var if var > 0 else float("nan"),
            "n_maps": int(maps.shape[0])}


def _to_device(maps: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(maps, np.float32)).unsqueeze(1).to(device)


def evaluate_mse(model: Autoencoder, source: MapSource, indices, batch_size: int, device,
                 return_recon: bool = False):
    """Mean-squared reconstruction error (no augmentation, dropout off) over ``indices``."""
    was, jit = model.training, model.jit
    model.eval()
    model.jit = False  # weights change every epoch; tracing would cost more than it saves
    total, count, recons = 0.0, 0, []
    try:
        with torch.inference_mode():
            for s in range(0, len(indices), batch_size):
                x = _to_device(source.get(indices[s:s + batch_size]), device)
                y = model(x)
                total += float(F.mse_loss(y, x, reduction="sum"))
                count += x.numel()
                if return_recon:
                    recons.append(y[:, 0].float().cpu().numpy())
    finally:
        model.train(was)
        model.jit = jit
    mse = total / max(count, 1)
    if return_recon:
        return mse, (np.concatenate(recons) if recons else np.empty((0, MAP_SIZE, MAP_SIZE), np.float32))
    return mse


def _encoder_features(model: Autoencoder, source: MapSource, indices, device, batch_size: int = 32) -> np.ndarray:
    """(N, 1024) flattened encoder output (the bottleneck's input) of maps ``indices``, eval mode."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(indices), batch_size):
            x = _to_device(source.get(indices[s:s + batch_size]), device)
            out.append(model.encoder(x).flatten(1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.float64)


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(None, f"--device {device!r} is not a device (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda requested but no CUDA GPU is available")
    return dev


def curve_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".curve.json")


def write_curve_json(out, curve: dict, *, best_epoch: int, best_val_loss: float, test: dict, config: dict) -> Path:
    """Write the learning curve of checkpoint ``out`` beside it (:func:`curve_path`), atomically:
    the curve's lists (``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``seconds``, ...) plus
    ``best_epoch``, ``best_val_loss``, ``test`` (held-out scores) and ``config``; ``/model`` and
    precompute read it when a checkpoint carries no curve (``train`` and ``train-randomized``)."""
    return atomic_write_text(curve_path(out), json.dumps({**curve, "best_epoch": best_epoch,
                                                          "best_val_loss": best_val_loss, "test": test,
                                                          "config": config}, indent=1))


def state_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


BOTTLENECK_INITS = ("copy", "random", "projected")


def projected_bottleneck(state_dict: dict, features, latent_size: int, seed: int = 0) -> dict:
    """Bottleneck weights of another latent size derived from a trained model's bottleneck.

    A warm start for the latent-size sweep that keeps what the trained model learnt: the code of
    a size below the trained one is the leading principal components of the trained encoder's
    pre-activation latents (offset so that the ReLU passes every training value), and the
    decoder's first layer is refitted by least squares to expect it; a size at or above the
    trained one copies the trained bottleneck exactly, the extra latent units starting with
    random encoder rows and zero decoder columns (the output is unchanged until they learn).

    Parameters
    ----------
    state_dict : dict
        The trained model's state dict (``bottleneck.1`` = Linear(1024, L0), ``bottleneck.3`` =
        Linear(L0, 1024)).
    features : array (N, 1024)
        The flattened encoder output (before the bottleneck) of training maps, eval mode.
    latent_size : int
        The new latent size L.
    seed : int
        Seeds the extra encoder rows when L > L0.

    Returns
    -------
    dict with ``bottleneck.1.weight`` (L, 1024), ``bottleneck.1.bias`` (L,),
    ``bottleneck.3.weight`` (1024, L), ``bottleneck.3.bias`` (1024,), float32 tensors.
    """
    w1 = state_dict["bottleneck.1.weight"].detach().double().cpu()
    b1 = state_dict["bottleneck.1.bias"].detach().double().cpu()
    w2 = state_dict["bottleneck.3.weight"].detach().double().cpu()
    b2 = state_dict["bottleneck.3.bias"].detach().double().cpu()
    size, trained = int(latent_size), w1.shape[0]
    if size >= trained:
        gen = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(w1.shape[1])  # nn.Linear's default range for the new rows
        extra = size - trained
        w1n = torch.cat([w1, (torch.rand(extra, w1.shape[1], generator=gen, dtype=torch.float64) * 2 - 1) * bound])
        b1n = torch.cat([b1, (torch.rand(extra, generator=gen, dtype=torch.float64) * 2 - 1) * bound])
        w2n = torch.cat([w2, torch.zeros(w2.shape[0], extra, dtype=torch.float64)], dim=1)
        b2n = b2
    else:
        h = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        if h.ndim != 2 or h.shape[1] != w1.shape[1] or len(h) < 2:
            raise InputError(None, f"projected bottleneck needs (N >= 2, {w1.shape[1]}) features, got {tuple(h.shape)}")
        u = h @ w1.T + b1                                  # pre-activation latents of the trained model
        mean = u.mean(0)
        _, _, vt = torch.linalg.svd(u - mean, full_matrices=False)
        comps = vt[:size]                                  # (L, L0) leading principal directions
        code = (u - mean) @ comps.T
        offset = -code.min(0).values.clamp(max=0)          # every training value passes the ReLU
        w1n = comps @ w1
        b1n = comps @ (b1 - mean) + offset
        z = torch.relu(code + offset)                      # = code + offset on the training maps
        target = torch.relu(u)                             # the trained latents the decoder expects
        design = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], dim=1)
        # (L + 1, L0): target ~ z @ M + m0; directions with (near) zero variance get no weight
        fit = torch.linalg.lstsq(design, target, rcond=1e-10, driver="gelsd").solution
        w2n = w2 @ fit[:-1].T
        b2n = w2 @ fit[-1] + b2
    return {"bottleneck.1.weight": w1n.float(), "bottleneck.1.bias": b1n.float(),
            "bottleneck.3.weight": w2n.float(), "bottleneck.3.bias": b2n.float()}


# --------------------------------------------------------------------------- training
def train(dataset, out, *, epochs: int = 60, latent: int = DEFAULT_LATENT, augment: bool = True,
          device: str | None = None, batch_size: int = DEFAULT_BATCH, seed: int = 0, resume=None,
          max_maps: int | None = None, time_budget_s: float | None = None, dropout: float | None = None,
          lr_step_epochs: float | None = None, lr_base: float | None = None, lr_max: float | None = None,
          threads: int | None = None, keep_state: bool = False, init_from=None,
          init_bottleneck: str = "copy", log=print, progress: bool = False, write_curve: bool = True) -> dict:
    """Train the autoencoder on a dataset file; returns a summary dict.

    Parameters are those of the CLI; ``time_budget_s`` stops after the epoch during which the
    budget ran out (used by the latent-size sweep). The best checkpoint (by validation MSE) is
    written atomically to ``out``. ``lr_base`` / ``lr_max`` (default 1e-4 / 1e-3, the published
    CyclicLR range; equal values give a constant learning rate, e.g. for a final low-LR phase)
    and ``lr_step_epochs`` are kept from the resumed run unless given.

    ``init_from`` (a checkpoint) starts a new run from that model's convolutions instead of a
    random initialisation: a warm start, e.g. for the latent-size sweep on CPU. Its bottleneck
    (``init_bottleneck``): ``"copy"`` where the shapes agree (same latent size), ``"random"``,
    or ``"projected"`` (derived for the new latent size, see :func:`projected_bottleneck`). A
    warm start keeps the checkpoint's train / validation / test split when it was made on a
    dataset of as many maps (its test maps stay unseen), and its starting weights count as
    epoch 0: no epoch that scores worse on validation replaces them.

    Longer than 80 lines only by this docstring; its body is the list of stages: options
    (:func:`_check_options`, :func:`_schedule`), split (:func:`_choose_split`),
    warm start (:func:`_warm_start`), resume (:func:`_restore`), epochs (:func:`_run_epochs`),
    test scoring (:func:`_score_best`).
    """
    from .dataset import open_dataset

    out = Path(out)
    dev = _check_options(out, device, epochs, batch_size, threads, dropout, lr_step_epochs, lr_base, lr_max,
                         resume, init_from, init_bottleneck)
    t_start = time.perf_counter()
    fit = _Fit(out=out, dev=dev, log=log)
    if resume is not None:
        latent, dropout = _read_resume(fit, resume, dropout)
    lr_step_epochs, lr_base, lr_max = _schedule(fit.prev, lr_step_epochs, lr_base, lr_max)
    init_ckpt = read_checkpoint(init_from) if init_from is not None else None
    if dropout is None:
        dropout = DROPOUT

    with open_dataset(dataset) as ds:
        if not ds.has_maps:
            raise InputError(ds.path, "this dataset holds latents only, no C2 maps to train on")
        fit.n_all = ds.n_maps
        split_kept = _choose_split(fit, ds, init_ckpt, resume, init_from, max_maps, seed)
        used = np.concatenate([fit.split["train"], fit.split["val"], fit.split["test"]])
        fit.source = MapSource(ds, keep=used, keep_limit_bytes=IN_MEMORY_LIMIT)
        schedule = {"base_lr": lr_base, "max_lr": lr_max, "step_size_up_epochs": lr_step_epochs}
        fit.config = {"dataset": str(Path(dataset)), "epochs": int(epochs), "latent": int(latent),
                      "augment": bool(augment), "batch_size": int(batch_size), "seed": int(seed),
                      "max_maps": max_maps, "loss": "mse", "optimizer": "adam",
                      "scheduler": {"name": "CyclicLR", "mode": "triangular2", **schedule, "cycle_momentum": False},
                      "dropout": float(dropout), "augmentation": "random circular shift along the diagonal, "
                                                                "k ~ U{0..255}, per map and batch",
                      "split_fractions": list(SPLIT_FRACTIONS), "device": dev.type,
                      "torch_threads": torch.get_num_threads()}

        torch.manual_seed(seed)
        fit.model = Autoencoder(latent, dropout=dropout).to(dev)
        if init_ckpt is not None:
            _warm_start(fit, init_from, init_ckpt["state_dict"], init_bottleneck, latent, seed, split_kept)
        fit.batches_per_epoch = max(1, math.ceil(len(fit.split["train"]) / batch_size))
        fit.opt = torch.optim.Adam(fit.model.parameters(), lr=lr_base)
        fit.sched = torch.optim.lr_scheduler.CyclicLR(
            fit.opt, base_lr=lr_base, max_lr=lr_max, mode="triangular2", cycle_momentum=False,
            step_size_up=max(1, int(round(lr_step_epochs * fit.batches_per_epoch))))
        fit.rng = np.random.default_rng(seed + 2)
        if fit.state is not None:
            _restore(fit, resume, schedule)
        fit.config["batches_per_epoch"] = fit.batches_per_epoch

        split = fit.split
        log(f"training on {dev.type}: {len(split['train'])} train / {len(split['val'])} val / "
            f"{len(split['test'])} test maps, latent {latent}, batch {batch_size}, "
            f"{fit.batches_per_epoch} batches/epoch, epochs {fit.start_epoch + 1}..{epochs}, "
            f"augment {'on' if augment else 'off'}, seed {seed}")
        if init_ckpt is not None:  # the warm start is epoch 0: later epochs must beat it
            fit.best_val, fit.best_epoch = evaluate_mse(fit.model, fit.source, split["val"], max(batch_size, 32), dev), 0
            atomic_torch_save(fit.checkpoint(False, epoch=0), out)
            fit.improved_this_run = True
            log(f"epoch   0 (warm start)  val {fit.best_val:.5f}")
        stopped_early = _run_epochs(fit, epochs, batch_size, augment, progress, time_budget_s, t_start)
        test, elapsed = _score_best(fit, batch_size, stopped_early, t_start)
    if not keep_state:
        state_path(out).unlink(missing_ok=True)
    return _summary(fit, test, elapsed, write_curve)


def _summary(fit: _Fit, test: dict, elapsed: float, write_curve: bool) -> dict:
    """Write the learning curve beside the model (``write_curve``), log and return the summary."""
    curve, config, best_epoch, best_val, out = fit.curve, fit.config, fit.best_epoch, fit.best_val, fit.out
    if write_curve:
        write_curve_json(out, curve, best_epoch=best_epoch, best_val_loss=best_val, test=test, config=config)
    fit.log(f"best epoch {best_epoch} (val MSE {best_val:.5f}); test MSE {test['mse']:.5f}, explained variance "
            f"{test['explained_variance'] * 100:.1f} % on {test['n_maps']} held-out maps; {elapsed:.0f} s; wrote {out}")
    return {"out": str(out), "best_epoch": best_epoch, "best_val_loss": best_val, "test": test,
            "learning_curve": curve, "seconds": elapsed, "config": config, "split": fit.split}


@dataclass
class _Fit:
    """One training run's state, shared by the stages of :func:`train`."""

    out: Path
    dev: torch.device
    log: object
    state: dict | None = None  # the resumed training state (``--resume``)
    prev: dict = field(default_factory=lambda: dict(SCHEDULE_DEFAULTS))  # the resumed run's schedule
    n_all: int = 0
    split: dict | None = None  # train / val / test -> sorted map indices
    source: MapSource | None = None
    config: dict | None = None
    model: Autoencoder | None = None
    opt: object = None
    sched: object = None
    rng: np.random.Generator | None = None
    curve: dict = field(default_factory=lambda: {"epoch": [], "train_loss": [], "val_loss": [], "lr": [],
                                                 "seconds": []})
    best_val: float = float("inf")
    best_epoch: int = -1
    start_epoch: int = 0
    batches_per_epoch: int = 1
    improved_this_run: bool = False

    def checkpoint(self, extra_state: bool, **more) -> dict:
        """The checkpoint of the current weights; ``extra_state`` adds what ``--resume`` needs."""
        ck = make_checkpoint(self.model, config=self.config, learning_curve=self.curve,
                             split={k: v.tolist() for k, v in self.split.items()}, dataset_n_maps=self.n_all,
                             best_val_loss=self.best_val, best_epoch=self.best_epoch,
                             batches_per_epoch=self.batches_per_epoch, **more)
        if extra_state:
            ck.update(optimizer=self.opt.state_dict(), scheduler=self.sched.state_dict(),
                      rng_state=json.dumps(self.rng.bit_generator.state), torch_rng_state=torch.get_rng_state())
        return ck


def _check_options(out: Path, device, epochs, batch_size, threads, dropout, lr_step_epochs, lr_base,
                   lr_max, resume, init_from, init_bottleneck) -> torch.device:
    """Refuse bad options (one-line :class:`InputError`); set torch's threads; return the device."""
    if not out.parent.exists():
        raise InputError(out, "the output folder does not exist")
    if epochs < 1:
        raise InputError(None, f"--epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise InputError(None, f"--batch-size must be >= 1, got {batch_size}")
    dev = pick_device(device)
    if threads is not None:
        if threads < 1:
            raise InputError(None, f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    if dropout is not None and not 0 <= dropout < 1:
        raise InputError(None, f"--dropout must be in [0, 1), got {dropout}")
    if lr_step_epochs is not None and lr_step_epochs <= 0:
        raise InputError(None, f"--lr-step-epochs must be > 0, got {lr_step_epochs}")
    for name, value in (("--lr-base", lr_base), ("--lr-max", lr_max)):
        if value is not None and not (math.isfinite(value) and 0 < value <= 1):
            raise InputError(None, f"{name} must be in (0, 1], got {value}")
    if init_from is not None and resume is not None:
        raise InputError(None, "--init-from and --resume exclude each other (resume already sets the weights)")
    if init_bottleneck not in BOTTLENECK_INITS:
        raise InputError(None, f"--init-bottleneck must be one of {', '.join(BOTTLENECK_INITS)}, got {init_bottleneck!r}")
    return dev


def _read_resume(fit: _Fit, resume, dropout) -> tuple[int, float]:
    """Read the ``--resume`` state into ``fit`` (its schedule into ``fit.prev``); returns its latent
    size and the dropout to use (the run's own unless ``dropout`` is given)."""
    from .ssl import TRAINER as RANDOMIZED_TRAINER

    fit.state = read_checkpoint(resume)
    if (fit.state.get("config") or {}).get("trainer") == RANDOMIZED_TRAINER:
        # its epochs and best validation loss were measured on generated maps, not on this dataset
        raise InputError(resume, "was trained by train-randomized on generated maps, not on a dataset: "
                                 "fine-tune it with --init-from instead of --resume")
    if dropout is None:  # keep the run's dropout unless told otherwise
        dropout = float(fit.state.get("dropout", DROPOUT))
    elif float(fit.state.get("dropout", DROPOUT)) != dropout:
        fit.log(f"note: dropout changes from {fit.state.get('dropout', DROPOUT)} to {dropout} on resume")
    old = fit.state.get("config", {}).get("scheduler", {})
    fit.prev.update({k: float(old[k]) for k in SCHEDULE_DEFAULTS if k in old})
    return int(fit.state["latent_size"]), dropout


def _schedule(prev: dict, lr_step_epochs, lr_base, lr_max) -> tuple[float, float, float]:
    """(step_size_up in epochs, base LR, max LR): the given values, else the resumed run's (``prev``)."""
    lr_step_epochs = prev["step_size_up_epochs"] if lr_step_epochs is None else float(lr_step_epochs)
    lr_base = prev["base_lr"] if lr_base is None else float(lr_base)
    lr_max = max(prev["max_lr"], lr_base) if lr_max is None else float(lr_max)
    if lr_max < lr_base:
        raise InputError(None, f"--lr-max ({lr_max:g}) must be >= --lr-base ({lr_base:g})")
    return lr_step_epochs, lr_base, lr_max


def _choose_split(fit: _Fit, ds, init_ckpt, resume, init_from, max_maps, seed) -> bool:
    """``fit.split``: the resumed run's, else the warm start's (same number of maps), else a new
    seeded one (of a seeded ``max_maps`` subset). Returns whether the warm start's split was kept."""
    n_all, state = fit.n_all, fit.state
    # a warm start on a dataset of as many maps keeps the checkpoint's split
    split_kept = init_ckpt is not None and "split" in init_ckpt and init_ckpt.get("dataset_n_maps") == n_all
    if state is not None and "split" in state:
        fit.split = {k: np.asarray(v, np.int64) for k, v in state["split"].items()}
        if state.get("dataset_n_maps") not in (None, n_all):
            raise InputError(resume, f"was trained on a dataset of {state['dataset_n_maps']} maps, "
                                     f"{ds.path} has {n_all}")
        return split_kept
    if max_maps is not None and max_maps < n_all:
        if max_maps < 3:
            raise InputError(None, f"--max-maps must be >= 3, got {max_maps}")
        subset = np.sort(np.random.default_rng(seed + 1).choice(n_all, size=max_maps, replace=False))
    else:
        subset = np.arange(n_all)
    if split_kept:
        # the warm start's weights have seen its train maps: keep its test maps unseen
        fit.split = {k: np.intersect1d(np.asarray(init_ckpt["split"][k], np.int64), subset)
                     for k in ("train", "val", "test")}
        if min(len(v) for v in fit.split.values()) == 0:
            raise InputError(None, f"--max-maps {max_maps} leaves part of the split of {init_from} empty")
    else:
        parts = make_split(len(subset), seed)
        fit.split = {k: subset[v] for k, v in parts.items()}
    return split_kept


def _warm_start(fit: _Fit, init_from, init_state: dict, init_bottleneck: str, latent: int, seed: int,
                split_kept: bool) -> None:
    """Load the ``init_from`` checkpoint's tensors into ``fit.model`` where the shapes agree (the
    bottleneck copied, left random or projected, see :func:`projected_bottleneck`)."""
    model = fit.model
    own = model.state_dict()
    taken = {k: v for k, v in init_state.items() if k in own and own[k].shape == v.shape
             and not (init_bottleneck != "copy" and k.startswith("bottleneck."))}
    model.load_state_dict({**own, **taken}, strict=True)
    derived = {}
    if init_bottleneck == "projected":
        feats = _encoder_features(model, fit.source, fit.split["train"], fit.dev)
        derived = projected_bottleneck(init_state, feats, latent, seed=seed)
        model.load_state_dict({**model.state_dict(), **derived}, strict=True)
    random_keys = sorted(set(own) - set(taken) - set(derived))
    fit.config["init_from"] = {"path": str(init_from), "bottleneck": init_bottleneck, "tensors_taken": len(taken),
                               "tensors_projected": sorted(derived), "tensors_random": random_keys,
                               "split_kept": split_kept}
    fit.log(f"initialised from {init_from}: {len(taken)} of {len(own)} tensors taken, {len(derived)} projected, "
            f"{len(random_keys)} random ({', '.join(random_keys) or 'none'})")


def _restore(fit: _Fit, resume, schedule: dict) -> None:
    """Continue the resumed run: its weights, its optimizer / LR schedule / RNG when the batch size
    and schedule are unchanged (else they restart), its best epoch and its curve up to its weights."""
    state = fit.state
    fit.model.load_state_dict(state["state_dict"], strict=True)
    same_schedule = fit.prev == schedule
    if "optimizer" in state and int(state.get("batches_per_epoch", -1)) == fit.batches_per_epoch and same_schedule:
        fit.opt.load_state_dict(state["optimizer"])
        fit.sched.load_state_dict(state["scheduler"])
        fit.rng = np.random.default_rng()
        fit.rng.bit_generator.state = json.loads(state["rng_state"])
        torch.set_rng_state(state["torch_rng_state"])
    elif "optimizer" in state:
        fit.log(f"note: batch size or LR schedule changed since {resume}; optimizer and LR schedule restart")
        fit.rng = np.random.default_rng()
        fit.rng.bit_generator.state = json.loads(state["rng_state"])
    fit.best_val = float(state.get("best_val_loss", float("inf")))
    fit.best_epoch = int(state.get("best_epoch", -1))
    fit.start_epoch = int(state.get("epoch", 0))
    # a finished run's checkpoint holds the weights of its best epoch but the curve of all
    # its epochs: the epochs after the resumed weights are dropped, so epochs stay unique
    old_curve = state.get("learning_curve") or {}
    keep = sum(1 for e in old_curve.get("epoch", []) if int(e) <= fit.start_epoch)  # epochs ascend
    fit.curve = {k: list(old_curve.get(k, []))[:keep] for k in fit.curve}
    fit.config["resumed_from"] = str(resume)
    fit.config["history"] = list(state.get("config", {}).get("history", [])) + [
        {"until_epoch": int(state.get("epoch", 0)),
         **{k: state.get("config", {}).get(k) for k in ("dropout", "batch_size", "augment", "torch_threads")},
         **fit.prev}]
    fit.log(f"resumed from {resume} at epoch {fit.start_epoch}")


def optimisation_step(model: Autoencoder, opt, sched, x: torch.Tensor) -> torch.Tensor:
    """One step of the published recipe on batch ``x`` (B, 1, 256, 256): MSE of the
    reconstruction, Adam, CyclicLR stepped every batch. Returns the (detached) loss."""
    y = model(x)
    loss = F.mse_loss(y, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach()


def _train_epoch(fit: _Fit, epoch: int, batch_size: int, augment: bool, progress: bool) -> float:
    """One pass over the training maps in a fresh random order; the mean training MSE."""
    fit.model.train()
    order = fit.rng.permutation(fit.split["train"])
    total, seen = 0.0, 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(order), unit="map", desc=f"epoch {epoch + 1}", leave=False)
    for s in range(0, len(order), batch_size):
        x = _to_device(fit.source.get(order[s:s + batch_size]), fit.dev)
        if augment:
            x = random_diagonal_shift(x, fit.rng)
        loss = optimisation_step(fit.model, fit.opt, fit.sched, x)
        total += float(loss) * x.shape[0]
        seen += x.shape[0]
        if bar is not None:
            bar.update(x.shape[0])
    if bar is not None:
        bar.close()
    return total / max(seen, 1)


def _run_epochs(fit: _Fit, epochs: int, batch_size: int, augment: bool, progress: bool, time_budget_s,
                t_start: float) -> bool:
    """Train epochs ``start_epoch + 1 .. epochs``, saving the best (validation MSE) to ``out`` and
    the training state after every epoch. Returns whether the time budget stopped it early."""
    curve = fit.curve
    for epoch in range(fit.start_epoch, epochs):
        t0 = time.perf_counter()
        train_loss = _train_epoch(fit, epoch, batch_size, augment, progress)
        lr = fit.sched.get_last_lr()[0]
        val = evaluate_mse(fit.model, fit.source, fit.split["val"], max(batch_size, 32), fit.dev)
        dt = time.perf_counter() - t0
        curve["epoch"].append(epoch + 1)
        curve["train_loss"].append(train_loss)
        curve["val_loss"].append(val)
        curve["lr"].append(lr)
        curve["seconds"].append(dt)
        improved = val < fit.best_val
        fit.improved_this_run = fit.improved_this_run or improved
        if improved:
            fit.best_val, fit.best_epoch = val, epoch + 1
            atomic_torch_save(fit.checkpoint(False, epoch=epoch + 1), fit.out)
        atomic_torch_save(fit.checkpoint(True, epoch=epoch + 1), state_path(fit.out))
        fit.log(f"epoch {epoch + 1:3d}/{epochs}  train {curve['train_loss'][-1]:.5f}  val {val:.5f}  "
                f"lr {lr:.2e}  {dt:6.1f} s{'  *best' if improved else ''}")
        if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s and epoch + 1 < epochs:
            fit.log(f"time budget of {time_budget_s:.0f} s used up after epoch {epoch + 1}")
            return True
    return False


def _score_best(fit: _Fit, batch_size: int, stopped_early: bool, t_start: float) -> tuple[dict, float]:
    """Score the best model on the held-out test split and write its final checkpoint; returns
    (the test scores, see :func:`explained_variance`, seconds since ``t_start``)."""
    model, out = fit.model, fit.out
    if not fit.improved_this_run:  # no epoch beat the resumed weights: they are the best, save them
        if fit.state is not None:
            model.load_state_dict(fit.state["state_dict"], strict=True)
        atomic_torch_save(fit.checkpoint(False, epoch=fit.best_epoch if fit.best_epoch >= 0 else fit.start_epoch), out)
    best = read_checkpoint(out)
    model.load_state_dict(best["state_dict"])
    test_maps = fit.source.get(fit.split["test"])
    mse, recon = evaluate_mse(model, fit.source, fit.split["test"], max(batch_size, 32), fit.dev, return_recon=True)
    test = explained_variance(test_maps, recon)
    elapsed = time.perf_counter() - t_start
    fit.config["stopped_by_time_budget"] = stopped_early
    atomic_torch_save(fit.checkpoint(False, epoch=fit.best_epoch, test=test, train_seconds=elapsed), out)
    return test, elapsed


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset file (.h5) with C2 maps")
    parser.add_argument("--out", required=True, help="checkpoint to write (best epoch by validation MSE)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs (passes over the training maps; default 60)")
    parser.add_argument("--latent", type=int, default=DEFAULT_LATENT, help="latent size (default 64)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="random circular shifts along the diagonal (default on)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"default {DEFAULT_BATCH}")
    parser.add_argument("--seed", type=int, default=0, help="split, initialisation and augmentation seed")
    parser.add_argument("--resume", default=None, help="continue from <out>.state.pt (or start from a checkpoint's weights)")
    parser.add_argument("--max-maps", type=int, default=None, help="use a seeded random subset of this many maps")
    parser.add_argument("--dropout", type=float, default=None,
                        help=f"dropout probability (default {DROPOUT}; on --resume: the run's own)")
    parser.add_argument("--lr-step-epochs", type=float, default=None,
                        help="CyclicLR step_size_up in epochs (default 6, the published recipe; on --resume: the run's own)")
    parser.add_argument("--lr-base", type=float, default=None,
                        help=f"CyclicLR lower learning rate (default {LR_BASE:g}; on --resume: the run's own)")
    parser.add_argument("--lr-max", type=float, default=None,
                        help=f"CyclicLR upper learning rate (default {LR_MAX:g}; equal to --lr-base: constant; "
                             "on --resume: the run's own)")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep <out>.state.pt after the last epoch (to continue later with --resume)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--init-from", default=None,
                        help="start from this checkpoint's convolutions (a warm start; keeps its split when it "
                             "was made on a dataset of as many maps)")
    parser.add_argument("--init-bottleneck", choices=BOTTLENECK_INITS, default="copy",
                        help="with --init-from: copy its bottleneck where the shapes agree (default; random when "
                             "--latent differs), random, or projected to --latent from its latents")
    parser.add_argument("--progress", action="store_true", help="progress bar per epoch")


def run(args) -> int:
    train(args.dataset, args.out, epochs=args.epochs, latent=args.latent, augment=args.augment, device=args.device,
          batch_size=args.batch_size, seed=args.seed, resume=args.resume, max_maps=args.max_maps,
          dropout=args.dropout, lr_step_epochs=args.lr_step_epochs, lr_base=args.lr_base, lr_max=args.lr_max,
          threads=args.threads, init_from=args.init_from, init_bottleneck=args.init_bottleneck,
          keep_state=args.keep_state, progress=args.progress)
    return 0
