"""The published AI-NERD layout (experiment E031; Horwath et al., Nat. Commun. 2024).

A folder with ``latents_64.npy`` (N, 64), ``sector.npy`` (N,) 1-based sectors of 20 degrees,
``start_time_s.npy`` (N,) s since shear cessation, and optionally ``rheology.csv`` (the
rheometer log, CSV layout of :mod:`.rheology`). There are no C2 maps: the result is a
latents-only dataset.

Clock of ``rheology.csv``: the pre-shear runs until rheometer time 199 s and the first
zero-shear point is at 209 s; the data's README puts XPCS time 0 at about rheometer time
200 s. The default offset is therefore :data:`DEFAULT_RHEOLOGY_OFFSET_S` = -200 s
(t_xpcs = t_rheometer - 200 s); ``--rheology-offset`` overrides it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

DEFAULT_RHEOLOGY_OFFSET_S = -200.0
FLOW_AXIS_DEG = 90.0          # sectors 5 and 14 (centres 90 and 270 deg) are along the flow
SECTOR_WIDTH_DEG = 20.0
N_SECTORS = 18
LATENT_NAMES = ("latents_64.npy", "latents.npy", "full_dataset_AugmentedTraining_rheo64.npy")


def _load(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise InputError(path, f"missing {what} file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"not a readable .npy file (truncated or corrupt?): {exc}") from None


def read_published(folder) -> dict:
    """Latents, sector, time and the rheology file path of a published folder, rows ordered
    sector-major (stable; the published order already is)."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(folder, "no such folder")
    if not folder.is_dir():
        raise InputError(folder, "is not a folder (expected the published layout: latents_64.npy, sector.npy,"
                                 " start_time_s.npy, rheology.csv)")
    lat_path = next((folder / n for n in LATENT_NAMES if (folder / n).exists()), folder / LATENT_NAMES[0])
    latents = _load(lat_path, "latents")
    sector = _load(folder / "sector.npy", "sector")
    time = _load(folder / "start_time_s.npy", "start time")
    if latents.ndim != 2 or latents.shape[0] == 0 or latents.dtype.kind not in "fiu":
        raise InputError(lat_path, f"latents must be a numeric (N, D) array, got {latents.dtype} {latents.shape}")
    n = latents.shape[0]
    for arr, name in ((sector, "sector.npy"), (time, "start_time_s.npy")):
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InputError(folder / name, f"has shape {arr.shape} but there are {n} latent vectors")
        if arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
            raise InputError(folder / name, "must hold finite numbers")
    if not np.all(np.isfinite(latents)):
        raise InputError(lat_path, "latents contain NaN or infinite values")
    if np.any(sector != np.round(sector)) or sector.min() < 1 or sector.max() > N_SECTORS:
        raise InputError(folder / "sector.npy", f"sectors must be whole numbers 1..{N_SECTORS}")
    sector = sector.astype(np.int32)
    order = np.lexsort((time, sector))  # sector-major, then time; stable
    rheo = folder / "rheology.csv"
    return {
        "latents": latents[order],
        "sector": sector[order],
        "time": time.astype(np.float64)[order],
        "source": np.asarray([f"{lat_path.name}[{i}]" for i in order], dtype=object),
        "rheology_path": rheo if rheo.exists() else None,
        "latents_path": lat_path,
    }
