"""Domain-randomised C2 maps for training and for benchmarks on *held-out settings*.

``python -m ainerd_core simulate-randomized --out eval.h5 --n 600 --split heldout --seed 1``

Two generators, mixed (share ``SIM_SHARE`` from the project simulator):

* an analytic generator (:func:`draw_params` + :func:`render`): every parameter drawn
  independently per map over wide ranges. c2(t1, t2) = baseline + contrast * H(tau) *
  exp(-2 |F(t1) - F(t2)|^gamma) [* shear term], F(t) = integral of the relaxation rate Gamma(t)
  (1/pixel), Gamma(t) = Gamma0 * exp(aging slope * (t/size - 1/2)) * (1 + burst), heterodyne
  fringes H = (1-h)^2 + h^2 + 2 h (1-h) cos(2 pi f tau); then a spiky diagonal (shot noise at
  lag 0), symmetric speckle noise, frame-flux fluctuations, optional blur (resampling), and the
  project's min-max normalisation.
* the project simulator (:class:`ainerd_core.simulate.Experiment`, public API only), its run-level
  parameters widened (aging exponent, rate, heterodyne fraction, velocity, contrast, ROI pixels)
  and one random (time, sector) rendered per map.

Held-out settings (``split="heldout"``): parameter ranges that the training split never draws
(:data:`HELD_OUT`): stretching gamma 1.5..2.0 (training 0.6..1.5), fringe frequencies
1/40..1/12 cycles/pixel (training below 1/40 or above 1/12), relaxation rates 10^-1.5..10^-1.2
per pixel (excluded from training), relative speckle noise 0.2..0.35 (training 0.01..0.2), and
fringes together with speeding-up dynamics (aging class 2), a combination training never shows.
Held-out maps are drawn from the analytic generator only (the simulator's own ranges are the
training ranges).

Ground truth per map (``/truth`` and :func:`truth_csv`): ``relaxation_rate`` (1/pixel, window
mean of Gamma), ``stretching``, ``aging`` (0 stationary, 1 slowing down, 2 speeding up),
``fringe_frequency`` (cycles/pixel, 0 = none), ``burst`` (0/1), ``contrast``, ``noise_rel``,
``generator`` (0 analytic, 1 simulator). Suggested relevance for ``benchmark-retrieval``:
:data:`RELEVANCE`. Every map is seeded by ``default_rng([seed, split code, index])``: results do
not depend on batching.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from .dataset import normalise_map
from .errors import InputError

SIZE = 256
SPLITS = {"train": 0, "val": 1, "heldout": 2, "indist": 3}
SIM_SHARE = 0.35      # share of training maps rendered by the project simulator
RELEVANCE = "relaxation_rate:ratio=1.8,aging:eq,fringe_frequency:abs=0.01,burst:eq"
LOG_RATE = (-2.6, -0.3)         # log10 Gamma0 (1/pixel): band widths ~2..400 pixels
HELD_OUT = {
    "log_rate": (-1.5, -1.2),
    "stretching": (1.5, 2.0),
    "fringe_frequency": (1 / 40, 1 / 12),
    "noise_rel": (0.2, 0.35),
}
TRAIN = {"stretching": (0.6, 1.5), "noise_rel": (0.01, 0.2)}
FRINGE_RANGE = (1 / 200, 1 / 4)
# parameters that the relevance rule (RELEVANCE) ignores: a training pair shares everything else
NUISANCES = ("stretching", "heterodyne", "shear", "contrast", "baseline", "noise_rel", "flux", "diagonal_spike", "blur")


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_params(rng: np.random.Generator, split: str = "train") -> dict:
    """One map's parameters for the analytic generator (see the module docstring)."""
    held = split == "heldout"
    if held:
        # one third in the held-out rate band, the rest anywhere: every map is still held out by
        # its stretching and noise
        if rng.random() < 1 / 3:
            log_rate = rng.uniform(*HELD_OUT["log_rate"])
        else:
            log_rate = rng.uniform(*LOG_RATE)
        gamma = rng.uniform(*HELD_OUT["stretching"])
        noise_rel = rng.uniform(*HELD_OUT["noise_rel"])
    else:
        lo, hi = HELD_OUT["log_rate"]
        width = (LOG_RATE[1] - LOG_RATE[0]) - (hi - lo)
        log_rate = LOG_RATE[0] + rng.uniform(0, width)
        if log_rate >= lo:
            log_rate += hi - lo
        gamma = rng.uniform(*TRAIN["stretching"])
        noise_rel = _loguniform(rng, *TRAIN["noise_rel"])
    aging = int(rng.integers(0, 3))
    slope = 0.0 if aging == 0 else (-1 if aging == 1 else 1) * math.log(rng.uniform(2.0, 6.0))
    fringes = rng.random() < 0.4
    if not held and aging == 2:
        fringes = False  # combination reserved for the held-out split
    f = 0.0
    if fringes:
        if held:
            f = _loguniform(rng, *HELD_OUT["fringe_frequency"])
        else:
            a, b = HELD_OUT["fringe_frequency"]
            # log-uniform over the training part (both sides of the held-out band)
            la, lb = math.log(FRINGE_RANGE[0]), math.log(FRINGE_RANGE[1])
            cut_lo, cut_hi = math.log(a), math.log(b)
            u = rng.uniform(0, (cut_lo - la) + (lb - cut_hi))
            f = math.exp(la + u if u < cut_lo - la else cut_hi + (u - (cut_lo - la)))
    burst = rng.random() < 0.3
    return {
        "log_rate": float(log_rate), "stretching": float(gamma), "aging": aging, "aging_slope": float(slope),
        "fringe_frequency": float(f), "heterodyne": float(rng.uniform(0.15, 0.5)) if fringes else 0.0,
        "fringe_phase_drift": float(rng.uniform(-0.3, 0.3)),
        "burst": int(burst), "burst_centre": float(rng.uniform(0.15, 0.85)), "burst_sigma": float(rng.uniform(0.04, 0.15)),
        "burst_gain": float(_loguniform(rng, 2.0, 10.0)) if burst else 0.0,
        "shear": float(_loguniform(rng, 0.002, 0.05)) if rng.random() < 0.25 else 0.0,
        "contrast": float(rng.uniform(0.05, 0.5)), "baseline": float(rng.uniform(0.98, 1.1)),
        "noise_rel": float(noise_rel), "flux": float(rng.uniform(0.0, 0.01)),
        "diagonal_spike": float(rng.uniform(0.0, 0.6)) if rng.random() < 0.5 else 0.0,
        "blur": float(rng.uniform(0.4, 1.5)) if rng.random() < 0.3 else 0.0,
    }


