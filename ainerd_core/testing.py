"""Small input files for tests and benchmarks, in the exact layouts the readers accept.

Nothing here is committed as a binary: every test builds its files with these helpers.

- :func:`write_aps_nexus` - current APS 8-ID-I boost_corr two-time result file
- :func:`write_aps_legacy` - the older /exchange/C2T_all layout
- :func:`write_rheocompass` - Anton Paar RheoCompass text export (UTF-16 + BOM, tabs, units row)
- :func:`c2_full` - a symmetric synthetic C2 map (aging-like decay band plus noise)
- :func:`build_tiny` - a small dataset (maps, random latents) for the evaluation studies
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .dataset import write_dataset, write_results


def c2_full(n: int, width: float, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """A symmetric C2 map n x n: 1 + 0.3 exp(-|t1 - t2| / width) plus symmetric noise and a
    spiky diagonal (as real maps have)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    c2 = 1.0 + 0.3 * np.exp(-np.abs(t[:, None] - t[None, :]) / width)
    e = rng.normal(0, noise, (n, n))
    c2 = c2 + (e + e.T) / 2
    c2[np.diag_indices(n)] += 0.2  # the spike the diagonal fix removes
    return c2.astype(np.float32)


def upper(c2: np.ndarray) -> np.ndarray:
    """What boost_corr stores: the upper triangle incl. diagonal, zeros below."""
    return np.triu(c2).astype(np.float32)


def grid_labels(n_q: int, n_phi: int, skip=()) -> np.ndarray:
    """dynamic_index_mapping: label - 1 -> flat grid index, empty cells skipped."""
    return np.array([f for f in range(n_q * n_phi) if f not in set(skip)], dtype=np.int64)


