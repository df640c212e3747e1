"""Novelty of C2 maps for a model: is this map unlike anything the model was trained on?

Two signals, each turned into a quantile of the model's own held-out reference maps:

* ``recon_quantile``: share of reference maps whose reconstruction error (per-map MSE) is below
  this map's. A map the decoder cannot reproduce is outside what the model learned.
* ``knn_quantile``: the same for the mean Euclidean distance from the map's latent to its
  ``k`` (default 5) nearest latents in a *bank* of the model's own data (not the reference maps).
  A map far from every known latent has meaningless latent neighbours.

``score`` (in [0, 1], higher = more novel) = the share of reference maps whose larger quantile
max(recon_quantile, knn_quantile) is below this map's: a calibrated combination, so that an
in-distribution map reaches ``NOVEL_THRESHOLD`` (0.99) about 1 % of the time. ``novel`` = score >=
NOVEL_THRESHOLD. Stored by precompute under ``/results/novelty/{score, recon_quantile,
knn_quantile}``.

The reference (:func:`build_reference`) is stored in the checkpoint (``novelty_reference``) by
``train-randomized``; for a checkpoint without one (the published state_dict, older demo weights)
:func:`reference_for` builds it from the dataset's own maps (a seeded half as bank, the other
half as reference) and says so in ``source``: novelty is then relative to *this dataset*.
"""
from __future__ import annotations

import numpy as np

NOVEL_THRESHOLD = 0.99
DEFAULT_K = 5
RULE = ("score = share of the model's held-out reference maps whose max(recon_quantile, knn_quantile) is below "
        "this map's; recon_quantile / knn_quantile = quantile of the map's reconstruction MSE / mean distance to "
        "its {k} nearest bank latents among the reference maps'; novel when score >= {thr}")
NOVEL_MESSAGE = ("this map is unlike anything the model was trained on (novelty {score:.3f} >= {thr}); "
                 "its latent neighbours may be meaningless")


