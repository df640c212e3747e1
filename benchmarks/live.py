"""Live mode: latency from "file complete" to "visible in the dashboard's data", and the
watcher's memory over a long run.

    nice -n 10 .venv/bin/python -m benchmarks.live [--steady 12] [--period 5] [--burst 50]
        [--size 1000] [--bins 18] [--soak 360] [--soak-size 256] [--reference REF.h5]
        [--no-baseline] [--json out.json]

1. A real watcher (``python -m ainerd_core watch``, default options: poll 0.25 s, stable 1 s)
   follows a folder. A writer drops result files of ``--bins`` maps of ``--size`` x ``--size``
   (the beamline's 18 x 1000 x 1000: 72 MB each) the way boost_corr does (``*.hdf.temp``, then a
   rename): ``--steady`` files one every ``--period`` s, then a burst of ``--burst`` files as
   fast as they can be written. "Complete" = the moment the rename returned; "visible" = the
   moment a :class:`dashboard.catalog.Catalog` (what the explorer serves from, re-scanning every
   1 s) polled every 0.1 s in this process lists the file in the dataset's ledger and its time
   in ``tables/times``. The browser adds at most one poll of the live interval (2 s) on top.
2. Soak: a second watcher takes ``--soak`` files (default 360 = 3 h at one file per 30 s; the
   files' start times are 30 s apart) of ``--soak-size`` maps, written as fast as it takes
   them; its resident memory (VmRSS) is sampled against the number of files committed.
3. Baseline, measured in the same run: today's path without live mode, ``ingest aps`` of the
   steady files plus ``precompute`` (fast statistics options), after which a reload shows them.

The reference is a simulated experiment of 8 times x 18 sectors (144 maps), precomputed in the run,
unless ``--reference`` is given. Wall times on a shared 2-core machine include time other
processes took from us.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from ainerd_core.testing import c2_full, write_aps_nexus
from benchmarks.common import write_json

PY = sys.executable


def start_of(i: int) -> str:
    t = np.datetime64("2024-03-01T10:00:00") + np.timedelta64(30 * i, "s")
    return str(t)


class Writer:
    def __init__(self, folder: Path, size: int, bins: int):
        self.folder = folder
        self.phis = np.arange(10.0, 360.0, 360.0 / bins)[:bins]
        self.maps = {k + 1: c2_full(size, 3.0 + 2 * k, seed=k) for k in range(bins)}
        self.complete: dict[str, float] = {}

    def drop(self, i: int) -> str:
        name = f"bench_{i:05d}_results.hdf"
        tmp = self.folder / (name + ".temp")
        write_aps_nexus(tmp, size=next(iter(self.maps.values())).shape[0], q_values=(0.004,), phi_values=self.phis,
                        start_time=start_of(i), maps=self.maps)
        os.rename(tmp, self.folder / name)
        self.complete[name] = time.time()
        return name


class Visibility(threading.Thread):
    """Polls the explorer's catalog and records when each file became visible."""

    def __init__(self, data_dir: Path, dataset_id: str):
        super().__init__(daemon=True)
        from dashboard.catalog import Catalog

        self.catalog = Catalog(data_dir, rescan_s=1.0)
        self.id = dataset_id
        self.visible: dict[str, float] = {}
        self.stop = threading.Event()
        self.error = None

    def run(self):
        last = None
        while not self.stop.is_set():
            try:
                e = self.catalog.get(self.id)
                if e is not None and e.version != last:
                    last = e.version
                    ledger, times = e.ledger, e.result("tables/times")
                    now = time.time()
                    if ledger is not None and times is not None:
                        for f, t in zip(ledger["file"], ledger["time_s"]):
                            if np.any(np.isclose(times, t)):
                                self.visible.setdefault(str(f), now)
            except Exception as exc:  # noqa: BLE001 - report, keep measuring
                self.error = repr(exc)
            time.sleep(0.1)