def redraw_nuisances(p: dict, rng: np.random.Generator) -> dict:
    """A copy of ``p`` with the :data:`NUISANCES` drawn anew from the training ranges.

    The copy keeps what :data:`RELEVANCE` compares (relaxation rate history incl. aging and
    bursts, fringe frequency), so it renders a second map of the *same* dynamics seen through
    other stretching, fringe visibility, shear, contrast, baseline, speckle noise, flux, diagonal
    spike and blur: a positive pair for the self-supervised objective (:mod:`ainerd_core.ssl`).
    """
    fresh = draw_params(rng, "train")
    q = dict(p)
    for key in NUISANCES:
        q[key] = fresh[key]
    # ``fresh`` has no fringe visibility when it drew no fringes: draw one for a fringed map
    q["heterodyne"] = float(rng.uniform(0.15, 0.5)) if p["fringe_frequency"] > 0 else 0.0
    return q


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="nearest")


def render(p: dict, rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, dict]:
    """(normalised (size, size) float32 map, truth dict) of one parameter set."""
    t = (np.arange(size) + 0.5) / size                    # window fraction
    gamma_t = 10 ** p["log_rate"] * np.exp(p["aging_slope"] * (t - 0.5))
    if p["burst"]:
        gamma_t = gamma_t * (1 + p["burst_gain"] * np.exp(-0.5 * ((t - p["burst_centre"]) / p["burst_sigma"]) ** 2))
    F = np.cumsum(gamma_t) - 0.5 * gamma_t                # integral at pixel centres (pixel units)
    I = np.abs(F[:, None] - F[None, :]).astype(np.float32)
    g = np.exp(-2.0 * np.power(I, np.float32(p["stretching"])))
    lag = np.abs(np.arange(size)[:, None] - np.arange(size)[None, :]).astype(np.float32)
    if p["fringe_frequency"] > 0:
        h = p["heterodyne"]
        # the velocity (fringe frequency) drifts a little across the window
        fr = p["fringe_frequency"] * (1 + p["fringe_phase_drift"] * (t - 0.5))
        ph = 2 * np.pi * np.cumsum(fr)
        H = (1 - h) ** 2 + h ** 2 + 2 * h * (1 - h) * np.cos(ph[:, None] - ph[None, :]).astype(np.float32)
        g *= H
    if p["shear"] > 0:
        x = np.float32(p["shear"]) * lag + np.float32(1e-20)
        s = np.sin(x) / x
        g *= s * s
    c2 = p["baseline"] + p["contrast"] * g
    c2 += np.eye(size, dtype=np.float32) * np.float32(p["contrast"] * p["diagonal_spike"])
    z = rng.standard_normal((size, size), dtype=np.float32)
    z = (z + z.T) * np.float32(p["contrast"] * p["noise_rel"] / math.sqrt(2.0))
    c2 = c2 + z
    flux = (1.0 + rng.normal(0.0, p["flux"], size)).astype(np.float32)
    c2 *= flux[:, None] * flux[None, :]
    if p["blur"] > 0:
        c2 = _blur(c2, p["blur"])
    truth = {"relaxation_rate": float(gamma_t.mean()), "stretching": p["stretching"], "aging": p["aging"],
             "fringe_frequency": p["fringe_frequency"], "burst": p["burst"], "contrast": p["contrast"],
             "noise_rel": p["noise_rel"], "generator": 0}
    return normalise_map(c2), truth


