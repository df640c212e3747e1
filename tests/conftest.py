"""Shared fixtures. Paths to the published data beside the checkout: ../shared/data/ainerd_e031."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
E031 = REPO.parent / "shared" / "data" / "ainerd_e031"


@pytest.fixture
def e031_dir() -> Path:
    if not E031.exists():
        pytest.skip("../shared/data/ainerd_e031 is not beside this checkout")
    return E031


def small_meta(n: int, n_sectors: int = 6):
    """Metadata of n maps: sector-major, times 0, 60, 120 ... s."""
    n_times = n // n_sectors
    sector = np.repeat(np.arange(1, n_sectors + 1), n_times)
    time = np.tile(np.arange(n_times) * 60.0, n_sectors)
    return dict(time=time, sector=sector, q=np.full(n, 0.01), source=[f"sim:{i}" for i in range(n)])


def simulated(tmp_path_factory, name: str, **config) -> Path:
    """A simulated experiment written to a fresh temp folder; ``config``: SimConfig fields (its
    defaults are the demo's, as ``make demo`` builds it)."""
    from ainerd_core.simulate import SimConfig, simulate

    path = tmp_path_factory.mktemp("sim") / f"{name}.h5"
    simulate(path, SimConfig(**config))
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
