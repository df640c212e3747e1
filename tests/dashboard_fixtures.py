"""Small precomputed datasets for the dashboard tests, made by the real pipeline.

:func:`build_precomputed` makes a simulated experiment (``python -m ainerd_core simulate``,
8 times x 18 sectors = 144 maps by default) and its ``/results`` with ``python -m ainerd_core
precompute`` (small settings); :func:`build_latents_only` makes an E031-like latents-only
dataset (900 maps, 50 times x 18 sectors, sector-major, ``source_kind='ainerd-published'``, no
``/c2``) and precomputes it the same way; :func:`precompute_small` precomputes any dataset that
carries ``/latents``, in process. A failing pipeline fails the tests: there is no stand-in.

``explorer_data`` (session fixture) is a folder with ``demo.h5`` (precomputed, with maps) and
``e031.h5`` (latents only); it is cached across sessions, keyed by a hash of the pipeline's code
(:func:`build_explorer_data`). tests/conftest.py makes it available to every test module.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ainerd_core.dataset import open_dataset, write_dataset

REPO = Path(__file__).resolve().parents[1]
# small settings: the fixtures need every result, not the best statistics
SMALL = ("--seed", "0", "--neighbours", "30", "--n-init", "3", "--bootstrap", "5", "--targets", "20")


def _precompute(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ainerd_core", "precompute", str(path), "--quiet", *SMALL],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"precompute failed on the test data: {proc.stderr[-2000:]}")


def precompute_small(path) -> Path:
    """``precompute`` (in process, no model: the dataset must carry ``/latents``) with the small
    settings of the fixtures."""
    from ainerd_core.precompute import precompute

    precompute(path, seed=0, neighbours=min(30, _n_maps(path) - 1), n_init=3, n_boot=5, targets=20,
               use_model=False, verbose=False)
    return Path(path)


def _n_maps(path) -> int:
    with open_dataset(path) as ds:
        return ds.n_maps


def build_precomputed(folder, name: str = "demo", times: int = 8, sectors: int = 18, seed: int = 0) -> Path:
    """A simulated dataset with results in ``folder/<name>.h5`` (built once: reused if present)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.h5"
    with_results = False
    if path.exists():
        with open_dataset(path) as ds:
            with_results = ds.read_result("labels") is not None
    if with_results:
        return path
    subprocess.run([sys.executable, "-m", "ainerd_core", "simulate", "--out", str(path), "--times", str(times),
                    "--sectors", str(sectors), "--seed", str(seed), "--quiet"], cwd=REPO, check=True, timeout=600)
    _precompute(path)
    return path


def build_latents_only(folder, name: str = "e031", seed: int = 0) -> Path:
    """An E031-like latents-only dataset (900 maps, 50 times x 18 sectors), precomputed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.h5"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    n_t, n_s = 50, 18
    times = np.linspace(-5.0, 2802.0, n_t)
    sector = np.repeat(np.arange(1, n_s + 1), n_t)
    time = np.tile(times, n_s)
    centers = rng.gamma(2.0, 1.0, (5, 64))
    which = (np.tile(np.arange(n_t), n_s) * 5 // n_t + rng.integers(0, 2, n_t * n_s)) % 5
    latents = np.abs(centers[which] + rng.normal(0, 0.3, (n_t * n_s, 64))).astype(np.float32)
    t_r = np.linspace(-200, 2810, 560)
    stress = 5 + 20 * np.exp(-np.clip(t_r, 0, None) / 300) + 0.8 * np.sin(t_r / 150)
    write_dataset(path, meta=dict(time=time, sector=sector, q=np.full(time.size, np.nan),
                                  source=[f"E031 latents row {i}" for i in range(time.size)]),
                  latents=latents, rheology=dict(time=t_r, shear_stress=stress),
                  source_kind="ainerd-published", title="E031 published latents (fixture)",
                  provenance="tests/dashboard_fixtures.py, E031 layout", flow_axis_deg=90.0,
                  sector_width_deg=20.0, n_sectors=n_s)
    _precompute(path)
    return path


# the fixture is rebuilt when this file, any pipeline code or the shipped demo weights (which
# precompute uses, with their curve and latent-size sweep) change (AINERD_FIXTURE_REBUILD=1 forces
# a rebuild)
_SOURCES = ("tests/dashboard_fixtures.py", *sorted(str(p.relative_to(REPO)) for p in (REPO / "ainerd_core").rglob("*.py")),
            "data/demo_weights.pt", "data/demo_weights.curve.json", "data/demo_weights.latent_sweep.json")


def fixture_key() -> str:
    """Hash of what the fixture data depend on (this file, the pipeline's code, the weights)."""
    import hashlib

    h = hashlib.sha256(b"real pipeline")
    for rel in _SOURCES:
        p = REPO / rel
        h.update(rel.encode())
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_explorer_data(root=None) -> Path:
    """The test data folder (``demo.h5`` with maps, ``e031.h5`` latents only), built once per
    version of the pipeline and reused across test sessions from a cache folder under the
    system temp dir (``AINERD_FIXTURE_CACHE`` overrides it). Treat it as read-only: copy a file
    before changing it."""
    import shutil
    import tempfile

    root = Path(root or os.environ.get("AINERD_FIXTURE_CACHE") or Path(tempfile.gettempdir()) / "ainerd-dashboard-fixtures")
    final = root / fixture_key()
    if os.environ.get("AINERD_FIXTURE_REBUILD") == "1" and (final / "COMPLETE").exists():
        shutil.rmtree(final, ignore_errors=True)
    if (final / "COMPLETE").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        build_precomputed(work)
        build_latents_only(work)
        (work / "COMPLETE").write_text("ok\n")
        try:
            work.rename(final)
        except OSError:  # another session finished first
            if not (final / "COMPLETE").exists():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final


@pytest.fixture(scope="session")
def explorer_data() -> Path:
    """Folder with ``demo.h5`` (144 simulated maps, precomputed) and ``e031.h5`` (latents only).

    Read-only (cached across sessions): copy a file before modifying it."""
    return build_explorer_data()
