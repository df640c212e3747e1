"""The ``/results`` contract: every entry ``precompute`` writes, declared once, and its reader/writer.

``/results`` is the group of a dataset file that ``precompute`` (and live mode) fill and the
dashboard reads. This module is the single place that says what it holds:

- :data:`ENTRIES`: every array (name, shape, dtype, unit, meaning, when it is present);
- :data:`ATTRS`: every attribute of ``/results`` (type, unit, meaning);
- :data:`K_SET`: the k values kept side by side (3, 5, 8) and :func:`labels_name` /
  :func:`counts_name` / :func:`centroids_name` for their entries;
- :class:`Timings`: seconds per precompute stage plus the real total;
- :class:`ModelProvenance`: which checkpoint made the latents;
- :func:`write_results`: checks a results dict against the declaration (names, dtypes, shapes,
  sizes that must agree, such as N = the dataset's maps) and replaces ``/results`` atomically
  through :func:`ainerd_core.dataset.write_results`;
- :func:`read_results`: everything of ``/results`` as a :class:`Results` (arrays read lazily).

``python -m ainerd_core.results --doc docs/dataset-format.md`` regenerates the dataset format
document from these tables (``tests/test_results.py`` fails when it is out of date).

A new result is added here first (one :class:`Entry` or :class:`Attr` line); writing an
undeclared name is a ``ValueError`` naming this module.

Shape symbols: ``N`` maps, ``D`` latent size, ``k`` clusters (the entry's own k, or the chosen
k), ``C`` k values swept, ``T`` distinct times, ``S`` sectors, ``G`` flow-share grid nodes per side,
``K`` neighbours per map, ``P`` pixels per map (65,536), ``J`` PCA components, ``R`` example maps (16), ``L`` g2 lags,
``W`` age windows; other capital letters are lengths of their own. Within one write a symbol
has one value.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

K_SET: tuple[int, ...] = (3, 5, 8)
"""The k values whose labels and tables are kept side by side (Reviewers: k = 3 / 5 / 8)."""

ALGORITHMS = ("spectral", "agglomerative", "birch", "gmm", "hdbscan", "optics")
SPACES = ("latent", "raw", "pca", "smoothed")   # smoothed: raw pixels after a Gaussian filter (similarity.smoothed_rows)


@dataclass(frozen=True)
class Entry:
    """One array under ``/results``.

    ``name`` may hold ``{k}`` (one entry per k of :data:`K_SET` or the chosen k), ``{algorithm}``
    (:data:`ALGORITHMS`) or ``{space}`` (:data:`SPACES`). ``dtypes``: accepted numpy dtypes, the
    first being the one written (numbers of the same kind are cast to it); ``"str"`` = UTF-8
    strings. ``shape``: symbols or integers (see the module docstring); ``None`` = any rank.
    """

    name: str
    shape: tuple | None
    dtypes: tuple[str, ...]
    unit: str
    meaning: str
    when: str = "always"


@dataclass(frozen=True)
class Attr:
    """One attribute of ``/results``; ``type`` is ``int``, ``float``, ``str`` or ``json`` (text)."""

    name: str
    type: str
    unit: str
    meaning: str
    when: str = "always"


F32, F64, I32, I8, BOOL, STR = ("float32",), ("float64",), ("int32",), ("int8",), ("bool",), ("str",)
_WITH_MAPS = "with maps"
_FIT = "with maps (or decoded latents)"

ENTRIES: tuple[Entry, ...] = (
    # latents and clusters
    Entry("latent", ("N", "D"), F32, "", "latent vectors (from the model, or copied from the dataset's /latents)"),
    Entry("labels", ("N",), I32, "", "k-means labels at the chosen k (attr k), renumbered: 0 = slowest dynamics"),
    Entry("labels_k{k}", ("N",), I32, "", "k-means labels at k = 3, 5, 8, renumbered the same way", "k < N"),
    Entry("umap", ("N", 2), F32, "", "seeded UMAP of `latent` (display only)"),
    Entry("umap_raw", ("N", 2), F32, "", "UMAP of the raw-pixel baseline (its first 50 PCA coordinates)", _WITH_MAPS),
    Entry("order_feature", ("N",), F32, "",
          "the feature the first ordering used (attr order_feature_name); kept for the dashboard's colouring"),
    Entry("kmeans/k", ("C",), I32, "", "the k swept, 2..12"),
    Entry("kmeans/inertia", ("C",), F64, "latent units^2", "k-means inertia at each swept k"),
    Entry("kmeans/silhouette", ("C",), F64, "", "silhouette score (seeded sample of at most 3,000 points)"),
    Entry("kmeans/davies_bouldin", ("C",), F64, "", "Davies-Bouldin index"),
    Entry("kmeans/calinski_harabasz", ("C",), F64, "", "Calinski-Harabasz index"),
    Entry("kmeans/centroids_k{k}", ("k", "D"), F32, "latent units",
          "k-means centroids, rows in the renumbered order (live mode assigns new maps to them)"),
    Entry("algorithms/{algorithm}", ("N",), I32, "", "labels of another algorithm, renumbered; -1 = noise"),
    Entry("stability/ari_seeds", ("Q",), F64, "", "adjusted Rand index of `labels` against k-means with 10 other seeds"),
    Entry("stability/ari_bootstrap", ("B",), F64, "", "ARI against k-means fitted on bootstrap resamples"),
    # Figure-3 tables
    Entry("sector_class", ("N",), STR, "", "`flow`, `vorticity` or `other` (from phi and flow_axis_deg)"),
    Entry("tables/times", ("T",), F64, "s", "the distinct acquisition times"),
    Entry("tables/time_index", ("N",), I32, "", "each map's row in `tables/times`"),
    Entry("tables/counts", ("T", "k"), I32, "maps", "maps per cluster at each time, chosen k"),
    Entry("tables/counts_k{k}", ("T", "k"), I32, "maps", "the same at k = 3, 5, 8", "k < N"),
    Entry("tables/sectors", ("S",), I32, "", "sector numbers present"),
    Entry("tables/sector_time_labels", ("S", "T"), I32, "", "chosen-k label of each (sector, time); -1 = no map"),
    Entry("stress_minima/time", ("M",), F64, "s", "local minima of the smoothed shear stress", "with rheology"),
    Entry("flow_share/x", ("G",), F32, "UMAP units", "grid over the UMAP plane, x"),
    Entry("flow_share/y", ("G",), F32, "UMAP units", "grid over the UMAP plane, y"),
    Entry("flow_share/share", ("G", "G"), F32, "",
          "share of neighbouring points from flow sectors minus share from vorticity sectors, in [-1, 1]; "
          "NaN = no point near; row index = y"),
    # similarity
    Entry("similarity/{space}_index", ("N", "K"), I32, "",
          "each map's K nearest neighbours (self excluded), Euclidean, in latent / raw-pixel / PCA-64 / "
          "smoothed-pixel space", "raw, pca and smoothed: with maps"),
    Entry("similarity/{space}_distance", ("N", "K"), F32, "space units", "their distances, ascending",
          "raw, pca and smoothed: with maps"),
    Entry("similarity/pca_components", ("J", "P"), F32, "",
          "the raw-pixel PCA (to project an uploaded map); J = min(64, N - 1) components", _WITH_MAPS),
    Entry("similarity/pca_mean", ("P",), F32, "", "the raw-pixel mean map, flattened", _WITH_MAPS),
    Entry("similarity/pca_scores", ("N", "J"), F32, "", "every map's PCA-64 coordinates", _WITH_MAPS),
    # dynamics (measured; ainerd_core.dynamics)
    Entry("decay_rate", ("N",), F32, "1/s or 1/pixel",
          "1 / half-decay lag of the map's diagonal profile (1/s when c2_time_step_s is known)", _WITH_MAPS),
    Entry("dynamics_score", ("N",), F32, "log10(1/s)",
          "continuous dynamics score, higher = faster (attrs dynamics_score_rule, dynamics_source)"),
    Entry("dynamics/relaxation_rate", ("N",), F32, "1/s or 1/pixel",
          "fitted rate Gamma of g2 = baseline + contrast exp(-2 (Gamma tau)^stretching); NaN where the fit failed", _FIT),
    Entry("dynamics/rate_stderr", ("N",), F32, "1/s or 1/pixel", "its standard error", _FIT),
    Entry("dynamics/stretching", ("N",), F32, "", "fitted stretching exponent (< 1 stretched, > 1 compressed)", _FIT),
    Entry("dynamics/stretching_stderr", ("N",), F32, "", "its standard error", _FIT),
    Entry("dynamics/contrast", ("N",), F32, "C2 units", "fitted contrast (beta)", _FIT),
    Entry("dynamics/contrast_stderr", ("N",), F32, "C2 units", "its standard error", _FIT),
    Entry("dynamics/baseline", ("N",), F32, "C2 units", "fitted baseline", _FIT),
    Entry("dynamics/baseline_stderr", ("N",), F32, "C2 units", "its standard error", _FIT),
    Entry("dynamics/fit_r2", ("N",), F32, "", "coefficient of determination of the fit", _FIT),
    Entry("dynamics/fit_status", ("N",), I8, "",
          "0 ok, 1 no decay within window, 2 decays within first lag, 3 failed (dynamics.STATUS_NAMES)", _FIT),
    Entry("dynamics/g2", ("N", "L"), F32, "C2 units", "one-time correlation from the map's diagonals (lag 0 excluded)", _FIT),
    Entry("dynamics/g2_lag", ("L",), F32, "s or pixel", "the lags of `dynamics/g2`", _FIT),
    Entry("dynamics/g2_count", ("L",), I32, "pixels", "C2 values averaged per lag", _FIT),
    Entry("dynamics/aged_g2", ("N", "W", "L2"), ("float16", "float32"), "C2 units",
          "g2 within age windows of each map (aging within one map)", _FIT),
    Entry("dynamics/aged_g2_age", ("W",), F32, "s or pixel", "centre age of each window", _FIT),
    Entry("dynamics/aged_g2_lag", ("L2",), F32, "s or pixel", "the lags of `dynamics/aged_g2`", _FIT),
    Entry("dynamics/fit_max_lag", (), F64, "s or pixel",
          "largest lag the fit used (live segments; precompute keeps it in attr dynamics_fit_max_lag)", "live datasets"),
    Entry("dynamics/score_filled", ("N",), BOOL, "",
          "true where `dynamics_score` was filled by regression from the latents (the fit failed)"),
    # novelty (ainerd_core.novelty)
    Entry("novelty/score", ("N",), F32, "",
          "novelty in [0, 1]: quantile within the model's held-out set (>= 0.99 = novel)", "with a model"),
    Entry("novelty/recon_quantile", ("N",), F32, "", "quantile of the reconstruction error", "with a model"),
    Entry("novelty/knn_quantile", ("N",), F32, "", "quantile of the latent nearest-neighbour distance", "with a model"),
    Entry("novelty/recon_error", ("N",), F32, "MSE", "reconstruction error of each map", "with a model"),
    Entry("novelty/knn_distance", ("N",), F32, "latent units",
          "mean distance to the k nearest latents of the reference bank (k: attr novelty_k)", "with a model"),
    Entry("novelty/reference_bank", ("B2", "D"), F32, "latent units",
          "the reference's latent bank (for uploads and live mode)", "with a model"),
    Entry("novelty/reference_recon", ("Rr",), F32, "MSE", "the reference's sorted reconstruction errors",
          "with a model"),
    Entry("novelty/reference_knn", ("Rr",), F32, "latent units", "the reference's sorted k-NN distances",
          "with a model"),
    Entry("novelty/reference_combined", ("Rr",), F32, "", "the reference's sorted combined quantiles",
          "with a model"),
    # model diagnostics
    Entry("model/recon_index", ("R",), I32, "", "maps shown reconstructed (held-out maps when possible)",
          "with a model and maps"),
    Entry("model/recon_input", ("R", 256, 256), F32, "C2 units (0..1)", "those maps", "with a model and maps"),
    Entry("model/recon_output", ("R", 256, 256), F32, "C2 units (0..1)", "their reconstructions", "with a model and maps"),
    Entry("model/noise_maps", ("R2", 256, 256), F32, "C2 units (0..1)",
          "decoded latent + Gaussian noise (attrs noise_sigma, noise_center_index)", "latents from this model"),
    Entry("model/learning_curve/epoch", ("E",), F64, "", "epochs of the model's training", "with a learning curve"),
    Entry("model/learning_curve/train_loss", ("E",), F64, "MSE", "training loss per epoch", "with a learning curve"),
    Entry("model/learning_curve/val_loss", ("E",), F64, "MSE", "validation loss per epoch", "with a learning curve"),
    Entry("model/latent_sweep/latent_size", ("Z",), F64, "", "latent sizes of the sweep", "with a latent-size sweep"),
    Entry("model/latent_sweep/test_mse", ("Z",), F64, "MSE", "test MSE at each size", "with a latent-size sweep"),
)

ATTRS: tuple[Attr, ...] = (
    Attr("seed", "int", "", "seed of every random step"),
    Attr("n_init", "int", "", "k-means restarts"),
    Attr("k", "int", "", "the chosen k (`labels`, `tables/counts`)"),
    Attr("suggested_k", "int", "", "the k the rule in k_rule suggests"),
    Attr("k_rule", "str", "", "how suggested_k is chosen"),
    Attr("model", "str", "", "checkpoint path that made the latents, `given` (an object) or `none`"),
    Attr("model_sha256", "str", "", "SHA-256 of that checkpoint file (model identity)", "with a checkpoint"),
    Attr("latent_source", "str", "", "`model` or `dataset /latents`"),
    Attr("order_feature_name", "str", "", "what `order_feature` is"),
    Attr("order_rule", "str", "", "how cluster labels are numbered (0 = slowest median fitted rate, or UNKNOWN)"),
    Attr("order_spearman_json", "json", "", "{k: Spearman(label, fitted rate)}"),
    Attr("dynamics_source", "str", "", "`maps`, `decoded latents (reconstruction)` or `none`"),
    Attr("dynamics_units_json", "json", "", "unit of each `dynamics/*` entry ({name: unit})", _FIT),
    Attr("dynamics_fit_max_lag", "float", "s or pixel", "largest lag the stretched-exponential fit used", _FIT),
    Attr("dynamics_status_counts_json", "json", "", "maps per fit status ({status name: count})", _FIT),
    Attr("algorithms_json", "json", "", "cluster sizes, fit size and extension rule per algorithm"),
    Attr("stress_minima_prominence", "float", "Pa", "prominence used for the stress minima", "with rheology"),
    Attr("stress_minima_rule", "str", "", "how the stress minima were found", "with rheology"),
    Attr("flow_axis_deg", "float", "deg", "azimuth of the flow direction used"),
    Attr("sector_tolerance_deg", "float", "deg", "tolerance around the flow / vorticity axes"),
    Attr("flow_share_radius", "float", "UMAP units", "neighbourhood radius of `flow_share/share`"),
    Attr("pca_explained_variance", "float", "", "variance share of the raw-pixel PCA-64", "with maps"),
    Attr("pca_rule", "str", "", "how the PCA was computed", "with maps"),
    Attr("smooth_sigma_px", "float", "px", "Gaussian sigma of the smoothed-pixel neighbours", "with maps"),
    Attr("retrieval_json", "json", "", "precision@k of latent / raw / PCA / smoothed-pixel neighbours", "with ground truth"),
    Attr("dynamics_score_rule", "str", "", "how `dynamics_score` was made"),
    Attr("dynamics_score_r", "float", "", "cross-validated Pearson r of the score with the measured value"),
    Attr("dynamics_score_spearman_truth", "float", "", "Spearman of the score with /truth/relaxation_rate",
         "with ground truth"),
    Attr("novelty_k", "int", "", "k of the k-NN distance of the novelty score", "with a model"),
    Attr("novelty_source", "str", "", "what the novelty reference was built from", "with a model"),
    Attr("novelty_threshold", "float", "", "score at or above which a map is flagged novel (0.99)", "with a model"),
    Attr("novelty_rule", "str", "", "how the novelty score is computed", "with a model"),
    Attr("noise_sigma", "float", "latent units", "sigma of `model/noise_maps`", "latents from this model"),
    Attr("noise_center_index", "int", "", "the map whose latent `model/noise_maps` perturb", "latents from this model"),
    Attr("latent_sweep_schedule", "str", "", "how the latent-size sweep was trained", "with a latent-size sweep"),
    Attr("latent_sweep_note", "str", "", "why a sweep found beside the model was not used (measured from other "
         "weights)", "with such a sweep"),
    Attr("model_best_epoch", "int", "", "the learning-curve epoch whose weights the checkpoint holds",
         "with a learning curve"),
    Attr("learning_curve_note", "str", "", "what the learning curve's points are (train-randomized: steps of "
         "generated maps)", "train-randomized checkpoints"),
    Attr("recon_pool", "str", "", "which maps `model/recon_*` were drawn from", "with a model and maps"),
    Attr("model_heldout", "str", "", "the checkpoint's own held-out scores, and on which maps", "with a checkpoint"),
    Attr("live_rule", "str", "", "how live mode labels and places appended maps", "live datasets"),
    Attr("live_reference", "str", "", "the precomputed dataset whose centroids and UMAP live mode uses",
         "live datasets"),
    Attr("timings_json", "json", "s", "seconds per precompute stage and `total` (see Timings)"),
    Attr("substage_timings_json", "json", "s", "seconds of the parts of a stage: {stage: {part: s}}"),
)

_ENTRY_BY_NAME: dict[str, Entry] = {e.name: e for e in ENTRIES}
_ATTR_BY_NAME: dict[str, Attr] = {a.name: a for a in ATTRS}
_ATTR_UNIT = re.compile(r"^(?P<entry>.+)_unit$")  # attr '<entry>_unit' (e.g. 'dynamics/relaxation_rate_unit')


def labels_name(k: int | None = None, chosen: int | None = None) -> str:
    """Name of the labels at ``k`` (``labels`` for None or the chosen k)."""
    return "labels" if k is None or k == chosen else f"labels_k{int(k)}"


def counts_name(k: int | None = None, chosen: int | None = None) -> str:
    """Name of the per-time counts table at ``k`` (``tables/counts`` for None or the chosen k)."""
    return "tables/counts" if k is None or k == chosen else f"tables/counts_k{int(k)}"


def centroids_name(k: int) -> str:
    return f"kmeans/centroids_k{int(k)}"


def _pattern(name: str) -> re.Pattern:
    rx = re.escape(name).replace(r"\{k\}", r"(?P<k>\d+)")
    rx = rx.replace(r"\{algorithm\}", "(?P<algorithm>" + "|".join(ALGORITHMS) + ")")
    rx = rx.replace(r"\{space\}", "(?P<space>" + "|".join(SPACES) + ")")
    return re.compile(f"^{rx}$")


_PATTERNS = [(_pattern(e.name), e) for e in ENTRIES]


def entry_for(name: str) -> tuple[Entry, dict] | None:
    """The declared entry of a result name and the values of its placeholders, or None."""
    exact = _ENTRY_BY_NAME.get(name)
    if exact is not None:
        return exact, {}
    for rx, entry in _PATTERNS:
        m = rx.match(name)
        if m:
            return entry, {key: (int(v) if key == "k" else v) for key, v in m.groupdict().items()}
    return None


def attr_for(name: str) -> Attr | None:
    """The declared attribute (``<entry>_unit`` is declared by its entry), or None."""
    attr = _ATTR_BY_NAME.get(name)
    if attr is None:
        m = _ATTR_UNIT.match(name)
        if m and entry_for(m.group("entry")) is not None:
            return Attr(name, "str", "", f"unit of `{m.group('entry')}`")
    return attr


# --------------------------------------------------------------------------- timings
@dataclass
class Timings:
    """Seconds per precompute stage, the parts of some stages, and the real total.

    ``total`` is measured around the whole run (it includes what no stage covers); it is never
    the sum of ``stages`` and ``parts``, which overlap.
    """

    stages: dict[str, float] = field(default_factory=dict)
    parts: dict[str, dict[str, float]] = field(default_factory=dict)
    total: float | None = None

    def to_attrs(self) -> dict[str, str]:
        """``timings_json`` ({stage: s, ..., "total": s}) and ``substage_timings_json``."""
        flat = {k: round(float(v), 3) for k, v in self.stages.items()}
        if self.total is not None:
            flat["total"] = round(float(self.total), 3)
        out = {"timings_json": json.dumps(flat)}
        if self.parts:
            out["substage_timings_json"] = json.dumps(
                {s: {p: round(float(v), 3) for p, v in d.items()} for s, d in self.parts.items()})
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> "Timings":
        """Read them back; files written before the parts had their own attribute stored them
        among the stages as ``'1a. <part>'``: those are moved to the parts of stage ``'1. ...'``."""
        flat = _json(attrs.get("timings_json"))
        parts = {s: {p: float(v) for p, v in d.items() if _is_number(v)}
                 for s, d in _json(attrs.get("substage_timings_json")).items() if isinstance(d, dict)}
        total = float(flat.pop("total")) if _is_number(flat.get("total")) else None
        stages = {}
        for name, value in flat.items():
            if not _is_number(value):
                continue
            legacy = re.match(r"^(\d+)a\. (encode|features|pca_sketch)$", name)
            if legacy and "substage_timings_json" not in attrs:
                stage = next((s for s in flat if s.startswith(legacy.group(1) + ". ")), legacy.group(1))
                parts.setdefault(stage, {})[legacy.group(2)] = float(value)
            else:
                stages[name] = float(value)
        return cls(stages, parts, total)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json(text) -> dict:
    if not isinstance(text, (str, bytes)) or not text:
        return {}
    try:
        obj = json.loads(text)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


# --------------------------------------------------------------------------- provenance
REPO = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = REPO / "data" / "demo_weights.pt"
_NO_MODEL = ("none", "given")


def checkpoint_sha256(path) -> str:
    """SHA-256 (hex) of a checkpoint file's bytes: precompute records it (attr ``model_sha256``)
    so that the same checkpoint is recognised after a data folder or a clone has moved."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelProvenance:
    """Which checkpoint made the latents of a precomputation (from the ``/results`` attrs).

    ``path``: the recorded checkpoint (``model`` attr; ``"none"`` = no model, ``"given"`` = an
    object passed in code, None = not recorded: results written before the attr existed);
    ``sha256``: its checksum, when recorded; ``latent_source``: ``model`` or ``dataset /latents``.
    """

    path: str | None
    sha256: str | None
    latent_source: str | None
    decoded: bool = False

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> "ModelProvenance":
        named = next((attrs[k].strip() for k in ("model_path", "model", "checkpoint")
                      if isinstance(attrs.get(k), str) and attrs[k].strip()), None)
        sha = attrs.get("model_sha256")
        # precompute decodes latents that came with the data only with the model that made them
        # (passed by the user or matched by checksum) and says so in dynamics_source
        decoded = str(attrs.get("dynamics_source") or "").startswith("decoded latents")
        return cls(named, sha if isinstance(sha, str) and sha else None, attrs.get("latent_source"), decoded)

    @property
    def from_model(self) -> bool:
        """A checkpoint is known for the latents (it made them, or precompute decoded them with
        it), recorded or not recorded at all."""
        return ((self.latent_source in (None, "model") or self.decoded)
                and (self.path or "").lower() not in _NO_MODEL)

    def short(self) -> str:
        """One line for the pages: the checkpoint's name and the first 12 hex digits of its checksum."""
        if not self.from_model:
            return f"latents from {self.latent_source}" if self.latent_source not in (None, "model") \
                else "no model recorded"
        name = Path(self.path.replace("\\", "/")).name if self.path else DEMO_WEIGHTS.name
        return name + (f" (sha256 {self.sha256[:12]})" if self.sha256 else "")

    def resolve(self, dataset_path=None, *, demo_fallback: bool = True) -> tuple[Path | None, str]:
        """The checkpoint file that made the latents, or None; and a note saying which or why not.

        The one checkpoint lookup of the project (the dashboard's decoder, the /model page, the
        evaluation's uploaded targets). Latents that came with the data have no decoder. A
        recorded path is looked up as given (relative: beside the dataset, then in the checkout);
        with a recorded SHA-256 only a file of that checksum counts, and an absolute path that
        moved is also looked for under its name beside the dataset and in ``data/``. Results that
        record no model at all fall back to the shipped demo weights (unless ``demo_fallback`` is
        False).
        """
        if not self.from_model:
            why = (f"the latents came with the data ({self.latent_source})"
                   if self.latent_source not in (None, "model") else "the precomputation recorded no model checkpoint")
            return None, f"{why}, so no decoder is known for them"
        here = Path(dataset_path).parent if dataset_path is not None else None
        if self.path:
            p = Path(self.path)
            cands = [p] if p.is_absolute() else [*([here / p] if here else []), REPO / p]
            if p.is_absolute() and self.sha256:
                cands += [*([here / p.name] if here else []), REPO / "data" / p.name]
        elif demo_fallback:
            cands = [DEMO_WEIGHTS]
        else:
            return None, "the precomputation recorded no model checkpoint"
        changed = None
        for cand in cands:
            if not cand.is_file():
                continue
            if self.sha256 and checkpoint_sha256(cand) != self.sha256:
                changed = changed or cand  # a different model would decode the latents into nonsense
                continue
            moved = bool(self.path) and Path(self.path).is_absolute() and cand != Path(self.path)
            return cand, f"decoded with {cand.name}" + (f" (found at {cand}, recorded as {self.path})" if moved else "")
        if changed is not None:
            return None, (f"the model checkpoint {changed} has changed since the precomputation "
                          "(its SHA-256 differs); re-run precompute")
        return None, f"the model checkpoint {self.path or cands[0]} is not available"