# --------------------------------------------------------------------------- the project simulator, widened
_LAG = {}


def _lags(size: int):
    if size not in _LAG:
        ii, jj = np.indices((size, size))
        li = np.abs(ii - jj).ravel()
        _LAG[size] = (li, np.bincount(li, minlength=size).astype(np.float64))
    return _LAG[size]


def render_simulator(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, dict]:
    """One map of :class:`ainerd_core.simulate.Experiment` with widened run parameters."""
    from .simulate import Experiment, SimConfig

    cfg = SimConfig(times=50, sectors=18, size=size, seed=int(rng.integers(0, 2**31 - 1)),
                    window=float(_loguniform(rng, 8.0, 80.0)), q=float(_loguniform(rng, 0.005, 0.02)),
                    flow_axis_deg=float(rng.uniform(0, 360)))
    e = Experiment.from_config(cfg)
    e.alpha = float(rng.uniform(-1.6, -0.2))
    e.r_ref *= _loguniform(rng, 0.1, 10.0)
    e.het_frac = float(rng.uniform(0.0, 0.6))
    e.v0 *= _loguniform(rng, 0.3, 3.0)
    e.sector_contrast = e.sector_contrast * rng.uniform(0.3, 2.0)
    e.sector_pixels = np.maximum(np.round(e.sector_pixels * _loguniform(rng, 0.05, 4.0)), 20).astype(np.int64)
    times = e.times()
    i = int(rng.integers(0, len(times)))
    s = int(rng.integers(1, cfg.sectors + 1))
    li, lc = _lags(size)
    img, tr = e.render(i, s, float(times[i]), li, lc)
    rate_px = tr["relaxation_rate"] * cfg.dt
    truth = {"relaxation_rate": rate_px, "stretching": 1.0, "aging": 1 if e.alpha < -0.3 else 0,
             "fringe_frequency": tr["fringe_frequency"] * cfg.dt if tr["fringe_visibility"] >= 0.1 else 0.0,
             "burst": int(tr["burst"]), "contrast": tr["contrast"], "noise_rel": tr["noise_std"] / max(tr["contrast"], 1e-9),
             "generator": 1}
    return img.astype(np.float32), truth


