"""Physics-based simulator of a rheo-XPCS experiment after shear cessation, with ground truth.

``python -m ainerd_core simulate --out data/demo.h5 [--times 50 --sectors 18 --size 256 --seed 0]``

The simulated experiment follows METHOD.md section 7 (see docs/simulator.md):

* Acquisition: ``--times`` C2 measurements evenly spaced from ``--t-start`` (-5 s) to ``--t-end``
  (2802 s) after shear cessation (50 -> ~57 s apart, like the published E031 run). Each
  measurement covers a window of ``--window`` seconds (25.6 s) sampled on ``--size`` frames, so a
  C2 pixel is ``window / size`` seconds (``c2_time_step_s``). More times keep the same span, so
  with ``--times 723`` (13,014 maps) the windows overlap: treat them as independent runs.
* Dynamics: c2 = baseline + contrast * S_laminar * H_heterodyne with a time-dependent transport
  coefficient D(t) = D0 t_eff^alpha + D_off (t_eff = max(t, 0) + t_c, t_c = 10 s, alpha < 0:
  aging), integrated between t1 and t2; faster (x2) while the shear still runs (t < 0).
* Laminar shear: S = [sin X / X]^2, X = q h |cos(phi - phi0)| Gamma / 2 with Gamma the strain
  accumulated between t1 and t2 (100 1/s before cessation, a decaying residual flow after).
* Heterodyne fringes from a static + flowing component, cos(q v cos(phi - phi0) dt), dephased by
  the spread of cos(phi - phi0) over the sector's width (a Gaussian of the same variance), so
  fringes vanish along vorticity.
* Rheology: a non-monotonic shear-stress relaxation with several local minima; an intermittent
  burst of faster dynamics (and a velocity / strain-rate kick) follows each minimum.
* Speckle noise ~ 1/sqrt(ROI pixel count), frame-flux fluctuations, contrast and baseline; each map
  min-max normalised to [0, 1].
* Widened options (issue 11; defaults reproduce the demo bit for bit): ``--contrast``,
  ``--baseline-offset``, ``--noise-scale`` (noise floors up to ~0.4 after normalisation, truth
  ``noise_floor``), ``--alpha`` (aging exponent), ``--fringe-strength`` (x heterodyne fraction).

Everything is seeded: run parameters come from ``default_rng([seed, ...])`` and each map's noise
from ``default_rng([seed, 1, time_index, sector])``, so results do not depend on batching.
Rows are sector-major (rows 0..T-1 = sector 1 at all times), like the published data.
"""
from __future__ import annotations

import argparse
import json
import math
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dataset import DatasetWriter, normalise_map
from .errors import InputError

SIM_VERSION = 1
T_C = 10.0          # s, regularises the power-law age at cessation (t_eff = t + T_C)
PRE_SHEAR = ((-200.0, 30.0), (-10.0, 100.0))  # (start time s, shear rate 1/s) before cessation
H_GAP = 5e-6        # m, height of the scattering volume along the velocity gradient
OVERSAMPLE = 4      # sub-samples per C2 pixel for the 1-d time integrals
BURST_THRESHOLD = 1.0  # truth 'burst' = 1 when bursts make D at least 2x faster on window average

TRUTH_DOC = {
    "relaxation_rate": "1/s, q^2 <D(t)> over the window (static component, bursts included)",
    "relaxation_time": "s, 1 / relaxation_rate",
    "band_width_px": "C2 pixels, lag where the noise-free lag profile first falls below 1/e",
    "band_width_s": "s, band_width_px * c2_time_step_s",
    "fringe_frequency": "Hz, q |v cos(phi - phi0)| / 2 pi at the sector centre, window mean",
    "fringe_visibility": "0..1, amplitude of the fringes one period out (0 = none)",
    "burst": "1 if a burst is active: burst_strength >= 1 (D at least twice as fast on average)",
    "burst_strength": "window mean of the burst's D multiplier minus 1",
    "burst_event": "index of the stress minimum the burst belongs to (-1 = none)",
    "D0": "Angstrom^2 / s^(1+alpha), prefactor of D(t) = D0 t_eff^alpha + D_off (sector-scaled)",
    "alpha": "aging exponent of D(t)",
    "D_off": "Angstrom^2/s, offset of D(t) (sector-scaled)",
    "D_mean": "Angstrom^2/s, window mean of D(t)",
    "anisotropy": "sector factor on D (1 + a cos^2(phi - phi0), times a sector jitter)",
    "contrast": "speckle contrast beta",
    "baseline": "c2 baseline (offset)",
    "strain": "shear strain accumulated over the window (imposed shear before cessation, residual flow after)",
    "shear_rate": "1/s, window mean of the shear rate (imposed before cessation, residual after)",
    "velocity": "nm/s, window mean of the flowing component's velocity",
    "heterodyne_fraction": "share of the scattering from the flowing component (xf^2)",
    "q": "1/Angstrom",
    "phi": "degrees, sector centre",
    "age": "s since cessation at the window centre",
    "stress": "Pa, simulated shear stress at the window centre",
    "n_pixels": "detector pixels in the ROI (sets the speckle noise)",
    "noise_std": "std of the speckle noise before normalisation (c2 units)",
    "noise_floor": "0..1, the c2 baseline's level after min-max normalisation (fast maps sit on it)",
}