# --------------------------------------------------------------------------- writing
def _coerce(name: str, entry: Entry, value) -> np.ndarray:
    arr = np.asarray(value)
    want = entry.dtypes
    if want == STR:
        if arr.dtype.kind not in "OUS":
            raise ValueError(f"/results/{name}: strings expected, got {arr.dtype}")
        return arr.astype(str).astype(object)
    if arr.dtype.name in want:
        return arr
    target = np.dtype(want[0])
    kind_ok = (arr.dtype.kind == target.kind or (arr.dtype.kind in "iu" and target.kind in "iu")
               or (arr.dtype.kind in "iub" and target.kind == "f"))
    if not kind_ok:
        raise ValueError(f"/results/{name}: {'/'.join(want)} expected, got {arr.dtype}")
    if target.kind in "iu" and arr.size and (arr.min() < np.iinfo(target).min or arr.max() > np.iinfo(target).max):
        raise ValueError(f"/results/{name}: values outside the range of {target}")
    return arr.astype(target)


def check_results(results: Mapping[str, object], attrs: Mapping[str, object] | None = None, *,
                  n_maps: int | None = None) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes against :data:`ENTRIES` / :data:`ATTRS`; return the arrays
    cast to their declared dtypes. Raises ``ValueError`` (a programming error, not bad input)."""
    attrs = dict(attrs or {})
    for key in attrs:
        if attr_for(key) is None:
            raise ValueError(f"/results attribute {key!r} is not declared in ainerd_core/results.py (ATTRS)")
    sizes: dict[str, int] = {} if n_maps is None else {"N": int(n_maps)}
    chosen_k = attrs.get("k")
    out: dict[str, np.ndarray] = {}
    for name, value in results.items():
        found = entry_for(name)
        if found is None:
            raise ValueError(f"/results/{name} is not declared in ainerd_core/results.py (ENTRIES)")
        entry, params = found
        arr = _coerce(name, entry, value)
        if entry.shape is not None:
            if arr.ndim != len(entry.shape):
                raise ValueError(f"/results/{name}: shape {entry.shape} expected, got {arr.shape}")
            local = {"k": params["k"]} if "k" in params else ({"k": int(chosen_k)} if chosen_k is not None else {})
            for sym, got in zip(entry.shape, arr.shape):
                if isinstance(sym, int):
                    if got != sym:
                        raise ValueError(f"/results/{name}: shape {entry.shape} expected, got {arr.shape}")
                    continue
                scope = local if sym == "k" else sizes
                if scope.setdefault(sym, got) != got:
                    raise ValueError(f"/results/{name}: {sym} = {got} here but {scope[sym]} elsewhere "
                                     f"(shape {entry.shape}, got {arr.shape})")
        out[name] = arr
    return out


def write_results(path, results: Mapping[str, object], attrs: Mapping[str, object] | None = None,
                  *, timings: Timings | None = None, through_segment: int | None = None) -> None:
    """Check ``results`` and ``attrs`` against the contract, then replace ``/results`` of the
    dataset at ``path`` atomically (:func:`ainerd_core.dataset.write_results`; ``through_segment``:
    the last appended segment the results cover, for a growing live dataset)."""
    from .dataset import open_dataset, write_results as _write

    with open_dataset(path, through_segment=through_segment) as ds:
        n = ds.n_maps
    attrs = dict(attrs or {})
    if timings is not None:
        attrs.update(timings.to_attrs())
    _write(path, check_results(results, attrs, n_maps=n), attrs, through_segment=through_segment)


# --------------------------------------------------------------------------- reading
class ResultsView:
    """What every reader of ``/results`` asks, on top of three primitives a subclass provides:
    ``result(name, default=None)``, ``has_result(name)`` and ``result_attrs`` (a dict). Used by
    :class:`Results` and by the dashboard's catalog entries."""

    result_attrs: dict

    def result(self, name: str, default=None):  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def has_result(self, name: str) -> bool:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @property
    def k(self) -> int | None:
        """The chosen k (attr ``k``; from the labels for files without it), or None."""
        k = self.result_attrs.get("k")
        if k is not None:
            return int(k)
        labels = self.result("labels")
        return int(labels.max()) + 1 if labels is not None and labels.size else None

    def available_k(self) -> list[int]:
        """k values with labels: those of :data:`K_SET` present and the chosen k (sorted)."""
        ks = {k for k in K_SET if self.has_result(labels_name(k))}
        if self.has_result("labels") and self.k:
            ks.add(self.k)
        return sorted(ks)

    def by_k(self, name_of=labels_name) -> dict:
        """``{k: result}`` for the k of :data:`K_SET` present; ``name_of``: :func:`labels_name`
        (labels (N,)) or :func:`counts_name` (tables (T, k))."""
        return {k: v for k in K_SET if (v := self.result(name_of(k))) is not None}

    def labels(self, k: int | None = None):
        """Cluster labels (N,) at ``k`` (None or the chosen k: ``labels``), or None."""
        return self.result(labels_name(k, self.k))

    def counts(self, k: int | None = None):
        """The (T, k) table of maps per cluster at each time, or None."""
        return self.result(counts_name(k, self.k))

    @property
    def timings(self) -> Timings:
        """Seconds per precompute stage, their parts and the real total (empty if unknown)."""
        return Timings.from_attrs(self.result_attrs)

    @property
    def provenance(self) -> ModelProvenance:
        """Which checkpoint made the latents (path, SHA-256, latent source)."""
        return ModelProvenance.from_attrs(self.result_attrs)