def _as_np(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def recon_errors(model, maps, latents=None, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(per-map reconstruction MSE (N,) float64, latents (N, D) float32); ``maps`` an array or a Dataset."""
    from .model import decode, encode
    from .similarity import MapSource

    if latents is None:
        latents = encode(model, maps, batch_size=batch_size)
    latents = np.asarray(latents, np.float32)
    src = MapSource(maps)
    err = np.empty(src.n, np.float64)
    for s in range(0, src.n, batch_size):
        e = min(src.n, s + batch_size)
        rec = decode(model, latents[s:e], batch_size).reshape(e - s, -1)
        diff = src.read(s, e).astype(np.float32) - rec
        err[s:e] = np.einsum("ij,ij->i", diff, diff) / diff.shape[1]
    return err, latents


def knn_distance(latents: np.ndarray, bank: np.ndarray, k: int = DEFAULT_K, exclude_zero: bool = False) -> np.ndarray:
    """(N,) mean distance of each latent to its k nearest bank latents (float64). ``exclude_zero``
    skips bank entries at distance ~0 (the map itself when it is part of the bank)."""
    x = np.asarray(latents, np.float64)
    b = np.asarray(bank, np.float64)
    d2 = (x * x).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * x @ b.T
    d = np.sqrt(np.maximum(d2, 0))
    if exclude_zero:
        d = np.where(d < 1e-6, np.inf, d)
    kk = int(min(k, b.shape[0] - (1 if exclude_zero else 0)))
    part = np.partition(d, kk - 1, axis=1)[:, :kk]
    return part.mean(axis=1)


def _ecdf(sorted_ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Share of reference values strictly below each x (ties count half)."""
    ref = np.asarray(sorted_ref, np.float64)
    lo = np.searchsorted(ref, x, side="left")
    hi = np.searchsorted(ref, x, side="right")
    return ((lo + hi) / 2 / len(ref)).astype(np.float64)


def build_reference(model, bank_maps, ref_maps, k: int = DEFAULT_K, source: str = "", exclude_zero: bool = False) -> dict:
    """The reference distributions of a model (stored in its checkpoint as tensors).

    ``bank_maps`` (M, 256, 256): the model's own data whose latents form the k-NN bank;
    ``ref_maps`` (R, 256, 256): other maps of the same kind, never trained on, giving the
    distributions of reconstruction error, k-NN distance and combined quantile.
    """
    import torch

    from .model import encode

    bank = encode(model, bank_maps)
    rerr, rlat = recon_errors(model, ref_maps)
    rknn = knn_distance(rlat, bank, k, exclude_zero=exclude_zero)
    rerr_s, rknn_s = np.sort(rerr), np.sort(rknn)
    comb = np.maximum(_ecdf(rerr_s, rerr), _ecdf(rknn_s, rknn))
    return {"bank": torch.from_numpy(bank.astype(np.float32)), "recon": torch.from_numpy(rerr_s),
            "knn": torch.from_numpy(rknn_s), "combined": torch.from_numpy(np.sort(comb)), "k": int(k),
            "n_bank": int(len(bank)), "n_reference": int(len(rerr)), "source": str(source)}


def reference_for(model, maps=None, seed: int = 0, max_maps: int = 2000) -> dict | None:
    """The model's stored reference, else one built from ``maps`` (array or Dataset; a seeded half
    as bank, the rest as reference, at most ``max_maps`` read) with a note in ``source``; None
    without either."""
    ref = getattr(model, "checkpoint_info", {}).get("novelty_reference")
    if ref is not None:
        return ref
    if maps is None:
        return None
    from .similarity import MapSource

    src = MapSource(maps)
    if src.n < 8:
        return None
    rng = np.random.default_rng([seed, 4242])
    idx = np.sort(rng.choice(src.n, size=min(src.n, max_maps), replace=False))
    half = rng.permutation(len(idx))
    bank_i, ref_i = np.sort(idx[half[: len(idx) // 2]]), np.sort(idx[half[len(idx) // 2:]])
    read = (lambda ii: maps.read_maps(ii)) if src.ds is not None else (lambda ii: np.asarray(maps)[ii])
    return build_reference(model, read(bank_i), read(ref_i), source=(
        f"no reference stored with the model: built from this dataset ({len(bank_i)} maps as bank, {len(ref_i)} as "
        "reference, seeded); novelty is relative to this dataset, not to the model's training data"))


def reference_from_arrays(latents: np.ndarray, errors: np.ndarray, k: int = DEFAULT_K, seed: int = 0,
                          max_maps: int = 2000, source: str = "") -> dict | None:
    """The reference :func:`reference_for` builds from a dataset, made from latents (N, D) and
    reconstruction errors (N,) already computed for every map (no second encode or decode).

    The bank/reference split is the same seeded draw as :func:`reference_for`'s, so both give
    the same reference for the same maps and seed (up to float rounding of the encoder).
    """
    import torch

    latents = np.asarray(latents, np.float32)
    errors = np.asarray(errors, np.float64)
    n = len(latents)
    if n < 8:
        return None
    rng = np.random.default_rng([seed, 4242])
    idx = np.sort(rng.choice(n, size=min(n, max_maps), replace=False))
    half = rng.permutation(len(idx))
    bank_i, ref_i = np.sort(idx[half[: len(idx) // 2]]), np.sort(idx[half[len(idx) // 2:]])
    bank = latents[bank_i]
    rerr = errors[ref_i]
    rknn = knn_distance(latents[ref_i], bank, k)
    rerr_s, rknn_s = np.sort(rerr), np.sort(rknn)
    comb = np.maximum(_ecdf(rerr_s, rerr), _ecdf(rknn_s, rknn))
    return {"bank": torch.from_numpy(bank), "recon": torch.from_numpy(rerr_s),
            "knn": torch.from_numpy(rknn_s), "combined": torch.from_numpy(np.sort(comb)), "k": int(k),
            "n_bank": int(len(bank)), "n_reference": int(len(rerr)), "source": source or (
                f"no reference stored with the model: built from this dataset ({len(bank_i)} maps as bank, "
                f"{len(ref_i)} as reference, seeded); novelty is relative to this dataset, not to the model's "
                "training data")}


def reference_from_results(read_result, attrs: dict) -> dict | None:
    """The reference precompute stored in ``/results/novelty/reference_*`` (None if absent).
    ``read_result(name)`` returns a stored array or None (e.g. ``Dataset.read_result``)."""
    parts = {key: read_result(f"novelty/reference_{key}") for key in ("bank", "recon", "knn", "combined")}
    if any(v is None for v in parts.values()):
        return None
    return {**parts, "k": int(attrs.get("novelty_k", DEFAULT_K)), "source": str(attrs.get("novelty_source", ""))}


def novelty_of_maps(model, maps, reference: dict, latents=None, errors=None) -> dict:
    """Novelty of maps (N, 256, 256) array or a Dataset for ``model`` against ``reference``.

    Returns a dict of (N,) arrays: ``score`` float32 in [0, 1], ``recon_quantile``,
    ``knn_quantile`` float32, ``recon_error``, ``knn_distance`` float32, ``novel`` bool, and
    ``latent`` (N, D) float32; plus ``source`` (the reference's text) and ``threshold``.
    ``latents`` (precomputed) saves the encoding, ``errors`` (with ``latents``) the decoding. Maps that are part of a dataset-built bank are
    compared without themselves.
    """
    if reference is None:
        raise ValueError("novelty needs a reference (see reference_for)")
    if errors is not None and latents is not None:  # computed already (precompute reuses them)
        err, lat = np.asarray(errors, np.float64), np.asarray(latents, np.float32)
    else:
        err, lat = recon_errors(model, maps, latents)
    bank = _as_np(reference["bank"])
    dist = knn_distance(lat, bank, int(reference.get("k", DEFAULT_K)), exclude_zero=True)
    rq = _ecdf(_as_np(reference["recon"]), err)
    kq = _ecdf(_as_np(reference["knn"]), dist)
    score = _ecdf(_as_np(reference["combined"]), np.maximum(rq, kq))
    return {"score": score.astype(np.float32), "recon_quantile": rq.astype(np.float32),
            "knn_quantile": kq.astype(np.float32), "recon_error": err.astype(np.float32),
            "knn_distance": dist.astype(np.float32), "novel": score >= NOVEL_THRESHOLD, "latent": lat,
            "source": str(reference.get("source", "")), "threshold": NOVEL_THRESHOLD}


def novelty_message(score: float) -> str | None:
    """The warning shown for an uploaded map, or None when it is not novel."""
    if score >= NOVEL_THRESHOLD:
        return NOVEL_MESSAGE.format(score=score, thr=NOVEL_THRESHOLD)
    return None