# --------------------------------------------------------------------------- configuration
@dataclass
class SimConfig:
    times: int = 50
    sectors: int = 18
    size: int = 256
    seed: int = 0
    t_start: float = -5.0
    t_end: float = 2802.0
    window: float = 25.6
    q: float = 0.01
    flow_axis_deg: float = 90.0
    # widened options (issue 11); the defaults reproduce the demo exactly
    contrast: float | None = None     # speckle contrast beta of the run (None: drawn in 0.18..0.25)
    baseline_offset: float = 0.0      # added to the c2 baseline (1 + U(0, 0.02))
    noise_scale: float = 1.0          # x speckle noise (~4 gives noise floors near 0.4 after normalisation)
    alpha: float | None = None        # aging exponent of D(t) (None: drawn in -1.05..-0.85)
    fringe_strength: float = 1.0      # x heterodyne (flowing) fraction, capped at 0.5 (0 = no fringes)

    def validate(self) -> None:
        def bad(opt, problem):
            raise InputError(opt, problem)

        if self.times < 1:
            bad("--times", f"must be at least 1, got {self.times}")
        if self.sectors < 1 or self.sectors > 360:
            bad("--sectors", f"must be between 1 and 360, got {self.sectors}")
        if self.size < 16 or self.size > 2048:
            bad("--size", f"must be between 16 and 2048 pixels, got {self.size}")
        if self.seed < 0:
            bad("--seed", f"must be a non-negative integer, got {self.seed}")
        for opt, v in (("--t-start", self.t_start), ("--t-end", self.t_end), ("--window", self.window),
                       ("--q", self.q), ("--flow-axis", self.flow_axis_deg)):
            if not math.isfinite(v):
                bad(opt, "must be a finite number")
        if self.t_end < self.t_start:
            bad("--t-end", f"must not be before --t-start ({self.t_end} < {self.t_start})")
        if self.t_start < PRE_SHEAR[0][0] + self.window:
            bad("--t-start", f"must be after {PRE_SHEAR[0][0] + self.window:g} s (the pre-shear starts at "
                f"{PRE_SHEAR[0][0]:g} s)")
        if not 0 < self.window <= 3600:
            bad("--window", f"must be in (0, 3600] s, got {self.window}")
        if not 1e-4 <= self.q <= 1.0:
            bad("--q", f"must be in [1e-4, 1] 1/Angstrom, got {self.q}")
        for opt, v, lo, hi in (("--contrast", self.contrast, 1e-3, 10.0),
                               ("--baseline-offset", self.baseline_offset, -0.9, 100.0),
                               ("--noise-scale", self.noise_scale, 0.0, 100.0),
                               ("--alpha", self.alpha, -3.0, 0.0),
                               ("--fringe-strength", self.fringe_strength, 0.0, 10.0)):
            if v is not None and not (math.isfinite(v) and lo <= v <= hi):
                bad(opt, f"must be a number in [{lo:g}, {hi:g}], got {v}")

    @property
    def n_maps(self) -> int:
        return self.times * self.sectors

    @property
    def dt(self) -> float:
        return self.window / self.size


