"""What the experts of a study look at: the one PNG renderer, the target map (an index or an
uploaded ``.npy``), and the candidate search (nearest neighbours per method)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .results import ModelProvenance, checkpoint_sha256

METHODS = ("latent", "raw", "smoothed")   # smoothed pixels: the stronger baseline (docs/model.md 1b)
DEFAULT_METHODS = ("latent", "raw")       # the paper's protocol (METHOD.md section 5)
MAP_SIZE = 256
IMAGE_CMAP = "viridis"


# ====================================================================== images and targets
def render_png(c2, cmap: str = IMAGE_CMAP) -> bytes:
    """Every image experts see goes through here: 256 x 256, viridis, [0, 1], origin lower-left."""
    from .imaging import c2_to_png

    return c2_to_png(c2, cmap=cmap, vmin=0.0, vmax=1.0)


def prepare_target(arr, where="target") -> np.ndarray:
    """An uploaded map as (256, 256) float32 in [0, 1] (area-averaged, min-max normalised)."""
    from .readers.resample import prepare_target as _prepare

    return _prepare(arr, where, size=MAP_SIZE)


def load_target_file(path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(path, f"not a readable .npy array: {exc}") from None
    return prepare_target(arr, path)


def _latent_matrix(ds):
    lat = ds.read_result("latent")
    if lat is None:
        lat = ds.latents
    return lat


def find_candidates(ds, target, methods, n: int, model_path=None) -> tuple[dict, np.ndarray, int | None]:
    """Nearest neighbours of the target for each method (:data:`METHODS`: latent space, raw
    pixels, smoothed pixels).

    Returns ({method: (index (n,), distance (n,))}, target map (256, 256), target index or None).
    An uploaded target identical to a dataset map (pixel distance < 1e-3 per pixel) is treated as
    that map (excluded from its own neighbours and placed in latent space by its latent).
    """
    if not ds.has_maps:
        raise InputError(ds.path, "this dataset holds latents only: experts need C2 maps to look at")
    from . import similarity as S

    if isinstance(target, (int, np.integer)):
        t_index = int(target)
        if not 0 <= t_index < ds.n_maps:
            raise InputError("--target", f"index {t_index} outside 0..{ds.n_maps - 1}")
        t_map = ds.read_map(t_index)
    else:
        t_map = prepare_target(target)
        t_index = None
    n_avail = ds.n_maps - 1 if t_index is not None else ds.n_maps
    if n < 1:
        raise InputError("--n", f"must be >= 1, got {n}")
    n = min(n, n_avail)
    out = {}
    # raw pixels are also searched for an uploaded map, to find it in the dataset; one read of the maps
    pixel = [sp for sp in S.PIXEL_SPACES if sp in methods or (sp == "raw" and t_index is None)]
    if pixel:
        found = S.nearest_pixel_neighbours(ds, t_index if t_index is not None else t_map, n + 1, pixel)
        if t_index is None and found["raw"][1].size and found["raw"][1][0] < 1e-3 * MAP_SIZE:
            t_index = int(found["raw"][0][0])  # the uploaded map is this dataset map
            n = min(n, ds.n_maps - 1)
        for sp in pixel:
            idx, dist = np.asarray(found[sp][0]), np.asarray(found[sp][1], np.float64)
            keep = idx != t_index  # the target, once it is known to be a dataset map
            if sp in methods:
                out[sp] = (idx[keep][:n], dist[keep][:n])
    if "latent" in methods:
        lat = _latent_matrix(ds)
        if t_index is not None:
            if lat is None:
                raise InputError(ds.path, "no latents: run `python -m ainerd_core precompute` first")
            idx, dist = S.nearest_neighbours({"latent": lat}, t_index, "latent", n)
        else:
            # the checkpoint that made the latents (ainerd_core.results: the one lookup)
            mp = model_path or ModelProvenance.from_attrs(ds.result_attrs).resolve(ds.path, demo_fallback=False)[0]
            if mp is None or not Path(mp).exists():
                raise InputError("--target", "an uploaded map that is not in the dataset needs --model PATH "
                                             "to be placed in latent space (or use --methods raw)")
            sha = ModelProvenance.from_attrs(ds.result_attrs).sha256
            if model_path and sha and checkpoint_sha256(mp) != sha:  # issue 12: only the model of the latents
                raise InputError("--model", f"{Path(mp).name} is not the model that made this dataset's latents "
                                            f"(SHA-256 differs from the recorded {sha[:12]}); they would not be comparable")
            if lat is None:
                raise InputError(ds.path, "no latents: run `python -m ainerd_core precompute` first")
            from .model import load_model

            idx, dist = S.nearest_neighbours({"latent": lat}, t_map, "latent", n, model=load_model(mp))
        out["latent"] = (np.asarray(idx)[:n], np.asarray(dist, np.float64)[:n])
    return out, t_map, t_index