class Results(ResultsView):
    """``/results`` of an open :class:`~ainerd_core.dataset.Dataset`, read through the contract.

    ``res["labels"]`` reads (and caches) one array; ``res.result(name)`` returns None when absent.
    """

    def __init__(self, dataset):
        self._ds = dataset
        self.names = frozenset(dataset.result_names())
        self.result_attrs = dict(dataset.result_attrs)

    @property
    def attrs(self) -> dict:
        return self.result_attrs

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str):
        if name not in self.names:
            raise KeyError(name)
        return self._ds.read_result(name)

    def has_result(self, name: str) -> bool:
        return name in self.names

    def result(self, name: str, default=None):
        return self._ds.read_result(name) if name in self.names else default


def read_results(dataset) -> Results:
    """The :class:`Results` of an open dataset (``open_dataset(path)``)."""
    return Results(dataset)


# --------------------------------------------------------------------------- documentation
def _shape_text(entry: Entry) -> str:
    if entry.shape is None:
        return "any"
    return "(" + ", ".join(str(s) for s in entry.shape) + (",)" if len(entry.shape) == 1 else ")")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_tables() -> str:
    """The two tables of docs/dataset-format.md's results section (entries, then attributes)."""
    lines = [f"k set (`K_SET`): {', '.join(map(str, K_SET))}. Algorithms: {', '.join(ALGORITHMS)}. "
             f"Spaces: {', '.join(SPACES)}.", "",
             "| name | shape | dtype | unit | meaning | present |", "|---|---|---|---|---|---|"]
    for e in ENTRIES:
        lines.append(f"| `{e.name}` | {_shape_text(e)} | {' or '.join(e.dtypes)} | {_cell(e.unit) or '-'} | "
                     f"{_cell(e.meaning)} | {_cell(e.when)} |")
    lines += ["", "Attributes of `/results` (an attribute `<entry>_unit` may give the unit of an entry whose "
                  "unit depends on the data):", "",
              "| attribute | type | unit | meaning | present |", "|---|---|---|---|---|"]
    for a in ATTRS:
        lines.append(f"| `{a.name}` | {a.type} | {_cell(a.unit) or '-'} | {_cell(a.meaning)} | {_cell(a.when)} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- BEGIN results tables: generated by `python -m ainerd_core.results --doc docs/dataset-format.md` -->"
END = "<!-- END results tables -->"


def render_doc(text: str) -> str:
    """``text`` (the dataset-format document) with the generated block replaced."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"the document has no generated block ({BEGIN!r} ... {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_tables()}{END}{tail}"


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ainerd_core.results",
                                description="Print the /results tables, or regenerate them in a document.")
    p.add_argument("--doc", type=Path, help="rewrite the generated block of this markdown file in place")
    args = p.parse_args(argv)
    if args.doc is None:
        print(markdown_tables(), end="")
        return 0
    args.doc.write_text(render_doc(args.doc.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
