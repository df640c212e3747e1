"""Encoder throughput on CPU: our inference path vs a plain eager NCHW float32 PyTorch encoder.

    .venv/bin/python -m benchmarks.encode [--maps 64] [--rounds 3] [--compile] [--json out.json]

Everything is measured in ONE run, in interleaved rounds (median reported), so that load from
other processes on a shared machine hits every variant alike; ratios are what matter.

* ``matmul peak``: torch.mm of large float32 matrices (2048^2 and 4096^2, best of a few), the
  machine's measured dense-float32 peak for this process's thread count.
* ``plain_b64`` (the baseline): the published ``nn.Sequential`` encoder + bottleneck, eager,
  NCHW, float32, ``torch.no_grad()``, batches of 64 maps (the default encode batch size).
* ablations, each vs the baseline: ``plain_b8`` (batch size alone), ``plain_inference_mode``,
  ``plain_cl_b8`` (channels-last alone), ``ours_eager_noc1`` (channels-last + ReLU/MaxPool swap,
  without the first-conv rewrite or fusion, chunks of 8), ``ours_eager_b{8,16,32,64}`` (the eager
  fast path at other chunk sizes), ``ours_eager`` / ``ours_unfused`` / ``ours_jit`` /
  ``ours_1thread`` (``encode(..., bulk=False)``: the eager fast path; without oneDNN's fused
  conv+ReLU; as a frozen TorchScript graph; on one thread), ``jit_plain_b8`` (TorchScript
  freeze of the plain network, built here), ``ours_bf16`` (bfloat16 autocast; NOT the
  default because it changes latents, max abs error printed), ``compiled_b8`` (torch.compile of
  the plain network, with --compile; its compile time is printed).
* ``ours``: ``ainerd_core.model.encode(model, maps, batch_size=64)``, the public function the CLI
  uses, numpy in and out: by default (``BULK_MIN_MAPS`` = 1) the frozen TorchScript graph of
  the plain encoder in chunks of 8, built once per set of weights (the build time is printed
  and not timed). ``ours_single``: the same called once per map (an uploaded target).
* ``ours_dataset``: ``ours`` streamed from a dataset file (HDF5 reads included).
* ``ours_bulk``: ``model.encode(x, bulk=True)`` on the tensor (no numpy conversion).

GFLOP/s are counted analytically (``ainerd_core.model.encoder_flops``: 2 x 9 x C_in x C_out x
H x W per 3x3 conv, plus the Linear layer) and compared with the matmul peak.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ainerd_core import model as M

PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ainerd_e031" / "published_checkpoint_state_dict.pth"


def matmul_peak(threads: int) -> float:
    best = 0.0
    for n in (2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def get_model() -> M.Autoencoder:
    if PUBLISHED.exists():
        return M.load_model(PUBLISHED, device="cpu")
    if M.DEMO_WEIGHTS.exists():
        return M.load_model(None, device="cpu")
    torch.manual_seed(0)
    return M.Autoencoder(64).eval()


def chunked(fn, x, chunk):
    return torch.cat([fn(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=64, help="maps per timed call (default 64)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    maps_np = rng.random((args.maps, 256, 256), dtype=np.float32)
    x = torch.from_numpy(maps_np).unsqueeze(1)
    model = get_model()
    plain = M.Autoencoder(model.latent_size)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    plain.fast = False
    plain_cl = M.Autoencoder(model.latent_size)
    plain_cl.load_state_dict(model.state_dict())
    plain_cl = plain_cl.eval().to(memory_format=torch.channels_last)
    plain_cl.fast = False

    def plain_encode(m, xx):
        return m.bottleneck[:3](m.encoder(xx))

    with torch.no_grad():
        ref = plain_encode(plain, x)

    # ablation helpers ---------------------------------------------------------------
    def eager_fast(xx, chunk=M.CPU_CHUNK):
        return chunked(lambda p: M._fast_encode(model, p), xx, chunk)

    e = model.encoder

    def noc1(xx):
        y = F.conv2d(xx.contiguous(memory_format=torch.channels_last), e[0].weight, e[0].bias, padding=1).relu_()
        for ca, cb in ((None, 3), (7, 10), (14, 17)):
            if ca is not None:
                y = F.conv2d(y, e[ca].weight, e[ca].bias, padding=1).relu_()
            y = F.max_pool2d(F.conv2d(y, e[cb].weight, e[cb].bias, padding=1), 4).relu_()
        return F.relu(F.linear(y.contiguous().flatten(1), model.bottleneck[1].weight, model.bottleneck[1].bias))

    def flag(name, value, fn):
        old = getattr(model, name)
        setattr(model, name, value)
        try:
            return fn()
        finally:
            setattr(model, name, old)

    class PlainEnc(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, xx):
            return self.m.bottleneck[:3](self.m.encoder(xx))

    t0 = time.perf_counter()
    with torch.no_grad():
        jit_plain = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(PlainEnc(plain).eval(), x[:8])))
        jit_plain(x[:8])
    jit_time = time.perf_counter() - t0

    def bf16(xx):
        model.precision = "bf16"
        try:
            return model.encode(xx)
        finally:
            model.precision = "fp32"

    tmpdir = tempfile.TemporaryDirectory()
    from ainerd_core.dataset import write_dataset

    ds_path = write_dataset(Path(tmpdir.name) / "bench.h5", maps=maps_np,
                            meta={"time": np.arange(args.maps, dtype=float)})
    from ainerd_core.dataset import open_dataset

    variants = {
        "plain_b64": (torch.no_grad, lambda: plain_encode(plain, x)),
        "plain_b8": (torch.no_grad, lambda: chunked(lambda p: plain_encode(plain, p), x, 8)),
        "plain_inference_mode": (torch.inference_mode, lambda: plain_encode(plain, x)),
        "plain_cl_b8": (torch.inference_mode, lambda: chunked(
            lambda p: plain_encode(plain_cl, p.contiguous(memory_format=torch.channels_last)), x, 8)),
        "ours_eager_noc1": (torch.inference_mode, lambda: chunked(noc1, x, 8)),
        "ours_eager_b8": (torch.inference_mode, lambda: eager_fast(x, 8)),
        "ours_eager_b16": (torch.inference_mode, lambda: eager_fast(x, 16)),
        "ours_eager_b32": (torch.inference_mode, lambda: eager_fast(x, 32)),
        "ours_eager_b64": (torch.inference_mode, lambda: eager_fast(x, 64)),
        "jit_plain_b8": (torch.no_grad, lambda: chunked(jit_plain, x, 8)),
        "ours_bf16": (torch.inference_mode, lambda: bf16(x)),
        "ours_1thread": (None, lambda: M.encode(model, maps_np, batch_size=64, bulk=False)),
        "ours_eager": (None, lambda: M.encode(model, maps_np, batch_size=64, bulk=False)),
        "ours": (None, lambda: M.encode(model, maps_np, batch_size=64)),
        "ours_single": (None, lambda: np.concatenate([M.encode(model, maps_np[i:i + 1]) for i in range(len(maps_np))])),
        "ours_dataset": (None, None),
        "ours_bulk": (torch.inference_mode, lambda: model.encode(x, bulk=True)),
    }
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.encode(x[:8], bulk=True)          # builds the bulk graph once (not timed below)
    bulk_build = time.perf_counter() - t0
    variants["ours_unfused"] = (None, lambda: flag("fuse", False, lambda: M.encode(model, maps_np, batch_size=64,
                                                                                    bulk=False)))
    variants["ours_jit"] = (None, lambda: flag("jit", True, lambda: M.encode(model, maps_np, batch_size=64, bulk=False)))
    compiled = None
    compile_time = None
    if args.compile:
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(PlainEnc(plain).eval())
            with torch.inference_mode():
                compiled(x[:8])
            compile_time = time.perf_counter() - t0
            variants["compiled_b8"] = (torch.inference_mode, lambda: chunked(compiled, x, 8))
        except Exception as exc:  # no compiler, or inductor failure
            print(f"torch.compile unavailable: {type(exc).__name__}: {str(exc).splitlines()[0]}")

    def call(name):
        ctx, fn = variants[name]
        if name == "ours_dataset":
            with open_dataset(ds_path) as ds:
                return torch.from_numpy(M.encode(model, ds, batch_size=64))
        if name == "ours_1thread":
            torch.set_num_threads(1)
            try:
                return torch.from_numpy(fn())
            finally:
                torch.set_num_threads(threads)
        if ctx is None:
            return torch.from_numpy(fn())
        with ctx():
            return fn()

    # warm-up and correctness against the plain baseline
    errors = {}
    for name in variants:
        out = call(name)
        errors[name] = float((out.float() - ref).abs().max())
    peak = matmul_peak(threads)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            t0 = time.perf_counter()
            call(name)
            times[name].append(args.maps / (time.perf_counter() - t0))
    peak = max(peak, matmul_peak(threads))
    flops = M.encoder_flops(model.latent_size)
    base = statistics.median(times["plain_b64"])
    res = {"threads": threads, "maps": args.maps, "rounds": args.rounds, "encoder_flops_per_map": flops,
           "matmul_peak_gflops": peak, "jit_freeze_seconds": jit_time, "compile_seconds": compile_time,
           "cpu_flags": _cpu_flags(), "variants": {}}
    print(f"encoder, {threads} threads, {args.maps} maps per call, median of {args.rounds} rounds; "
          f"{flops / 1e6:.0f} MFLOP per map; torch.mm peak {peak:.0f} GFLOP/s")
    print(f"  {'variant':22s} {'maps/s':>8s} {'x plain':>8s} {'GFLOP/s':>8s} {'% peak':>7s} {'max|err|':>9s}")
    for name in variants:
        med = statistics.median(times[name])
        g = med * flops / 1e9
        res["variants"][name] = {"maps_per_s": med, "ratio": med / base, "gflops": g, "pct_peak": 100 * g / peak,
                                 "max_abs_err_vs_plain": errors[name], "rounds": times[name]}
        print(f"  {name:22s} {med:8.1f} {med / base:8.2f} {g:8.1f} {100 * g / peak:6.0f}% {errors[name]:9.1e}")
    print(f"  TorchScript freeze+optimize: {jit_time:.1f} s" +
          (f"; torch.compile: {compile_time:.1f} s" if compile_time is not None else ""))
    print(f"  default graph build (once per set of weights and process): {bulk_build:.1f} s")
    for name, label in (("ours_eager", "ours_eager (bulk=False)"), ("ours_single", "ours_single (one map a call)"),
                        ("ours", "ours (default encode)")):
        v = res["variants"][name]
        print(f"RESULT {label} {v['maps_per_s']:.1f} maps/s vs plain {base:.1f} maps/s: x{v['ratio']:.2f}; "
              f"{v['gflops']:.0f} GFLOP/s = {v['pct_peak']:.0f} % of the torch.mm peak")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    tmpdir.cleanup()
    return 0


def _cpu_flags() -> list[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512_bf16", "amx", "avx512f")))
    except OSError:
        pass
    return []


if __name__ == "__main__":
    sys.exit(main())
