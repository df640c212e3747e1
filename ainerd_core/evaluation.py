"""Statistics of the blind expert evaluation (METHOD.md section 5).

Input is one rating array per method, ``y[method]`` of shape (E, N): expert ``e``'s answer to
the candidate at neighbour rank ``r + 1`` (1 = similar, 0 = not similar, NaN = not rated yet).
A candidate found by several methods is one image, rated once, and its answer is credited to
each method at that method's rank.

Definitions (the admin page and the exported JSON state them too)
-----------------------------------------------------------------
accuracy
    fraction of answers 'similar'. Per expert it is the 0/1 answer per rank; the average at a
    rank is the mean over the experts who rated it.
smoothed curve
    centred moving window of ``window`` ranks (default 21: rank r pools ranks r-10 .. r+10,
    truncated at both ends); every rated (expert, rank) cell inside the window counts once.
rank where the average falls below 50 %
    the first rank at which the smoothed average is < 0.5 (``rank_below_50``);
    ``last_rank_at_or_above_50`` is the rank before it (the paper's "above 50 % up to rank R");
    when the curve never falls below 0.5 it is the last rank with answers (N once all are answered).
bootstrap band
    pointwise 95 % percentile interval of the smoothed average, resampling the rated cells of
    each window with replacement (for 0/1 answers this is exactly a binomial draw of the window's
    count). The crossing rank gets an interval from a cluster bootstrap over experts.
paired permutation test
    pairs the two methods' candidates rank by rank: d_r = mean over experts of
    (answer to method A's rank-r candidate - answer to method B's rank-r candidate); statistic
    = mean of d_r; under H0 the method label within a rank pair is exchangeable, so signs of
    d_r are flipped at random (exactly enumerated up to 2^16 pairs of signs, else Monte Carlo);
    two-sided p = (1 + #{|T*| >= |T|}) / (1 + B) (Monte Carlo) or the exact fraction.
inter-rater agreement
    Fleiss' kappa (statsmodels, over candidates rated by every expert) and Krippendorff's alpha
    (nominal, krippendorff package, all ratings, missing allowed), over the distinct candidates.

Completeness (what is withheld on sparse data)
----------------------------------------------
Every result says how many answers it rests on (``answered`` / ``total`` per method and per
expert). Below these documented minimums a statistic is withheld (``None``) and its ``*_note``
says why:

- :data:`MIN_WINDOW_ANSWERS` (5) answers in a rank's smoothing window: below it the smoothed
  average and its bootstrap band are not drawn at that rank (``band_lo``/``band_hi`` are NaN,
  ``supported`` is False), so bands exist only where there is data;
- the 50 % rank (``rank_below_50``, ``last_rank_at_or_above_50``) needs a supported smoothed
  value at every rank from 1 up to it (up to the last rank when the curve never falls below
  50 %); a gap means the crossing could lie in the unanswered ranks;
- its interval needs the rank itself and at least :data:`MIN_EXPERTS_INTERVAL` (2) experts;
- the permutation test needs :data:`MIN_PAIRS` (10) rank pairs answered on both sides;
- Fleiss' kappa needs 2 experts and :data:`MIN_AGREEMENT_ITEMS` (10) images rated by all of
  them; Krippendorff's alpha 2 experts and 10 images rated by at least two.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

DEFAULT_WINDOW = 21
DEFAULT_BOOT = 2000
DEFAULT_PERM = 10000
THRESHOLD = 0.5
MIN_WINDOW_ANSWERS = 5
MIN_EXPERTS_INTERVAL = 2
MIN_PAIRS = 10
MIN_AGREEMENT_ITEMS = 10


def supported_ranks(y, window: int = DEFAULT_WINDOW, min_answers: int = MIN_WINDOW_ANSWERS) -> np.ndarray:
    """(N,) bool: the smoothing window of the rank holds at least ``min_answers`` answers."""
    _, c = _window_sums(_as2d(y), window)
    return c >= min_answers


def supported_crossing(curve, supported, threshold: float = THRESHOLD) -> tuple[int | None, int | None, str]:
    """(rank_below_50, last_rank_at_or_above_50, note): both None with the reason when a rank up to
    the crossing (or up to the last rank when it never crosses) lacks support."""
    curve = np.asarray(curve, dtype=np.float64)
    supported = np.asarray(supported, bool)
    n = curve.size
    if n == 0:
        return None, None, "no ranks"
    r = crossing_rank(np.where(supported, curve, np.nan), threshold)
    upto = r if r is not None else n
    gap = np.flatnonzero(~supported[:upto])
    if gap.size:
        a, b = int(gap[0]) + 1, int(gap[-1]) + 1
        where = f"rank {a}" if a == b else f"ranks {a}..{b}"
        return None, None, (f"insufficient: {where} have fewer than {MIN_WINDOW_ANSWERS} answers in their smoothing "
                            "window, so the 50 % crossing could lie there")
    if r is None:
        return None, n, "never below 50 % up to the last rank"
    return r, r - 1, ""


def _as2d(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2:
        raise ValueError(f"ratings must be (experts, ranks), got shape {y.shape}")
    return y


def average_accuracy(y) -> np.ndarray:
    """Mean over the experts who rated each rank, (N,); NaN where nobody rated."""
    y = _as2d(y)
    n = np.sum(~np.isnan(y), axis=0)
    s = np.nansum(y, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _window_sums(y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum of rated cells, number of rated cells) in the centred window of each rank."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive number of ranks, got {window}")
    h = window // 2
    cnt = np.sum(~np.isnan(y), axis=0).astype(np.float64)
    tot = np.nansum(y, axis=0)
    cs = np.concatenate([[0.0], np.cumsum(tot)])
    cc = np.concatenate([[0.0], np.cumsum(cnt)])
    n = y.shape[1]
    lo = np.clip(np.arange(n) - h, 0, n)
    hi = np.clip(np.arange(n) + h + 1, 0, n)
    return cs[hi] - cs[lo], cc[hi] - cc[lo]


def smoothed_accuracy(y, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Centred moving-window accuracy pooling all rated cells (experts x ranks) in the window."""
    s, c = _window_sums(_as2d(y), window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def crossing_rank(curve, threshold: float = THRESHOLD) -> int | None:
    """First 1-based rank where ``curve`` < threshold (NaN is skipped), or None."""
    curve = np.asarray(curve, dtype=np.float64)
    below = np.flatnonzero(~np.isnan(curve) & (curve < threshold))
    return int(below[0]) + 1 if below.size else None


def last_rank_above(curve, threshold: float = THRESHOLD) -> int | None:
    """The rank before the first fall below threshold; if it never falls, the last rank with data
    (N when every rank was answered); 0 if rank 1 is below; None when nothing was answered."""
    curve = np.asarray(curve, dtype=np.float64)
    r = crossing_rank(curve, threshold)
    if r is not None:
        return r - 1
    have = np.flatnonzero(~np.isnan(curve))
    return int(have[-1]) + 1 if have.size else None


def bootstrap_band(y, window: int = DEFAULT_WINDOW, n_boot: int = DEFAULT_BOOT, level: float = 0.95,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the smoothed average (resampling each window's rated cells)."""
    y = _as2d(y)
    s, c = _window_sums(y, window)
    rng = np.random.default_rng(seed)
    lo = np.full(y.shape[1], np.nan)
    hi = np.full(y.shape[1], np.nan)
    a = (1 - level) / 2
    for r in np.flatnonzero(c > 0):
        k = int(c[r])
        draws = rng.binomial(k, s[r] / k, size=n_boot) / k
        lo[r], hi[r] = np.quantile(draws, [a, 1 - a])
    return lo, hi


def crossing_interval(y, window: int = DEFAULT_WINDOW, n_boot: int = DEFAULT_BOOT, level: float = 0.95,
                      seed: int = 0, threshold: float = THRESHOLD) -> tuple[int, int] | None:
    """Percentile interval of ``last_rank_above`` under a cluster bootstrap over experts."""
    y = _as2d(y)
    e = y.shape[0]
    if e < 2:
        return None
    rng = np.random.default_rng(seed)
    vals = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, e, size=e)
        v = last_rank_above(smoothed_accuracy(y[pick], window), threshold)
        vals[b] = np.nan if v is None else v
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return None
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return int(math.floor(lo)), int(math.ceil(hi))


def paired_permutation_test(ya, yb, n_perm: int = DEFAULT_PERM, seed: int = 0, exact_max: int = 16) -> dict:
    """Sign-flip permutation test of method A vs B, pairing candidates by rank (see module doc).

    ``ya``, ``yb``: (E, N) answers. Only ranks where some expert rated both candidates count; d_r
    averages over those experts. Returns statistic (mean d_r, A minus B), p_value, n_pairs, exact.
    """
    ya, yb = _as2d(ya), _as2d(yb)
    n = min(ya.shape[1], yb.shape[1])
    ya, yb = ya[:, :n], yb[:, :n]
    both = ~np.isnan(ya) & ~np.isnan(yb)
    keep = both.any(axis=0)
    with np.errstate(invalid="ignore"):
        diff = np.where(both, ya - yb, 0.0).sum(axis=0)[keep] / both.sum(axis=0)[keep]
    m = diff.size
    if m == 0:
        return {"statistic": None, "p_value": None, "n_pairs": 0, "exact": True, "n_permutations": 0}
    t = float(diff.mean())
    tol = 1e-12
    if m <= exact_max:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
        stats = (signs * diff).mean(axis=1)
        p = float(np.mean(np.abs(stats) >= abs(t) - tol))
        return {"statistic": t, "p_value": p, "n_pairs": int(m), "exact": True, "n_permutations": int(len(signs))}
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    chunk = 2000
    while done < n_perm:
        b = min(chunk, n_perm - done)
        signs = rng.choice((-1.0, 1.0), size=(b, m))
        stats = (signs * diff).mean(axis=1)
        hits += int(np.sum(np.abs(stats) >= abs(t) - tol))
        done += b
    return {"statistic": t, "p_value": (1 + hits) / (1 + n_perm), "n_pairs": int(m), "exact": False,
            "n_permutations": int(n_perm)}


def fleiss_kappa(items) -> float | None:
    """Fleiss' kappa of 0/1 answers, ``items`` (E raters, C candidates) with NaN = missing.

    Uses only candidates rated by every rater (Fleiss needs a constant number of raters).
    None when fewer than 2 raters or no complete candidate; NaN when undefined (all one answer).
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as _fk

    x = _as2d(items)
    if x.shape[0] < 2:
        return None
    full = x[:, ~np.isnan(x).any(axis=0)]
    if full.shape[1] == 0:
        return None
    ones = full.sum(axis=0)
    table = np.stack([full.shape[0] - ones, ones], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(_fk(table, method="fleiss"))


def krippendorff_alpha(items) -> float | None:
    """Krippendorff's alpha (nominal) of ``items`` (E raters, C candidates), NaN = missing."""
    import krippendorff

    x = _as2d(items)
    if x.shape[0] < 2:
        return None
    pairable = np.sum(~np.isnan(x), axis=0) >= 2
    if not pairable.any():
        return None
    vals = np.unique(x[:, pairable][~np.isnan(x[:, pairable])])
    if vals.size < 2:
        return float("nan")  # no variation: alpha is undefined
    return float(krippendorff.alpha(reliability_data=x[:, pairable], level_of_measurement="nominal"))


def _clean(v):
    """JSON-safe value: NaN -> None, numpy -> Python."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_clean(x) for x in v.tolist()]
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def analyse(per_method: dict[str, np.ndarray], items: np.ndarray | None = None, experts: list[str] | None = None,
            window: int = DEFAULT_WINDOW, n_boot: int = DEFAULT_BOOT, n_perm: int = DEFAULT_PERM,
            seed: int = 0, threshold: float = THRESHOLD) -> dict:
    """Everything the admin page and the export show, as a JSON-safe dict.

    ``per_method``: method -> (E, N) answers by rank; ``items``: (E, C) answers per distinct
    candidate (agreement); ``experts``: names in row order.
    """
    out: dict = {"definitions": {
        "accuracy": "fraction of answers 'similar'; average = mean over the experts who rated the rank",
        "smoothing": f"centred moving window of {window} ranks (r-{window // 2}..r+{window // 2}, truncated at the ends), "
                     "pooling every rated (expert, rank) cell",
        "rank_below_50": f"first rank where the smoothed average is < {threshold}; last_rank_at_or_above_50 = that rank - 1",
        "band": f"pointwise 95 % percentile bootstrap ({n_boot} resamples of the rated cells of each window)",
        "crossing_interval": f"95 % interval of last_rank_at_or_above_50 under a cluster bootstrap over experts ({n_boot} resamples)",
        "permutation": "paired by rank, sign-flip of the per-rank expert-mean difference (A - B); two-sided",
        "agreement": "Fleiss' kappa over candidates rated by every expert; Krippendorff's alpha (nominal) over all",
    }, "window": window, "threshold": threshold, "experts": list(experts or []), "methods": {}}
    for i, (method, y) in enumerate(per_method.items()):
        y = _as2d(y)
        avg = average_accuracy(y)
        sm = smoothed_accuracy(y, window)
        lo, hi = bootstrap_band(y, window, n_boot, seed=seed + i)
        sup = supported_ranks(y, window)
        lo, hi = np.where(sup, lo, np.nan), np.where(sup, hi, np.nan)  # bands only where there is data
        per_expert = []
        for e in range(y.shape[0]):
            sme = smoothed_accuracy(y[e], window)
            rb, lr, note = supported_crossing(sme, supported_ranks(y[e], window), threshold)
            per_expert.append({"accuracy": y[e], "smoothed": sme, "n_rated": int(np.sum(~np.isnan(y[e]))),
                               "n_total": int(y.shape[1]),
                               "mean_accuracy": float(np.nanmean(y[e])) if np.any(~np.isnan(y[e])) else None,
                               "rank_below_50": rb, "last_rank_at_or_above_50": lr, "crossing_note": note})
        rb, lr, note = supported_crossing(sm, sup, threshold)
        n_experts = int(y.shape[0])
        if lr is None:
            ci, ci_note = None, "withheld: the 50 % rank itself is " + (note or "not defined")
        elif n_experts < MIN_EXPERTS_INTERVAL:
            ci, ci_note = None, f"needs at least {MIN_EXPERTS_INTERVAL} experts (cluster bootstrap over experts)"
        else:
            ci = crossing_interval(y, window, min(n_boot, 500), seed=seed + 100 + i, threshold=threshold)
            ci_note = "" if ci is not None else "no bootstrap resample had a defined crossing"
        answered = int(np.sum(~np.isnan(y)))
        out["methods"][method] = {
            "n_ranks": int(y.shape[1]), "average": avg, "smoothed": sm, "band_lo": lo, "band_hi": hi,
            "supported": sup, "answered": answered, "total": int(y.size),
            "mean_accuracy": float(np.nanmean(y)) if np.any(~np.isnan(y)) else None,
            "rank_below_50": rb, "last_rank_at_or_above_50": lr, "crossing_note": note,
            "crossing_interval": ci, "crossing_interval_note": ci_note,
            "experts": per_expert,
            "agreement": agreement_with_notes(y),
        }
    names = list(per_method)
    tests = []
    for a, b in itertools.combinations(names, 2):
        res = paired_permutation_test(per_method[a], per_method[b], n_perm, seed=seed)
        res.update(a=a, b=b)
        res["note"] = ("" if res["n_pairs"] >= MIN_PAIRS else
                       f"insufficient: {res['n_pairs']} rank pairs answered on both sides, at least {MIN_PAIRS} needed")
        if res["note"]:
            res["statistic_unchecked"], res["p_value_unchecked"] = res["statistic"], res["p_value"]
            res["statistic"] = res["p_value"] = None
        per_e = []
        ya, yb = _as2d(per_method[a]), _as2d(per_method[b])
        for e in range(ya.shape[0]):
            r = paired_permutation_test(ya[e], yb[e], n_perm, seed=seed + 1 + e)
            per_e.append(r)
        res["per_expert"] = per_e
        tests.append(res)
    out["permutation_tests"] = tests
    if items is not None:
        out["agreement"] = dict(agreement_with_notes(items), n_candidates=int(_as2d(items).shape[1]))
        x = _as2d(items)
        out["completeness"] = {"answered": int(np.sum(~np.isnan(x))), "total": int(x.size),
                               "per_expert": [{"answered": int(np.sum(~np.isnan(x[e]))), "total": int(x.shape[1])}
                                              for e in range(x.shape[0])]}
    out["minimums"] = {"window_answers": MIN_WINDOW_ANSWERS, "experts_for_interval": MIN_EXPERTS_INTERVAL,
                       "rank_pairs": MIN_PAIRS, "agreement_images": MIN_AGREEMENT_ITEMS}
    return _clean(out)


def agreement_with_notes(items) -> dict:
    """Fleiss' kappa and Krippendorff's alpha, each withheld (None) with a note below the minimums."""
    x = _as2d(items)
    e = x.shape[0]
    complete = int(np.sum(~np.isnan(x).any(axis=0))) if e else 0
    pairable = int(np.sum(np.sum(~np.isnan(x), axis=0) >= 2)) if e else 0
    out = {"n_complete": complete, "n_pairable": pairable}
    if e < 2:
        note = "needs at least 2 experts"
        out.update(fleiss_kappa=None, fleiss_note=note, krippendorff_alpha=None, krippendorff_note=note)
        return out
    if complete < MIN_AGREEMENT_ITEMS:
        out.update(fleiss_kappa=None, fleiss_note=f"insufficient: {complete} images rated by every expert, "
                                                  f"at least {MIN_AGREEMENT_ITEMS} needed")
    else:
        k = fleiss_kappa(x)
        out.update(fleiss_kappa=k, fleiss_note="undefined: every answer the same" if k is not None and not
                   np.isfinite(k) else "")
    if pairable < MIN_AGREEMENT_ITEMS:
        out.update(krippendorff_alpha=None, krippendorff_note=f"insufficient: {pairable} images rated by two or "
                                                              f"more experts, at least {MIN_AGREEMENT_ITEMS} needed")
    else:
        a = krippendorff_alpha(x)
        out.update(krippendorff_alpha=a, krippendorff_note="undefined: every answer the same" if a is not None and
                   not np.isfinite(a) else "")
    return out
