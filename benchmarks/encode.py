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


def _plain_copies(model: M.Autoencoder) -> tuple[M.Autoencoder, M.Autoencoder]:
    """The baseline network: ``model``'s weights in the plain eager Autoencoder (fast path off),
    once in the default NCHW layout and once channels-last."""
    copies = []
    for layout in (torch.contiguous_format, torch.channels_last):
        plain = M.Autoencoder(model.latent_size)
        plain.load_state_dict(model.state_dict())
        plain = plain.eval().to(memory_format=layout)
        plain.fast = False
        copies.append(plain)
    return copies[0], copies[1]


def plain_encode(m: M.Autoencoder, xx: torch.Tensor) -> torch.Tensor:
    """The published encoder + bottleneck, eager: (B, 1, 256, 256) -> (B, latent)."""
    return m.bottleneck[:3](m.encoder(xx))


class PlainEncoder(torch.nn.Module):
    """``plain_encode`` as a module, for tracing and torch.compile."""

    def __init__(self, m: M.Autoencoder):
        super().__init__()
        self.m = m

    def forward(self, xx):
        return plain_encode(self.m, xx)


def _no_c1(model: M.Autoencoder):
    """Channels-last + ReLU/MaxPool swap without the first-conv rewrite or fusion (an ablation)."""
    e = model.encoder

    def encode(xx):
        y = F.conv2d(xx.contiguous(memory_format=torch.channels_last), e[0].weight, e[0].bias, padding=1).relu_()
        for ca, cb in ((None, 3), (7, 10), (14, 17)):
            if ca is not None:
                y = F.conv2d(y, e[ca].weight, e[ca].bias, padding=1).relu_()
            y = F.max_pool2d(F.conv2d(y, e[cb].weight, e[cb].bias, padding=1), 4).relu_()
        return F.relu(F.linear(y.contiguous().flatten(1), model.bottleneck[1].weight, model.bottleneck[1].bias))
    return encode


def _with_flag(model: M.Autoencoder, name: str, value, fn):
    """Call ``fn()`` with ``model.<name>`` set to ``value``, restored afterwards."""
    old = getattr(model, name)
    setattr(model, name, value)
    try:
        return fn()
    finally:
        setattr(model, name, old)


