"""Benchmark ``precompute`` end to end: stage timings and peak memory.

    python -m benchmarks.precompute data/demo.h5                 # 900 maps, shipped weights
    python -m ainerd_core simulate --out /tmp/s13k.h5 --times 723 --seed 0
    python -m benchmarks.precompute /tmp/s13k.h5                 # 13,014 maps

The dataset is copied to a temporary file first (the original's /results stay untouched) unless
``--in-place``. Prints the stage table, the peak resident memory of the process (ru_maxrss) and
the first-run vs warm UMAP timing (numba's on-disk cache; run twice to see the warm figure).
Targets (docs/precompute.md): 900 maps < 60 s, 13,000 maps < 10 min and < 4 GB on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import peak_rss_mib, write_json



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--model", default=None)
    p.add_argument("--no-model", action="store_true")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--in-place", action="store_true")
    p.add_argument("--json", default=None, help="write the timings here")
    args = p.parse_args()
    t_start = time.perf_counter()
    from ainerd_core.precompute import precompute

    t_import = time.perf_counter() - t_start
    src = Path(args.dataset)
    tmpdir = None
    if args.in_place:
        target = src
    else:
        tmpdir = tempfile.mkdtemp(prefix="bench_precompute_", dir=src.parent)
        target = Path(tmpdir) / src.name
        shutil.copy(src, target)
    try:
        t0 = time.perf_counter()
        res = precompute(target, model_path=args.model, k=args.k, seed=args.seed, use_model=not args.no_model)
        wall = time.perf_counter() - t0
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    timings = json.loads(res["_attrs"]["timings_json"])
    peak_gb = peak_rss_mib() / 1024
    n = len(res["latent"])
    print(f"\n{n} maps on {os.cpu_count()} cores; import {t_import:.1f} s; precompute {wall:.1f} s; "
          f"peak RSS {peak_gb:.2f} GB")
    for name, sec in timings.items():
        print(f"  {name:55s} {sec:8.2f} s")
    write_json(args.json, {"n_maps": n, "wall_s": wall, "import_s": t_import, "peak_rss_gb": peak_gb,
                           "stages": timings})
    return 0


if __name__ == "__main__":
    sys.exit(main())
