"""Ingest throughput: APS two-time result files and the published E031 folder.

    .venv/bin/python -m benchmarks.ingest [--files 50] [--size 1000] [--bins 18] [--rounds 1]
                                          [--e031 ../shared/data/ainerd_e031] [--json out.json]

Generates ``--files`` result files in the current APS layout (``--bins`` ROI labels of
``--size`` x ``--size`` float32 upper-triangle maps each) in a temporary folder, then times
``python -m ainerd_core ingest aps`` on them in-process (scan + read + symmetrise + area-average
to 256 + normalise + write), and ``ingest published`` on the E031 folder if it is there.
The files were just written, so they are read from the page cache: this measures the CPU
cost of ingestion, not the disk. Wall time on a shared machine includes time other
processes took from us, so the process CPU time is printed too. Also reports peak resident
memory, to show maps are streamed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from ainerd_core.cli import main
from ainerd_core.testing import c2_full, write_aps_nexus
from benchmarks.common import peak_rss_mib, write_json


def make_files(folder: Path, n_files: int, size: int, bins: int) -> float:
    phis = np.arange(10.0, 360.0, 360.0 / bins)
    maps = {k + 1: c2_full(size, 5.0 + k, seed=k) for k in range(bins)}  # reused: content is irrelevant
    t0 = time.perf_counter()
    for i in range(n_files):
        write_aps_nexus(folder / f"E031_{i:05d}.h5", size=size, q_values=[0.005], phi_values=phis,
                        start_time=f"2024-03-01T10:{i // 60:02d}:{i % 60:02d}", maps=maps)
    return time.perf_counter() - t0


def timed(argv) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one in-process ingest."""
    t0, c0 = time.perf_counter(), time.process_time()
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"ingest failed: {argv}")
    return time.perf_counter() - t0, time.process_time() - c0


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--bins", type=int, default=18)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--diagonal-fix", action="store_true")
    ap.add_argument("--e031", type=Path, default=REPO.parent / "shared" / "data" / "ainerd_e031")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    report = {}
    tmp = Path(tempfile.mkdtemp(prefix="ainerd-ingest-bench-"))
    try:
        gen = make_files(tmp, args.files, args.size, args.bins)
        n_maps = args.files * args.bins
        gb = sum(p.stat().st_size for p in tmp.glob("*.h5")) / 1e9
        print(f"generated {args.files} files x {args.bins} maps of {args.size} x {args.size}"
              f" ({gb:.2f} GB) in {gen:.1f} s")
        argv = ["ingest", "aps", str(tmp), "--out", str(tmp / "out.h5"), "--cessation-time",
                "2024-03-01T09:59:55"] + (["--diagonal-fix"] if args.diagonal_fix else [])
        os.sync()  # let the generated files' write-back finish before timing
        runs = [timed(argv) for _ in range(args.rounds)]
        sec = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"ingest aps: {n_maps} maps in {sec:.2f} s wall = {n_maps / sec:.1f} maps/s"
              f" ({args.files / sec:.2f} files/s, {gb / sec:.2f} GB/s of input); CPU {cpu:.2f} s"
              f" = {1e3 * cpu / n_maps:.1f} ms per map")
        report["aps"] = dict(files=args.files, bins=args.bins, size=args.size, maps=n_maps, input_gb=gb,
                             wall_s=[r[0] for r in runs], cpu_s=[r[1] for r in runs], maps_per_s=n_maps / sec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if (args.e031 / "latents_64.npy").exists():
        with tempfile.TemporaryDirectory() as d:
            runs = [timed(["ingest", "published", str(args.e031), "--out", f"{d}/e031.h5"])
                    for _ in range(max(args.rounds, 3))]
        sec = statistics.median(r[0] for r in runs)
        print(f"ingest published (E031): 900 rows in {sec:.3f} s wall = {900 / sec:.0f} rows/s")
        report["published"] = dict(rows=900, wall_s=[r[0] for r in runs], rows_per_s=900 / sec)
    else:
        print(f"E031 folder not found at {args.e031}; skipped")

    peak_mb = peak_rss_mib()
    print(f"peak resident memory of this process: {peak_mb:.0f} MB")
    report["peak_rss_mb"] = peak_mb
    write_json(args.json, report)


if __name__ == "__main__":
    main_bench()