def write_aps_nexus(path, *, size=64, q_values=(0.004, 0.008), phi_values=None, skip=(),
                    processed_bins=None, start_time="2024-03-01T10:00:00", frame_time=0.002, stride=2,
                    avg=3, seed=0, maps=None, drop=(), omit=()):
    """One result file of the current layout; returns {label: (q, phi, full map)}.

    ``skip``: flat (q, phi) grid cells with no ROI label; ``processed_bins``: labels that have a
    c2 map (default all); ``maps``: {label: full map} to store instead of synthetic ones;
    ``drop``: HDF5 paths to leave out (to make bad files); ``omit``: alias of ``drop``.
    """
    phi_values = np.arange(10.0, 360.0, 20.0) if phi_values is None else np.asarray(phi_values, float)
    q_values = np.asarray(q_values, float)
    n_q, n_phi = q_values.size, phi_values.size
    mapping = grid_labels(n_q, n_phi, skip)
    labels = np.arange(1, mapping.size + 1) if processed_bins is None else np.asarray(processed_bins)
    truth = {}
    drop = set(drop) | set(omit)
    with h5py.File(path, "w") as f:
        def put(key, value, **kw):
            if key not in drop:
                f.create_dataset(key, data=value, **kw)

        put("/entry/start_time", start_time)
        put("/entry/instrument/detector_1/frame_time", frame_time)
        put("/xpcs/twotime/config/stride_frame", stride)
        put("/xpcs/twotime/config/avg_frame", avg)
        put("/xpcs/qmap/dynamic_num_pts", np.array([n_q, n_phi], dtype=np.int64))
        put("/xpcs/qmap/dynamic_index_mapping", mapping)
        put("/xpcs/qmap/dynamic_v_list_dim0", q_values)
        put("/xpcs/qmap/dynamic_v_list_dim1", phi_values)
        put("/xpcs/twotime/processed_bins", labels.astype(np.int64))
        f.require_group("/xpcs/twotime/correlation_map")
        for k, label in enumerate(labels, start=1):
            flat = int(mapping[label - 1])
            q, phi = q_values[flat // n_phi], phi_values[flat % n_phi]
            full = maps[label] if maps is not None else c2_full(size, 3.0 + label, seed=seed * 1000 + int(label))
            truth[int(label)] = (float(q), float(phi), full)
            put(f"/xpcs/twotime/correlation_map/c2_{k:05d}", upper(full))
    return truth


def write_aps_legacy(path, *, size=64, q_list=(0.004, 0.004, 0.008, 0.008), phi_list=(10.0, 190.0, 10.0, 190.0),
                     start_time="2021-06-01T09:00:00", exposure_period=0.005, stride=1, avg=2, seed=0):
    """One result file of the older layout; returns {bin: (q, phi, full map)}."""
    truth = {}
    with h5py.File(path, "w") as f:
        f.create_dataset("/xpcs/dqlist", data=np.asarray(q_list, float)[None, :])
        f.create_dataset("/xpcs/dphilist", data=np.asarray(phi_list, float)[None, :])
        f.create_dataset("/xpcs/stride_frames", data=np.array([[stride]]))
        f.create_dataset("/xpcs/avg_frames", data=np.array([[avg]]))
        f.create_dataset("/measurement/instrument/detector/exposure_period", data=np.array([[exposure_period]]))
        f.create_dataset("/measurement/instrument/source_begin/datetime", data=np.bytes_(start_time))
        for k in range(1, len(q_list) + 1):
            full = c2_full(size, 2.0 + k, seed=seed * 1000 + k)
            truth[k] = (float(q_list[k - 1]), float(phi_list[k - 1]), full)
            f.create_dataset(f"/exchange/C2T_all/g2_{k:05d}", data=upper(full))
    return truth


def _fmt(x: float, comma: bool) -> str:
    s = f"{x:.6g}"
    return s.replace(".", ",") if comma else s


def write_rheocompass(path, intervals, *, decimal_comma=True, encoding="utf-16", time_unit="s",
                      stress_unit="Pa", viscosity_unit="Pa·s", rate_unit="1/s"):
    """An Anton Paar RheoCompass export. ``intervals``: list of dicts with arrays ``time``,
    ``shear_rate``, ``shear_stress``, ``viscosity`` (already in the given units). ``encoding``
    'utf-16' writes a BOM (as RheoCompass does); 'utf-16-le' writes none (a wrong-encoding file)."""
    lines = ["Project:\tAI-NERD rheo-XPCS", "Test:\tE031 pre-shear and rest", "Result:\tcessation",
             f"Interval and data points:\t{len(intervals)}", ""]
    for k, iv in enumerate(intervals, start=1):
        lines.append(f"Interval data:\tPoint No.\tTime\tShear Rate\tShear Stress\tViscosity\tStatus")
        lines.append(f"\t\t[{time_unit}]\t[{rate_unit}]\t[{stress_unit}]\t[{viscosity_unit}]\t[]")
        for i, (t, r, s, v) in enumerate(zip(iv["time"], iv["shear_rate"], iv["shear_stress"], iv["viscosity"]), 1):
            lines.append("\t".join(["", str(i), _fmt(t, decimal_comma), _fmt(r, decimal_comma),
                                    _fmt(s, decimal_comma), _fmt(v, decimal_comma), "Dy_auto"]))
        lines.append("")
    Path(path).write_bytes("\r\n".join(lines).encode(encoding))


def build_tiny(path: Path, n: int = 40, seed: int = 0, latent_dim: int = 8) -> Path:
    """A small dataset with C2 maps (decay width growing with the index) and random latents."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    maps = np.empty((n, 256, 256), np.float32)
    for i in range(n):
        w = 0.05 + 0.5 * (i / n)
        m = np.exp(-np.abs(yy - xx) / w) + 0.05 * rng.random((256, 256))
        maps[i] = (m - m.min()) / (m.max() - m.min())
    meta = dict(time=np.arange(n) * 10.0, sector=np.ones(n, int), phi=np.full(n, 10.0), q=np.full(n, 0.01),
                source=[f"tiny:{i}" for i in range(n)])
    write_dataset(path, meta=meta, maps=maps, source_kind="simulation", title="tiny", flow_axis_deg=90.0,
                  sector_width_deg=20.0, n_sectors=18)
    lat = rng.normal(size=(n, latent_dim)).astype(np.float32)
    write_results(path, {"latent": lat, "labels": np.zeros(n, np.int32),
                         "umap": rng.normal(size=(n, 2)).astype(np.float32)})
    return path
