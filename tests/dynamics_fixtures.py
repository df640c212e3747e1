"""Datasets whose ``/results/dynamics/*`` follow the contract, for the dashboard's dynamics views.

:func:`with_dynamics` copies a precomputed dataset and, when its results hold no dynamics yet,
adds them with :func:`ainerd_core.dynamics.measure_dynamics` (what precompute stores). The
ordering attrs (``order_rule``, ``order_spearman_json``, ``dynamics_source``) are
added the same way. A latents-only dataset gets ``dynamics_source = "none"`` and an order rule
that says the order is unknown.

``dynamics_data`` (session fixture, available to every module through tests/conftest.py) is a
folder with the ``explorer_data`` datasets made so: ``demo.h5`` and ``e031.h5`` (read-only).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ainerd_core.dataset import open_dataset
from ainerd_core.results import K_SET, labels_name, write_results


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok])[0]) if ok.sum() > 2 else float("nan")


def with_dynamics(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` and make sure its results hold the dynamics of the contract."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    with open_dataset(dst) as ds:
        names = ds.result_names()
        if "dynamics/relaxation_rate" in names:
            return dst
        results = {n: ds.read_result(n) for n in names}
        attrs = dict(ds.result_attrs)
        step = ds.attrs.get("c2_time_step_s")
        maps = np.stack([m for _, b in ds.iter_maps(256) for m in b]) if ds.has_maps else None
    if maps is None:
        from ainerd_core.dynamics import ORDER_UNKNOWN

        attrs.update(order_rule=ORDER_UNKNOWN,
                     order_spearman_json=json.dumps({}), dynamics_source="none")
        write_results(dst, results, attrs)
        return dst
    from ainerd_core.dynamics import ORDER_RULE, measure_dynamics

    dyn = measure_dynamics(maps, time_step_s=step)
    attrs["dynamics_units_json"] = json.dumps(dyn.pop("units"))
    attrs["dynamics_fit_max_lag"] = float(dyn.pop("fit_max_lag"))
    for key, value in dyn.items():
        results[f"dynamics/{key}"] = value
    rate = np.asarray(dyn["relaxation_rate"], np.float64)
    results["dynamics/score_filled"] = ~np.isfinite(rate)
    rho = {}
    for k in K_SET:
        lab = results.get(labels_name(k))
        if lab is not None:
            rho[str(k)] = _spearman(np.asarray(lab, np.float64), rate)
    attrs.update(order_rule=ORDER_RULE,
                 order_spearman_json=json.dumps(rho), dynamics_source="maps")
    write_results(dst, results, attrs)
    return dst


@pytest.fixture(scope="session")
def dynamics_data(explorer_data, tmp_path_factory) -> Path:
    """``explorer_data``'s ``demo.h5`` and ``e031.h5`` with their dynamics (and its model, if
    any), for the dynamics views and their browser tests. Read-only: copy a file to change it."""
    folder = tmp_path_factory.mktemp("dynamics-data")
    with_dynamics(explorer_data / "demo.h5", folder / "demo.h5")
    with_dynamics(explorer_data / "e031.h5", folder / "e031.h5")
    if (explorer_data / "model.pt").exists():
        shutil.copyfile(explorer_data / "model.pt", folder / "model.pt")
    return folder