class Watch:
    def __init__(self, folder: Path, out: Path, ref: Path, log: Path):
        self.log = log
        self.proc = subprocess.Popen([PY, "-m", "ainerd_core", "watch", str(folder), "--out", str(out),
                                      "--reference", str(ref), "--cessation-time", "first"],
                                     cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        self.rss: list[tuple[float, int, float]] = []  # (time, files committed, RSS MB)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()

    def committed(self) -> int:
        return len(re.findall(r"maps at t = ", self.log.read_text(errors="replace")))

    def _sample(self):
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                status = Path(f"/proc/{self.proc.pid}/status").read_text()
                rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
                self.rss.append((time.time(), self.committed(), rss))
            except (OSError, AttributeError):
                pass
            time.sleep(0.5)

    def timings(self) -> tuple[list[float], list[float]]:
        text = self.log.read_text(errors="replace")
        comp = [float(x) for x in re.findall(r"compute ([\d.]+) s", text)]
        comm = [float(x) for x in re.findall(r"commit ([\d.]+) s", text)]
        self.cpu = [float(x) for x in re.findall(r"= ([\d.]+) CPU s", text)]
        self.write = [float(x) for x in re.findall(r"write ([\d.]+) s", text)]
        return comp, comm

    def wait_ready(self, timeout=300):
        deadline = time.time() + timeout
        while "watching" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("watcher did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.2)

    def stop(self):
        self._stop.set()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def wait_visible(vis: Visibility, names, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not all(n in vis.visible for n in names):
        time.sleep(0.2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steady", type=int, default=12)
    p.add_argument("--period", type=float, default=5.0, help="seconds between steady files (beamline: ~30-57)")
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--bins", type=int, default=18)
    p.add_argument("--soak", type=int, default=360)
    p.add_argument("--soak-size", type=int, default=256)
    p.add_argument("--reference", type=Path, default=None)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ainerd-live-bench-"))
    result: dict[str, object] = {"size": args.size, "bins": args.bins, "period_s": args.period}
    try:
        ref = _reference(work) if args.reference is None else args.reference
        data = work / "data"
        data.mkdir()
        beam = work / "beam"
        beam.mkdir()
        steady = _steady_and_burst(args, work, beam, data, ref, result)
        if not args.no_baseline:
            _baseline(beam, steady, result)
        for f in steady:
            (beam / f).unlink(missing_ok=True)
        if args.soak:
            _soak(args, work, data, ref, result)
    finally:
        write_json(args.json, result)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _reference(work: Path) -> Path:
    """The tests' reference: 8 times x 18 sectors, small precompute."""
    from ainerd_core.precompute import precompute
    from ainerd_core.simulate import SimConfig, simulate

    ref = work / "reference.h5"
    simulate(ref, SimConfig(times=8, sectors=18, seed=0))
    precompute(ref, seed=0, neighbours=30, n_init=3, n_boot=5, targets=20, verbose=False)
    return ref


def _steady_and_burst(args, work: Path, beam: Path, data: Path, ref: Path, result: dict) -> list[str]:
    """Part 1: steady files one per ``--period`` s, then a burst; latency from a file being
    complete to the dashboard's reader seeing its maps. Returns the steady files' names."""
    writer = Writer(beam, args.size, args.bins)
    w = Watch(beam, data / "live.h5", ref, work / "watch.log")
    w.wait_ready()
    vis = Visibility(data, "live")
    vis.start()
    steady = []
    t_next = time.time()
    for i in range(args.steady):
        time.sleep(max(0.0, t_next - time.time()))
        t_next = time.time() + args.period
        steady.append(writer.drop(i))
    wait_visible(vis, steady, 120)
    burst = []
    t_burst = time.time()
    for i in range(args.steady, args.steady + args.burst):
        burst.append(writer.drop(i))
    t_written = time.time() - t_burst
    wait_visible(vis, burst, 900)
    vis.stop.set()
    w.stop()
    lat_s = [vis.visible[n] - writer.complete[n] for n in steady if n in vis.visible]
    lat_b = [vis.visible[n] - writer.complete[n] for n in burst if n in vis.visible]
    comp, comm = w.timings()
    result.update(
        steady_files=len(steady), steady_visible=len(lat_s), steady_p50_s=pct(lat_s, 50), steady_p95_s=pct(lat_s, 95),
        steady_max_s=max(lat_s) if lat_s else float("nan"),
        burst_files=len(burst), burst_visible=len(lat_b), burst_p50_s=pct(lat_b, 50), burst_p95_s=pct(lat_b, 95),
        burst_write_s=t_written, burst_last_visible_after_s=(max(vis.visible[n] for n in burst if n in vis.visible)
                                                             - t_burst) if lat_b else float("nan"),
        compute_p50_s=pct(comp, 50), compute_cpu_p50_s=pct(w.cpu, 50), commit_p50_s=pct(comm, 50), write_p50_s=pct(w.write, 50),
        load_average=os.getloadavg(),
        rss_mb_first=w.rss[0][2] if w.rss else float("nan"), rss_mb_last=w.rss[-1][2] if w.rss else float("nan"),
        reader_error=vis.error)
    print(f"file size {args.bins} maps of {args.size} x {args.size}; steady: one file per {args.period:g} s")
    print(f"steady  {len(lat_s)}/{len(steady)} visible: p50 {result['steady_p50_s']:.2f} s, "
          f"p95 {result['steady_p95_s']:.2f} s, max {result['steady_max_s']:.2f} s")
    print(f"burst   {len(lat_b)}/{len(burst)} visible (written in {t_written:.1f} s): p50 {result['burst_p50_s']:.2f} s,"
          f" p95 {result['burst_p95_s']:.2f} s; last visible {result['burst_last_visible_after_s']:.1f} s after the "
          f"burst began")
    print(f"watcher per file: compute p50 {result['compute_p50_s']:.2f} s wall, {result['compute_cpu_p50_s']:.2f} "
          f"CPU s (read + resample + encode + dynamics), commit p50 {result['commit_p50_s']:.3f} s (assign, "
          f"novelty, tables; segment write {result['write_p50_s']:.3f} s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for f in burst:
        (beam / f).unlink(missing_ok=True)  # disk: the burst's files are not needed any more
    return steady


def _baseline(beam: Path, steady: list[str], result: dict) -> None:
    """Part 3, the plain baseline: ingest the steady files and precompute them, no live mode."""
    base = beam.parent / "baseline.h5"
    t0 = time.perf_counter()
    subprocess.run([PY, "-m", "ainerd_core", "ingest", "aps", *[str(beam / f) for f in steady], "--out", str(base),
                    "--cessation-time", "first"], cwd=REPO, check=True, capture_output=True)
    t1 = time.perf_counter()
    subprocess.run([PY, "-m", "ainerd_core", "precompute", str(base), "--quiet", "--neighbours", "20",
                    "--n-init", "3", "--bootstrap", "5", "--targets", "20"], cwd=REPO, check=True,
                   capture_output=True)
    t2 = time.perf_counter()
    result.update(baseline_ingest_s=t1 - t0, baseline_precompute_s=t2 - t1, baseline_total_s=t2 - t0)
    print(f"baseline (no live mode): ingest {t1 - t0:.1f} s + precompute {t2 - t1:.1f} s = {t2 - t0:.1f} s for "
          f"{len(steady)} files; live p50 / baseline = {result['steady_p50_s'] / (t2 - t0):.3f}, "
          f"live p95 / baseline = {result['steady_p95_s'] / (t2 - t0):.3f}")


def _soak(args, work: Path, data: Path, ref: Path, result: dict) -> None:
    """Part 2, the soak: ``--soak`` files dropped at once; the watcher's resident memory as it goes."""
    soak_dir = work / "soak"
    soak_dir.mkdir()
    sw = Writer(soak_dir, args.soak_size, args.bins)
    for i in range(args.soak):
        sw.drop(i)
    w2 = Watch(soak_dir, data / "soak.h5", ref, work / "soak.log")
    t0 = time.time()
    while w2.committed() < args.soak and w2.proc.poll() is None and time.time() - t0 < 3600:
        time.sleep(1.0)
    time.sleep(1.0)
    w2.stop()
    rows = [(n, r) for _, n, r in w2.rss if n > 0]
    checkpoints = {}
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        want = int(round(frac * args.soak))
        hit = [r for n, r in rows if n >= want]
        checkpoints[want] = hit[0] if hit else float("nan")
    n_arr = np.array([n for n, _ in rows], float)
    r_arr = np.array([r for _, r in rows], float)
    late = n_arr >= 0.25 * args.soak
    slope = float(np.polyfit(n_arr[late], r_arr[late], 1)[0] * 100) if late.sum() > 2 else float("nan")
    comp, _ = w2.timings()
    result.update(soak_files=w2.committed(), soak_rss_mb=checkpoints, soak_rss_slope_mb_per_100_files=slope,
                  soak_wall_s=time.time() - t0, soak_compute_p50_s=pct(comp, 50))
    print(f"soak: {w2.committed()} files of {args.bins} x {args.soak_size}^2 maps (= {args.soak * 30 / 3600:.1f} h "
          f"at one file per 30 s) in {result['soak_wall_s']:.0f} s; watcher RSS (MB) after N files: "
          + ", ".join(f"{n}: {r:.0f}" for n, r in checkpoints.items())
          + f"; slope after the first 25 %: {slope:+.2f} MB per 100 files")


if __name__ == "__main__":
    raise SystemExit(main())