@dataclass
class Event:
    """A local minimum of the shear stress and the burst of fast dynamics tied to it."""
    t_min: float       # s, centre of the stress dip
    depth: float       # Pa
    width: float       # s (Gaussian sigma of the dip)
    lag: float         # s, burst centre - t_min
    sigma: float       # s, burst duration (Gaussian sigma)
    gain: float        # D multiplier at the burst peak minus 1
    v_kick: float      # m/s added to the flowing velocity
    rate_kick: float   # 1/s added to the residual shear rate

    @property
    def centre(self) -> float:
        return self.t_min + self.lag


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


@dataclass
class Experiment:
    """Run-level parameters drawn from the seed; maps are rendered by :meth:`render`."""
    cfg: SimConfig
    alpha: float = 0.0
    r_ref: float = 0.0          # 1/s, q^2 D at t_eff = 55 s (before anisotropy)
    r_off: float = 0.0          # 1/s, q^2 D_off
    aniso: float = 0.0
    kappa: float = 0.0          # D_flowing / D_static
    het_frac: float = 0.0
    v0: float = 0.0             # m/s at t_eff = 55 s
    v_pow: float = 0.0
    rate0: float = 0.0          # 1/s residual shear rate at cessation
    tau_rate: float = 0.0       # s
    contrast0: float = 0.0
    stress_inf: float = 0.0
    stress_a1: float = 0.0
    stress_tau1: float = 0.0
    stress_slow: float = 0.0
    beamstop_deg: float = 0.0
    events: list = field(default_factory=list)
    sector_aniso: np.ndarray = None
    sector_contrast: np.ndarray = None
    sector_pixels: np.ndarray = None

    @classmethod
    def from_config(cls, cfg: SimConfig) -> "Experiment":
        rng = np.random.default_rng([cfg.seed, 7001])
        e = cls(cfg)
        e.alpha = _u(rng, -1.05, -0.85)
        e.r_ref = _u(rng, 1.6, 2.6)
        e.r_off = _u(rng, 0.002, 0.005)
        e.aniso = _u(rng, 0.2, 0.35)
        e.kappa = _u(rng, 1.3, 1.8)
        e.het_frac = _u(rng, 0.3, 0.45)
        e.v0 = _u(rng, 100e-9, 150e-9) * (0.01 / cfg.q)  # keeps fringe frequencies visible at any q
        e.v_pow = _u(rng, 0.55, 0.75)
        e.rate0 = _u(rng, 5e-3, 1e-2) * (0.01 / cfg.q)
        e.tau_rate = _u(rng, 100.0, 200.0)
        e.contrast0 = _u(rng, 0.18, 0.25)
        e.stress_inf = _u(rng, 80.0, 88.0)
        e.stress_a1 = _u(rng, 20.0, 35.0)
        e.stress_tau1 = _u(rng, 40.0, 80.0)
        e.stress_slow = _u(rng, 3.0, 8.0)
        e.beamstop_deg = _u(rng, 0.0, 360.0)
        # widened options override the drawn values after drawing, so the rng stream (and every
        # other parameter) is the same as with the defaults
        if cfg.alpha is not None:
            e.alpha = float(cfg.alpha)
        if cfg.contrast is not None:
            e.contrast0 = float(cfg.contrast)
        e.het_frac = min(e.het_frac * cfg.fringe_strength, 0.5)
        # stress minima, >= 300 s apart, in [250 s, t_end - 150 s]
        lo, hi = 250.0, cfg.t_end - 150.0
        n_events = int(rng.integers(4, 6))
        times: list[float] = []
        for _ in range(200):
            if len(times) == n_events or hi <= lo:
                break
            t = _u(rng, lo, hi)
            if all(abs(t - s) >= 300.0 for s in times):
                times.append(t)
        for t in sorted(times):
            e.events.append(Event(t_min=t, depth=_u(rng, 2.5, 5.0), width=_u(rng, 25.0, 50.0),
                                  lag=_u(rng, 0.0, 15.0), sigma=_u(rng, 20.0, 35.0), gain=_u(rng, 6.0, 14.0),
                                  v_kick=_u(rng, 30e-9, 80e-9) * (0.01 / cfg.q),
                                  rate_kick=_u(rng, 3e-4, 1e-3) * (0.01 / cfg.q)))
        srng = np.random.default_rng([cfg.seed, 7002])
        phi = e.phi
        e.sector_aniso = (1 + e.aniso * np.cos(np.radians(phi - cfg.flow_axis_deg)) ** 2) * srng.uniform(0.92, 1.08, cfg.sectors)
        e.sector_contrast = e.contrast0 * srng.uniform(0.85, 1.1, cfg.sectors)
        pix = srng.uniform(2500, 5000, cfg.sectors) * (360.0 / cfg.sectors / 20.0)  # per 20 degrees
        near = np.abs((phi - e.beamstop_deg + 180.0) % 360.0 - 180.0) < 360.0 / cfg.sectors
        e.sector_pixels = np.maximum(np.round(pix * np.where(near, 0.45, 1.0)), 50).astype(np.int64)
        return e

    # geometry ------------------------------------------------------------------
    @property
    def sector_width(self) -> float:
        return 360.0 / self.cfg.sectors

    @property
    def phi(self) -> np.ndarray:
        w = self.sector_width
        return (np.arange(self.cfg.sectors) + 0.5) * w

    def times(self) -> np.ndarray:
        c = self.cfg
        return np.round(np.linspace(c.t_start, c.t_end, c.times), 1)

    def _u_range(self, sector: int) -> tuple[float, float, float]:
        """|cos(phi - phi0)| at the sector centre, and the mid-point and full range over its width."""
        w = self.sector_width
        lo = (sector - 1) * w
        ang = np.radians(np.linspace(lo, lo + w, 41) - self.cfg.flow_axis_deg)
        u = np.abs(np.cos(ang))
        uc = abs(math.cos(math.radians(lo + w / 2 - self.cfg.flow_axis_deg)))
        return uc, 0.5 * (u.max() + u.min()), u.max() - u.min()

    # time-dependent physics (vectorised over a 1-d array of times) -------------------
    def burst_envelopes(self, t: np.ndarray) -> np.ndarray:
        """(n_events, len(t)) Gaussian burst envelopes."""
        if not self.events:
            return np.zeros((0, t.size))
        c = np.array([ev.centre for ev in self.events])[:, None]
        s = np.array([ev.sigma for ev in self.events])[:, None]
        return np.exp(-0.5 * ((t[None, :] - c) / s) ** 2)

    def rate(self, t: np.ndarray, env: np.ndarray) -> np.ndarray:
        """q^2 D(t) in 1/s (isotropic part, bursts included)."""
        teff = np.maximum(t, 0.0) + T_C
        r = self.r_ref * (teff / 55.0) ** self.alpha + self.r_off
        r = np.where(t < 0, 2.0 * r, r)
        if env.size:
            r = r * (1.0 + (np.array([ev.gain for ev in self.events]) @ env))
        return r

    def shear_rate(self, t: np.ndarray, env: np.ndarray) -> np.ndarray:
        """Shear rate in 1/s: pre-shear before cessation, a decaying residual flow after."""
        g = self.rate0 * np.exp(-np.maximum(t, 0.0) / self.tau_rate)
        if env.size:
            g = g + np.array([ev.rate_kick for ev in self.events]) @ env
        g = np.where(t < 0, 0.0, g)
        for start, rate in PRE_SHEAR:
            g = np.where((t < 0) & (t >= start), rate, g)
        return g

    def velocity(self, t: np.ndarray, env: np.ndarray) -> np.ndarray:
        """Velocity of the flowing component, m/s (capped below a visible fringe frequency)."""
        teff = np.maximum(t, 0.0) + T_C
        v = self.v0 * (teff / 55.0) ** (-self.v_pow)
        if env.size:
            v = v + np.array([ev.v_kick for ev in self.events]) @ env
        v_cap = 2 * math.pi * (0.3 / self.cfg.dt) / (self.cfg.q * 1e10)  # fringe period >= 3.3 px
        return np.minimum(v, v_cap)

    def stress(self, t: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Shear stress in Pa (noise-free unless rng is given)."""
        t = np.asarray(t, dtype=float)
        tp = np.maximum(t, 0.0)
        span = max(self.cfg.t_end, 1000.0)
        post = (self.stress_inf + self.stress_a1 * np.exp(-tp / self.stress_tau1) + self.stress_slow * tp / span)
        for ev in self.events:
            post = post - ev.depth * np.exp(-0.5 * ((t - ev.t_min) / ev.width) ** 2)
        sigma_shear = np.where(t >= PRE_SHEAR[1][0], 25000.0, 16000.0)
        post = post + (25000.0 - self.stress_inf - self.stress_a1) * np.exp(-tp / 0.8) * (t >= 0)
        out = np.where(t < 0, sigma_shear, post)
        if rng is not None:
            out = out + rng.normal(0.0, 1.0, t.shape) * np.where(t < 0, 300.0, 0.12)
        return out

    def rheology(self) -> dict[str, np.ndarray]:
        """The rheometer log on the XPCS clock: time [s], shear_stress [Pa], shear_rate [1/s],
        viscosity [Pa s]."""
        c = self.cfg
        t_pre = np.arange(PRE_SHEAR[0][0], 0.0, 2.0)
        t_post = np.arange(0.0, c.t_end + c.window + 200.0, 5.0)
        t = np.concatenate([t_pre, t_post])
        rng = np.random.default_rng([c.seed, 7003])
        env = self.burst_envelopes(t)
        stress = self.stress(t, rng)
        rate = self.shear_rate(t, env) + np.abs(rng.normal(0.0, 3e-7, t.shape)) * (t >= 0)
        return {"time": t, "shear_stress": stress, "shear_rate": rate, "viscosity": stress / rate}

    # one map ---------------------------------------------------------------------------
    def render(self, i_time: int, sector: int, t0: float, lag_index: np.ndarray, lag_counts: np.ndarray):
        """Render the C2 map of one (time, sector); return (normalised map, truth dict).

        ``t0`` is the map's start (s after cessation); ``lag_index`` (size * size,) the lag in
        pixels of every pixel and ``lag_counts`` (size,) how many pixels have each lag.
        """
        c = self.cfg
        n, dt = c.size, c.dt
        s = sector - 1
        # 1-d integrals on a fine grid; values at frame centres
        nf = n * OVERSAMPLE
        tf = t0 + (np.arange(nf) + 0.5) * (dt / OVERSAMPLE)
        env = self.burst_envelopes(tf)
        r = self.rate(tf, env) * self.sector_aniso[s]
        g = self.shear_rate(tf, env)
        v = self.velocity(tf, env)
        h = self._coherent(sector, _at_centres(r, dt), _at_centres(g, dt), _at_centres(v, dt) * (c.q * 1e10))
        width = _band_width(h, lag_index, lag_counts)
        img, observed = self._observe(h, i_time, sector)
        return img, self._truth(sector, t0, env, r, g, v, width, observed)

    def _coherent(self, sector: int, F: np.ndarray, G: np.ndarray, Q: np.ndarray) -> np.ndarray:
        """(size, size) float32 noise-free normalised correlation (1 at zero lag): diffusive decay,
        heterodyne fringes and laminar shear decorrelation, from the integrals at the frame
        centres of the relaxation rate ``F`` (1), shear rate ``G`` (strain, 1) and velocity ``Q``
        (times q: rad)."""
        q_m = self.cfg.q * 1e10
        uc, ubar, du = self._u_range(sector)
        I = np.abs(F[:, None] - F[None, :]).astype(np.float32)
        a, b, kap = 1.0 - self.het_frac, self.het_frac, self.kappa
        e_s = np.exp(-I)
        e_f = np.exp(-kap * I)
        h = a * a * e_s + b * b * e_f
        P = (Q[:, None] - Q[None, :]).astype(np.float32)
        mix = np.sqrt(e_s * e_f)
        mix *= np.cos(ubar * P)
        sig_u = du / math.sqrt(12.0)  # spread of |cos(phi - phi0)| over the sector (and of v)
        if sig_u > 0:
            mix *= np.exp(np.float32(-0.5 * sig_u ** 2) * (P * P))
        h += (2 * a * b) * mix
        # laminar shear decorrelation (S = 1 perpendicular to the flow)
        xscale = 0.5 * q_m * H_GAP * uc
        if xscale * (G[-1] - G[0]) > 1e-3:
            X = (xscale * np.abs(G[:, None] - G[None, :])).astype(np.float32)
            S = _sinc(X)
            S *= S
            h *= S
        return h

    def _observe(self, h: np.ndarray, i_time: int, sector: int) -> tuple[np.ndarray, dict]:
        """The measured map from the noise-free ``h`` (overwritten): contrast, baseline, speckle
        noise and frame-flux fluctuations (seeded by run, time and sector), min-max normalised.
        Returns (map, {contrast, baseline, n_pixels, noise_std, noise_floor})."""
        c, s = self.cfg, sector - 1
        n = h.shape[0]
        rng = np.random.default_rng([c.seed, 1, i_time, sector])
        beta = float(self.sector_contrast[s] * rng.uniform(0.97, 1.03))
        base = float(1.0 + rng.uniform(0.0, 0.02)) + c.baseline_offset
        n_pix = int(self.sector_pixels[s])
        noise_std = beta * 2.4 / math.sqrt(n_pix) * c.noise_scale
        c2 = h
        c2 *= np.float32(beta)
        c2 += np.float32(base)
        z = rng.standard_normal((n, n), dtype=np.float32)
        z += z.T
        z *= np.float32(noise_std / math.sqrt(2.0))
        c2 += z
        flux = (1.0 + rng.normal(0.0, 0.002, n)).astype(np.float32)
        c2 *= flux[:, None]
        c2 *= flux[None, :]
        lo_c2, hi_c2 = float(c2.min()), float(c2.max())
        floor = (base - lo_c2) / (hi_c2 - lo_c2) if hi_c2 > lo_c2 else 0.0
        return normalise_map(c2), {"contrast": beta, "baseline": base, "n_pixels": n_pix, "noise_std": noise_std,
                                   "noise_floor": floor}

    def _truth(self, sector: int, t0: float, env, r, g, v, width: float, observed: dict) -> dict:
        """The ground truth of one map from its fine-grid rate ``r`` (1/s), shear rate ``g`` (1/s),
        velocity ``v`` (m/s), burst envelopes ``env``, band width (pixels) and :meth:`_observe`'s figures."""
        c, s = self.cfg, sector - 1
        q_m = c.q * 1e10
        uc, ubar, du = self._u_range(sector)
        a, b, kap = 1.0 - self.het_frac, self.het_frac, self.kappa
        tc = t0 + c.window / 2
        rate_mean = float(r.mean())
        aniso = float(self.sector_aniso[s])
        if env.size:
            per_event = np.array([ev.gain for ev in self.events]) * env.mean(axis=1)
            k_ev = int(np.argmax(per_event))
            strength = float(per_event.sum())
            active = strength >= BURST_THRESHOLD
        else:
            active, k_ev, strength = False, -1, 0.0
        v_mean = float(v.mean())
        f_fr = q_m * v_mean * uc / (2 * math.pi)
        vis = 0.0
        if f_fr > 0 and ubar > 0 and 1.0 / f_fr < c.window:
            T = 1.0 / f_fr
            dephase = math.exp(-0.5 * (2 * math.pi * du / math.sqrt(12.0) / ubar) ** 2)
            g_mean = float(g.mean())
            x = 0.5 * q_m * H_GAP * uc * g_mean * T
            lam = (math.sin(x) / x) ** 2 if x > 0 else 1.0
            vis = 2 * a * b * dephase * math.exp(-0.5 * (1 + kap) * rate_mean * T) * lam
        return {
            "relaxation_rate": rate_mean,
            "relaxation_time": 1.0 / rate_mean,
            "band_width_px": width,
            "band_width_s": width * c.dt,
            "fringe_frequency": f_fr,
            "fringe_visibility": vis,
            "burst": int(active),
            "burst_strength": strength,
            "burst_event": k_ev if active else -1,
            "D0": aniso * self.r_ref * 55.0 ** (-self.alpha) / c.q ** 2,
            "alpha": self.alpha,
            "D_off": aniso * self.r_off / c.q ** 2,
            "D_mean": rate_mean / c.q ** 2,
            "anisotropy": aniso,
            "contrast": observed["contrast"],
            "baseline": observed["baseline"],
            "strain": float(g.sum() * (c.dt / OVERSAMPLE)),
            "shear_rate": float(g.mean()),
            "velocity": v_mean * 1e9,
            "heterodyne_fraction": b,
            "q": c.q,
            "phi": float(self.phi[s]),
            "age": tc,
            "stress": float(self.stress(np.array([tc]))[0]),
            "n_pixels": observed["n_pixels"],
            "noise_std": observed["noise_std"],
            "noise_floor": observed["noise_floor"],
        }

    def describe(self) -> dict:
        """Run-level parameters (stored as the ``simulation_json`` attribute)."""
        c = self.cfg
        return {
            "sim_version": SIM_VERSION, "config": c.__dict__,
            "alpha": self.alpha, "rate_at_55s": self.r_ref, "rate_offset": self.r_off, "t_c": T_C,
            "anisotropy": self.aniso, "kappa": self.kappa, "heterodyne_fraction": self.het_frac,
            "v0_m_s": self.v0, "v_pow": self.v_pow, "residual_rate0": self.rate0, "tau_rate": self.tau_rate,
            "h_gap_m": H_GAP, "beamstop_deg": self.beamstop_deg,
            "events": [ev.__dict__ | {"burst_centre": ev.centre} for ev in self.events],
        }


def _at_centres(x: np.ndarray, dt: float) -> np.ndarray:
    """The running integral of ``x`` (sampled OVERSAMPLE times per pixel of ``dt`` s) at the
    pixel centres: (len(x) / OVERSAMPLE,)."""
    cum = np.concatenate([[0.0], np.cumsum(x) * (dt / OVERSAMPLE)])
    edges = cum[::OVERSAMPLE]
    return 0.5 * (edges[:-1] + edges[1:])


def _band_width(h: np.ndarray, lag_index: np.ndarray, lag_counts: np.ndarray) -> float:
    """Noise-free band width in pixels: the lag where the lag profile of ``h`` (1 at zero lag)
    falls below 1/e, interpolated linearly (the map's size when it never does)."""
    n = h.shape[0]
    prof = np.bincount(lag_index, weights=h.ravel(), minlength=n) / lag_counts
    below = np.nonzero(prof < math.exp(-1.0))[0]
    if not below.size:
        return float(n)
    k = int(below[0])
    p0, p1 = prof[k - 1], prof[k]
    return (k - 1) + (p0 - math.exp(-1.0)) / (p0 - p1) if p0 != p1 else float(k)


def _sinc(x: np.ndarray) -> np.ndarray:
    """sin(x) / x, float32, 1 at 0."""
    x = np.abs(x, dtype=np.float32)
    x += np.float32(1e-20)
    return np.sin(x) / x


# --------------------------------------------------------------------------- driver
def rows(cfg: SimConfig):
    """(row, time_index, sector) in the stored order: sector-major."""
    for s in range(1, cfg.sectors + 1):
        for i in range(cfg.times):
            yield (s - 1) * cfg.times + i, i, s


def simulate(path, cfg: SimConfig, batch_size: int = 32, title: str | None = None) -> dict:
    """Simulate and write a dataset; return a summary (n_maps, seconds)."""
    cfg.validate()
    start = _time.perf_counter()
    exp = Experiment.from_config(cfg)
    times = exp.times()
    n = cfg.size
    ii, jj = np.indices((n, n))
    lag_index = np.abs(ii - jj).ravel()
    lag_counts = np.bincount(lag_index, minlength=n).astype(np.float64)
    del ii, jj
    N = cfg.n_maps
    truth: dict[str, np.ndarray] = {}
    meta_time = np.empty(N)
    meta_sector = np.empty(N, dtype=np.int32)
    meta_phi = np.empty(N)
    source = np.empty(N, dtype=object)
    attrs = dict(source_kind="simulation", flow_axis_deg=float(cfg.flow_axis_deg),
                 sector_width_deg=360.0 / cfg.sectors, n_sectors=cfg.sectors,
                 c2_time_step_s=cfg.dt, title=title or f"simulated rheo-XPCS after shear cessation (seed {cfg.seed})",
                 provenance=f"ainerd_core.simulate v{SIM_VERSION}: seed {cfg.seed}, {cfg.times} times x "
                            f"{cfg.sectors} sectors, window {cfg.window:g} s, q {cfg.q:g} 1/A",
                 simulation_json=json.dumps(exp.describe()),
                 truth_doc_json=json.dumps(TRUTH_DOC))
    with DatasetWriter(path, N, map_size=n, **attrs) as w:
        buf = np.empty((min(batch_size, N), n, n), dtype=np.float32)
        k, first = 0, 0
        for row, i, s in rows(cfg):
            img, tr = exp.render(i, s, float(times[i]), lag_index, lag_counts)
            buf[k] = img
            k += 1
            for key, val in tr.items():
                if key not in truth:
                    truth[key] = np.empty(N, dtype=np.int32 if isinstance(val, (int, np.integer)) and not isinstance(val, bool) else np.float64)
                truth[key][row] = val
            meta_time[row] = times[i]
            meta_sector[row] = s
            meta_phi[row] = exp.phi[s - 1]
            source[row] = f"sim:t{i}:s{s}"
            if k == buf.shape[0] or row == N - 1:
                w.write_maps(first, buf[:k])
                first += k
                k = 0
        w.set_meta(time=meta_time, sector=meta_sector, phi=meta_phi, q=np.full(N, cfg.q), source=source)
        w.set_rheology(**exp.rheology())
        w.set_truth(**truth)
    return {"n_maps": N, "seconds": _time.perf_counter() - start}


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = SimConfig()
    parser.add_argument("--out", required=True, help="output dataset file (.h5), replaced atomically")
    parser.add_argument("--times", type=int, default=d.times,
                        help=f"acquisition time points, evenly spread over --t-start..--t-end (default {d.times}; "
                             "723 gives 13,014 maps with 18 sectors)")
    parser.add_argument("--sectors", type=int, default=d.sectors, help=f"azimuthal sectors (default {d.sectors})")
    parser.add_argument("--size", type=int, default=d.size, help=f"C2 map size in pixels (default {d.size})")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    parser.add_argument("--t-start", type=float, default=d.t_start, help="first acquisition, s after cessation (default -5)")
    parser.add_argument("--t-end", type=float, default=d.t_end, help="last acquisition, s (default 2802)")
    parser.add_argument("--window", type=float, default=d.window,
                        help="measurement window per C2 map, s (default 25.6; C2 pixel = window / size)")
    parser.add_argument("--q", type=float, default=d.q, help="momentum transfer, 1/Angstrom (default 0.01)")
    parser.add_argument("--flow-axis", type=float, default=d.flow_axis_deg, dest="flow_axis",
                        help="azimuth of the flow direction, degrees (default 90: sectors 5, 14 of 18)")
    parser.add_argument("--contrast", type=float, default=None,
                        help="speckle contrast beta of the run (default: drawn in 0.18..0.25)")
    parser.add_argument("--baseline-offset", type=float, default=d.baseline_offset,
                        help="added to the c2 baseline 1 + U(0, 0.02) (default 0)")
    parser.add_argument("--noise-scale", type=float, default=d.noise_scale,
                        help="multiplies the speckle noise (default 1; ~4 puts fast maps' noise floor near 0.4 "
                             "after normalisation)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="aging exponent of D(t) = D0 t^alpha + D_off (default: drawn in -1.05..-0.85)")
    parser.add_argument("--fringe-strength", type=float, default=d.fringe_strength,
                        help="multiplies the heterodyne (flowing) fraction, capped at 0.5 (default 1; 0 = no fringes)")
    parser.add_argument("--batch", type=int, default=32, help="maps per write batch (default 32)")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")


def run(args) -> int:
    cfg = SimConfig(times=args.times, sectors=args.sectors, size=args.size, seed=args.seed,
                    t_start=args.t_start, t_end=args.t_end, window=args.window, q=args.q,
                    flow_axis_deg=args.flow_axis, contrast=args.contrast, baseline_offset=args.baseline_offset,
                    noise_scale=args.noise_scale, alpha=args.alpha, fringe_strength=args.fringe_strength)
    cfg.validate()
    if args.batch < 1:
        raise InputError("--batch", f"must be at least 1, got {args.batch}")
    out = Path(args.out)
    if out.is_dir():
        raise InputError(out, "is a folder, not a file")
    summary = simulate(out, cfg, batch_size=args.batch)
    if not args.quiet:
        print(f"wrote {out}: {summary['n_maps']} map{'s' if summary['n_maps'] != 1 else ''} ({cfg.times} times x {cfg.sectors} sectors, "
              f"{cfg.size} px) in {summary['seconds']:.1f} s ({summary['n_maps'] / summary['seconds']:.0f} maps/s)")
    return 0