def _bf16(model: M.Autoencoder, xx: torch.Tensor) -> torch.Tensor:
    return _with_flag(model, "precision", "bf16", lambda: model.encode(xx))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _variants(model, plain, plain_cl, x, maps_np, compile_: bool) -> tuple[dict, dict]:
    """Every timed variant as name -> (context manager or None, callable), and the one-off set-up
    times in seconds (TorchScript freeze, the default path's graph build, torch.compile)."""
    setup = {"compile_seconds": None}
    with torch.no_grad():
        jit_plain = None

        def build_jit():
            nonlocal jit_plain
            jit_plain = torch.jit.optimize_for_inference(
                torch.jit.freeze(torch.jit.trace(PlainEncoder(plain).eval(), x[:8])))
            jit_plain(x[:8])
        setup["jit_freeze_seconds"] = _timed(build_jit)

    def eager_fast(chunk):
        return chunked(lambda p: M._fast_encode(model, p), x, chunk)

    def default_encode(**kw):
        return M.encode(model, maps_np, batch_size=64, **kw)

    variants = {
        "plain_b64": (torch.no_grad, lambda: plain_encode(plain, x)),
        "plain_b8": (torch.no_grad, lambda: chunked(lambda p: plain_encode(plain, p), x, 8)),
        "plain_inference_mode": (torch.inference_mode, lambda: plain_encode(plain, x)),
        "plain_cl_b8": (torch.inference_mode, lambda: chunked(
            lambda p: plain_encode(plain_cl, p.contiguous(memory_format=torch.channels_last)), x, 8)),
        "ours_eager_noc1": (torch.inference_mode, lambda: chunked(_no_c1(model), x, 8)),
        **{f"ours_eager_b{c}": (torch.inference_mode, lambda c=c: eager_fast(c)) for c in (8, 16, 32, 64)},
        "jit_plain_b8": (torch.no_grad, lambda: chunked(jit_plain, x, 8)),
        "ours_bf16": (torch.inference_mode, lambda: _bf16(model, x)),
        "ours_1thread": (None, lambda: default_encode(bulk=False)),
        "ours_eager": (None, lambda: default_encode(bulk=False)),
        "ours": (None, default_encode),
        "ours_single": (None, lambda: np.concatenate([M.encode(model, maps_np[i:i + 1]) for i in range(len(maps_np))])),
        "ours_dataset": (None, None),
        "ours_bulk": (torch.inference_mode, lambda: model.encode(x, bulk=True)),
        "ours_unfused": (None, lambda: _with_flag(model, "fuse", False, lambda: default_encode(bulk=False))),
        "ours_jit": (None, lambda: _with_flag(model, "jit", True, lambda: default_encode(bulk=False))),
    }
    with torch.inference_mode():
        # builds the bulk graph once (not timed below)
        setup["bulk_build_seconds"] = _timed(lambda: model.encode(x[:8], bulk=True))
    if compile_:
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(PlainEncoder(plain).eval())
            with torch.inference_mode():
                compiled(x[:8])
            setup["compile_seconds"] = time.perf_counter() - t0
            variants["compiled_b8"] = (torch.inference_mode, lambda: chunked(compiled, x, 8))
        except Exception as exc:  # no compiler, or inductor failure
            print(f"torch.compile unavailable: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return variants, setup


def _caller(model, variants: dict, ds_path: Path, threads: int):
    """``call(name)`` runs one variant and returns its latents as a tensor."""
    from ainerd_core.dataset import open_dataset

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
    return call


def _measure(variants: dict, call, ref: torch.Tensor, n_maps: int, rounds: int) -> tuple[dict, dict]:
    """Warm-up with the max abs error against the plain latents, then ``rounds`` interleaved
    rounds; returns (errors, maps/s per round) by variant."""
    errors = {name: float((call(name).float() - ref).abs().max()) for name in variants}
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name in variants:
            times[name].append(n_maps / _timed(lambda: call(name)))
    return errors, times


def _report(res: dict, base: float, setup: dict) -> None:
    """Print the table and the RESULT lines of ``res`` (ratios against ``base`` maps/s)."""
    flops, peak = res["encoder_flops_per_map"], res["matmul_peak_gflops"]
    print(f"encoder, {res['threads']} threads, {res['maps']} maps per call, median of {res['rounds']} rounds; "
          f"{flops / 1e6:.0f} MFLOP per map; torch.mm peak {peak:.0f} GFLOP/s")
    print(f"  {'variant':22s} {'maps/s':>8s} {'x plain':>8s} {'GFLOP/s':>8s} {'% peak':>7s} {'max|err|':>9s}")
    for name, v in res["variants"].items():
        print(f"  {name:22s} {v['maps_per_s']:8.1f} {v['ratio']:8.2f} {v['gflops']:8.1f} {v['pct_peak']:6.0f}% "
              f"{v['max_abs_err_vs_plain']:9.1e}")
    print(f"  TorchScript freeze+optimize: {setup['jit_freeze_seconds']:.1f} s" +
          (f"; torch.compile: {setup['compile_seconds']:.1f} s" if setup["compile_seconds"] is not None else ""))
    print(f"  default graph build (once per set of weights and process): {setup['bulk_build_seconds']:.1f} s")
    for name, label in (("ours_eager", "ours_eager (bulk=False)"), ("ours_single", "ours_single (one map a call)"),
                        ("ours", "ours (default encode)")):
        v = res["variants"][name]
        print(f"RESULT {label} {v['maps_per_s']:.1f} maps/s vs plain {base:.1f} maps/s: x{v['ratio']:.2f}; "
              f"{v['gflops']:.0f} GFLOP/s = {v['pct_peak']:.0f} % of the torch.mm peak")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=64, help="maps per timed call (default 64)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    threads = torch.get_num_threads()
    maps_np = np.random.default_rng(0).random((args.maps, 256, 256), dtype=np.float32)
    x = torch.from_numpy(maps_np).unsqueeze(1)
    model = get_model()
    plain, plain_cl = _plain_copies(model)
    with torch.no_grad():
        ref = plain_encode(plain, x)
    variants, setup = _variants(model, plain, plain_cl, x, maps_np, args.compile)

    from ainerd_core.dataset import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        ds_path = write_dataset(Path(tmp) / "bench.h5", maps=maps_np, meta={"time": np.arange(args.maps, dtype=float)})
        call = _caller(model, variants, ds_path, threads)
        peak = matmul_peak(threads)
        errors, times = _measure(variants, call, ref, args.maps, args.rounds)
    peak = max(peak, matmul_peak(threads))
    flops = M.encoder_flops(model.latent_size)
    base = statistics.median(times["plain_b64"])
    res = {"threads": threads, "maps": args.maps, "rounds": args.rounds, "encoder_flops_per_map": flops,
           "matmul_peak_gflops": peak, "jit_freeze_seconds": setup["jit_freeze_seconds"],
           "compile_seconds": setup["compile_seconds"], "cpu_flags": _cpu_flags(), "variants": {}}
    for name in variants:
        med = statistics.median(times[name])
        g = med * flops / 1e9
        res["variants"][name] = {"maps_per_s": med, "ratio": med / base, "gflops": g, "pct_peak": 100 * g / peak,
                                 "max_abs_err_vs_plain": errors[name], "rounds": times[name]}
    _report(res, base, setup)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
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