# --------------------------------------------------------------------------- batches and files
def generate(n: int, seed: int = 0, split: str = "train", start: int = 0, sim_share: float | None = None,
             size: int = SIZE, pairs: bool = False):
    """Maps ``start .. start+n-1`` of a split: ((n, size, size) float32 in [0, 1], truth columns (n,)).

    Map i uses ``default_rng([seed, split code, i])``; the simulator renders a ``sim_share``
    (default :data:`SIM_SHARE` for train / val / indist, 0 for heldout) of them. With ``pairs``
    the result is (maps, partners, truth): ``partners[i]`` has the dynamics of ``maps[i]`` with its
    nuisances redrawn (:func:`redraw_nuisances`; a simulator map is its own partner); ``maps``
    are the same as without ``pairs``.
    """
    if split not in SPLITS:
        raise InputError("--split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    if sim_share is None:
        sim_share = 0.0 if split == "heldout" else SIM_SHARE
    maps = np.empty((n, size, size), np.float32)
    partners = np.empty_like(maps) if pairs else None
    truth: dict[str, list] = {}
    for k in range(n):
        rng = np.random.default_rng([seed, SPLITS[split], start + k])
        if rng.random() < sim_share:
            img, tr = render_simulator(rng, size)
            partner = img
        else:
            p = draw_params(rng, "heldout" if split == "heldout" else "train")
            img, tr = render(p, rng, size)
            # drawn after the map itself: ``maps`` do not depend on ``pairs``
            partner = render(redraw_nuisances(p, rng), rng, size)[0] if pairs else None
        maps[k] = img
        if pairs:
            partners[k] = partner
        for key, v in tr.items():
            truth.setdefault(key, []).append(v)
    truth = {k: np.asarray(v) for k, v in truth.items()}
    return (maps, partners, truth) if pairs else (maps, truth)


def write_set(path, n: int, seed: int = 0, split: str = "heldout", sim_share: float | None = None,
              batch: int = 64) -> dict:
    """Write ``n`` maps of a split as a dataset file with ``/truth``; returns the truth columns."""
    from .dataset import DatasetWriter

    if n < 1:
        raise InputError("--n", f"must be >= 1, got {n}")
    truth: dict[str, list] = {}
    attrs = dict(source_kind="simulation", title=f"domain-randomised maps ({split} split, seed {seed})",
                 provenance=f"ainerd_core.randomsim: split {split}, seed {seed}, {n} maps; relevance {RELEVANCE}",
                 n_sectors=1, flow_axis_deg=90.0)
    with DatasetWriter(path, n, **attrs) as w:
        for s in range(0, n, batch):
            m, tr = generate(min(batch, n - s), seed, split, start=s, sim_share=sim_share)
            w.write_maps(s, m)
            for k, v in tr.items():
                truth.setdefault(k, []).extend(v.tolist())
        w.set_meta(time=np.arange(n, dtype=float), sector=np.ones(n, np.int32), phi=np.full(n, 90.0),
                   q=np.full(n, 0.01), source=np.array([f"randomsim:{split}:{seed}:{i}" for i in range(n)], dtype=object))
        out = {k: np.asarray(v) for k, v in truth.items()}
        w.set_truth(**out)
    return out


def truth_csv(path, truth: dict) -> None:
    """The truth columns as a CSV (``index`` = dataset row), for ``benchmark-retrieval --truth-csv``."""
    keys = list(truth)
    n = len(truth[keys[0]])
    with open(path, "w") as fh:
        fh.write(",".join(["index"] + keys) + "\n")
        for i in range(n):
            fh.write(",".join([str(i)] + [f"{truth[k][i]:.6g}" for k in keys]) + "\n")


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output dataset file (.h5)")
    parser.add_argument("--n", type=int, default=600, help="number of maps (default 600)")
    parser.add_argument("--split", default="heldout", choices=list(SPLITS),
                        help="heldout: parameter ranges never used in training (default); indist: training ranges, "
                             "unseen seeds")
    parser.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    parser.add_argument("--csv", default=None, help="also write the ground truth as a CSV")


def run(args) -> int:
    truth = write_set(args.out, args.n, args.seed, args.split)
    if args.csv:
        truth_csv(args.csv, truth)
    print(f"wrote {args.out}: {args.n} maps ({args.split} split, seed {args.seed}); relevance rule for "
          f"benchmark-retrieval: --relevance '{RELEVANCE}'")
    return 0
