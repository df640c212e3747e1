"""Training throughput: our training step vs a plain eager NCHW float32 step, in the same run.

    .venv/bin/python -m benchmarks.train_step [--batch-size 16] [--rounds 3] [--steps 4] [--json out.json]

One training step = forward (dropout on) + MSE + backward + Adam step + CyclicLR step, on a batch
of diagonally shifted random maps, exactly as ``ainerd_core.train`` does. Variants, each timed in
interleaved rounds (median reported) so that load from other processes hits all alike:

* ``plain``        the ``nn.Sequential`` containers, NCHW float32 (``model.fast = False``)
* ``plain_cl``     the same with channels-last weights and inputs (ablation)
* ``ours``         the fast CPU path (``model.fast = True``): channels-last, first and last
                   convolutions as matrix products, ReLU after MaxPool
* ``ours_1thread`` the fast path on one thread (ablation)
* ``ours_torch_dropout`` the fast path with dropout + ReLU as torch ops instead of the fused
                   numba kernel (``ainerd_core.model.DROP_RELU_KERNEL = False``; ablation)

FLOPs are counted analytically: a training step costs ~3x the forward FLOPs (forward, plus the
gradients with respect to inputs and to weights), minus the input gradient of the first layer.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from ainerd_core import model as M
from ainerd_core.model import Autoencoder, _conv_flops, decoder_flops, encoder_flops
from ainerd_core.train import LR_BASE, LR_MAX, optimisation_step, random_diagonal_shift
from benchmarks.common import write_json


def make(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    m = Autoencoder(64)
    m.fast = variant.startswith("ours")
    if variant == "plain_cl":
        m = m.to(memory_format=torch.channels_last)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=LR_BASE)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, LR_BASE, LR_MAX, step_size_up=100, mode="triangular2",
                                              cycle_momentum=False)
    return m, opt, sched


def step(variant, m, opt, sched, x):
    M.DROP_RELU_KERNEL = False if variant == "ours_torch_dropout" else None
    if variant == "plain_cl":
        x = x.contiguous(memory_format=torch.channels_last)
    return float(optimisation_step(m, opt, sched, x))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((args.batch_size, 1, 256, 256), dtype=np.float32))
    x = random_diagonal_shift(x, rng)
    threads = torch.get_num_threads()
    variants = ["plain", "plain_cl", "ours", "ours_1thread", "ours_torch_dropout"]
    state = {v: make(v) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:  # warm-up (oneDNN primitive creation)
        torch.set_num_threads(1 if v.endswith("1thread") else threads)
        step(v, *state[v], x)
    for r in range(args.rounds):
        for v in variants:
            torch.set_num_threads(1 if v.endswith("1thread") else threads)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(v, *state[v], x)
            times[v].append(args.batch_size * args.steps / (time.perf_counter() - t0))
    torch.set_num_threads(threads)

    fwd = encoder_flops(64) + decoder_flops(64)
    step_flops = 3 * fwd - _conv_flops(1, 16, 256)  # no input gradient for the first conv
    res = {"batch_size": args.batch_size, "threads": threads, "rounds": args.rounds,
           "flops_per_map_step": step_flops, "maps_per_s": {}, "ratio_vs_plain": {}, "gflops": {}}
    base = statistics.median(times["plain"])
    print(f"training step, batch {args.batch_size}, {threads} threads, median of {args.rounds} rounds x "
          f"{args.steps} steps; {step_flops / 1e9:.2f} GFLOP per map per step")
    for v in variants:
        med = statistics.median(times[v])
        res["maps_per_s"][v] = med
        res["ratio_vs_plain"][v] = med / base
        res["gflops"][v] = med * step_flops / 1e9
        print(f"  {v:14s} {med:7.1f} maps/s  x{med / base:4.2f}  {med * step_flops / 1e9:6.1f} GFLOP/s  "
              f"(rounds: {', '.join(f'{t:.1f}' for t in times[v])})")
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
