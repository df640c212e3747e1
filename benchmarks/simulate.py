"""Simulator throughput: maps per second for a whole run written to disk, and peak memory.

    .venv/bin/python -m benchmarks.simulate [--times 50] [--sectors 18] [--size 256] [--rounds 3]
                                            [--keep DIR] [--json out.json]

Each round runs ``ainerd_core.simulate.simulate`` end to end (physics, noise, normalisation, HDF5
writes, rheology and truth) into a temporary folder, then deletes the file. The default is the
demo set (50 x 18 = 900 maps; median of the rounds reported). ``--times 723`` gives 13,014 maps
(the paper's large set, ~3.4 GB on disk): use ``--rounds 1``. Peak RSS is the process's maximum
resident set size (``resource.getrusage``), so it shows that maps are streamed in batches
rather than held in memory. Also reports the time per map for the physics alone (no I/O).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


from ainerd_core.simulate import Experiment, SimConfig, simulate
from benchmarks.common import peak_rss_mib, write_json


def render_only(cfg: SimConfig, n: int = 100) -> float:
    """Seconds per map for the physics alone (no HDF5)."""
    exp = Experiment.from_config(cfg)
    times = exp.times()
    ii, jj = np.indices((cfg.size, cfg.size))
    lag = np.abs(ii - jj).ravel()
    counts = np.bincount(lag, minlength=cfg.size).astype(float)
    t0 = time.perf_counter()
    k = 0
    for s in range(1, cfg.sectors + 1):
        for i in range(cfg.times):
            exp.render(i, s, float(times[i]), lag, counts)
            k += 1
            if k == n:
                return (time.perf_counter() - t0) / n
    return (time.perf_counter() - t0) / max(k, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--times", type=int, default=50)
    p.add_argument("--sectors", type=int, default=18)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep", help="write DIR/bench_simulate.h5 and keep it (default: a temporary folder)")
    p.add_argument("--json", help="write the numbers to this file")
    a = p.parse_args(argv)
    cfg = SimConfig(times=a.times, sectors=a.sectors, size=a.size, seed=a.seed)
    rss_start = peak_rss_mib()
    per_map = render_only(cfg)
    seconds = []
    size_bytes = 0
    for _ in range(max(a.rounds, 1)):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(a.keep) / "bench_simulate.h5" if a.keep else Path(tmp) / "sim.h5"
            t0 = time.perf_counter()
            simulate(out, cfg)
            seconds.append(time.perf_counter() - t0)
            size_bytes = out.stat().st_size
    med = statistics.median(seconds)
    result = {
        "n_maps": cfg.n_maps, "size": cfg.size, "rounds": len(seconds), "seconds": seconds,
        "median_s": med, "maps_per_s": cfg.n_maps / med, "physics_ms_per_map": 1e3 * per_map,
        "file_mib": size_bytes / 2 ** 20, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss_start,
    }
    print(f"simulate: {cfg.n_maps} maps ({cfg.times} times x {cfg.sectors} sectors, {cfg.size} px): "
          f"median {med:.2f} s over {len(seconds)} round(s) = {result['maps_per_s']:.0f} maps/s "
          f"(physics alone {result['physics_ms_per_map']:.2f} ms/map); file {result['file_mib']:.0f} MiB; "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB (after imports {rss_start:.0f} MiB)")
    write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
