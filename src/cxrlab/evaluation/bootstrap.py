"""Stratified percentile bootstrap, vectorised, and every metric's interval in one call.

:func:`bootstrap_metrics` gives each metric the interval its kind calls for
(:mod:`cxrlab.evaluation.intervals`): Clopper-Pearson for proportions (accuracy, per-class
precision/PPV, recall/sensitivity, specificity, NPV), this bootstrap for everything else.

A resample is represented by how many times each sample was drawn (a row of a (B, N) weight
matrix), so one matrix product gives every resample's confusion matrix and the ranking and
calibration metrics are computed for all resamples at once (see :mod:`cxrlab.evaluation.metrics`).

Resampling is stratified by true class: each resample draws, with replacement, as many samples of
each class as the test set holds, so class supports are fixed and per-class sensitivity is always
defined. With ``groups`` (e.g. image paths when predictions from several runs of the same images
are pooled), whole groups are drawn instead of rows, so repeated predictions of one image are not
treated as independent evidence.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.evaluation.intervals import (
    BOOTSTRAP,
    CLOPPER_PEARSON,
    METHOD_DESCRIPTIONS,
    PROPORTION_METRICS,
    PROPORTION_PER_CLASS,
    bootstrap_entry,
    interval_entry,
    proportion_entry,
)
from cxrlab.evaluation.metrics import (
    N_BINS,
    PER_CLASS_METRICS,
    SCALAR_METRICS,
    UNDEFINED_REASON,
    compute_metrics,
    compute_metrics_codes,
    encode_labels,
)

logger = logging.getLogger(__name__)

METHOD = "stratified BCa bootstrap"
#: Differences between runs keep the plain percentile interval (identical runs give exactly 0).
DIFFERENCE_METHOD = "paired stratified percentile bootstrap"
#: Metrics that need only predicted labels (cheap to resample).
_LABEL_METRICS = frozenset(
    {"accuracy", "macro_precision", "macro_recall", "macro_f1", "macro_specificity"}
    | {"weighted_precision", "weighted_recall", "weighted_f1"}
)
#: Weight-matrix elements per chunk (bounds memory: ~8 bytes each, a few copies alive).
_CHUNK_ELEMENTS = 1 << 21


def bootstrap_settings(
    n_boot: int, seed: int, confidence: float, *, groups: bool = False
) -> dict[str, Any]:
    """The ``bootstrap`` block written beside every interval."""
    out = {
        "method": METHOD,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "confidence": float(confidence),
    }
    if groups:
        out["resampling_unit"] = "group (all rows of one image together)"
    return out


def interval_settings(confidence: float) -> dict[str, Any]:
    """The ``intervals`` block of metrics.json: which method each metric's interval uses."""
    per_metric = {
        name: CLOPPER_PEARSON if name in PROPORTION_METRICS else BOOTSTRAP
        for name in SCALAR_METRICS
    }
    per_class = {
        name: CLOPPER_PEARSON if name in PROPORTION_PER_CLASS else BOOTSTRAP
        for name in PER_CLASS_METRICS
    }
    return {
        "confidence": float(confidence),
        "metrics": per_metric,
        "per_class": per_class,
        "differences": DIFFERENCE_METHOD,
        "methods": dict(METHOD_DESCRIPTIONS),
    }


def _check(n_boot: int, confidence: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")


def iter_stratified_weights(
    strata: np.ndarray,
    *,
    n_boot: int,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Yield (b, N) float64 draw-count matrices, b resamples at a time, n_boot in total.

    Args:
        strata: (N,) stratum code of each row (the true class).
        n_boot: Number of resamples.
        rng: Source of randomness; the chunking is a function of N only, so a seed reproduces.
        groups: (N,) group code of each row; groups are drawn whole, stratified by their rows'
            stratum (every row of a group must share it).
    """
    strata = np.asarray(strata)
    n = len(strata)
    if groups is None:
        unit_of_row = np.arange(n)
        unit_stratum = strata
    else:
        unit_of_row = pd.factorize(np.asarray(groups))[0]
        unit_stratum = np.zeros(unit_of_row.max() + 1, dtype=strata.dtype)
        unit_stratum[unit_of_row] = strata
        if (unit_stratum[unit_of_row] != strata).any():
            raise ValueError("Every row of a bootstrap group must have the same true class.")
    n_units = len(unit_stratum)
    members = [np.flatnonzero(unit_stratum == s) for s in np.unique(unit_stratum)]
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        counts = np.zeros(b * n_units)
        offsets = (np.arange(b) * n_units)[:, None]
        for m in members:
            drawn = m[rng.integers(0, len(m), size=(b, len(m)))]
            counts += np.bincount((drawn + offsets).ravel(), minlength=b * n_units)
        counts = counts.reshape(b, n_units)
        yield counts[:, unit_of_row]
        done += b


def percentile_interval(
    samples: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring resamples where the metric was undefined (nan)."""
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan slices give nan, as intended
        low, high = np.nanquantile(samples, [alpha, 1 - alpha], axis=0)
    return low, high


def bca_interval(
    samples: np.ndarray, point, jackknife: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated (BCa, Efron 1987) interval over axis 0.

    Args:
        samples: (B, ...) bootstrap values (nan resamples ignored).
        point: (...) the point estimate.
        jackknife: (U, ...) leave-one-unit-out values, for the acceleration.
        confidence: Coverage.

    Returns:
        ``(low, high)`` of shape (...); nan where every resample is nan.
    """
    from scipy.stats import norm

    samples = np.asarray(samples, dtype=np.float64)
    point = np.broadcast_to(np.asarray(point, dtype=np.float64), samples.shape[1:])
    jack = np.asarray(jackknife, dtype=np.float64)
    flat_s = samples.reshape(len(samples), -1)
    flat_j = jack.reshape(len(jack), -1)
    flat_p = point.reshape(-1)
    alpha = (1 - confidence) / 2
    z = norm.ppf([alpha, 1 - alpha])
    low = np.full(flat_s.shape[1], np.nan)
    high = np.full(flat_s.shape[1], np.nan)
    for c in range(flat_s.shape[1]):
        s = flat_s[:, c][~np.isnan(flat_s[:, c])]
        if not len(s) or np.isnan(flat_p[c]):
            continue
        b = len(s)
        prop = (np.sum(s < flat_p[c]) + 0.5 * np.sum(s == flat_p[c])) / b
        z0 = norm.ppf(np.clip(prop, 1 / (b + 1), b / (b + 1)))
        j = flat_j[:, c][~np.isnan(flat_j[:, c])]
        d = j.mean() - j if len(j) else np.zeros(1)
        den = 6 * np.sum(d**2) ** 1.5
        a = np.sum(d**3) / den if den > 0 else 0.0
        levels = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        low[c], high[c] = np.quantile(s, np.clip(levels, 0, 1))
    return low.reshape(samples.shape[1:]), high.reshape(samples.shape[1:])


def jackknife_values(
    fn: Callable[[np.ndarray], dict[str, np.ndarray]], n: int, groups: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """``fn`` on every leave-one-unit-out weighting (a unit: a row, or a whole group)."""
    unit = np.arange(n) if groups is None else pd.factorize(np.asarray(groups))[0]
    n_units = int(unit.max()) + 1 if n else 0
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_units, chunk):
        ids = np.arange(start, min(start + chunk, n_units))
        w = (unit[None, :] != ids[:, None]).astype(np.float64)
        for name, value in fn(w).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}


def bootstrap_samples(
    fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    strata: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate ``fn(weights)`` on every resample; stack each returned array along axis 0.

    ``fn`` receives a (b, N) weight matrix and returns arrays whose first axis is b.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {}
    for w in iter_stratified_weights(strata, n_boot=n_boot, rng=rng, groups=groups):
        for name, value in fn(w).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}


def _ci(value: float, samples: np.ndarray, confidence: float) -> dict[str, Any]:
    """Percentile interval of a difference (a zero-width one is kept: identical runs)."""
    low, high = percentile_interval(samples, confidence)
    return interval_entry(value, low, high, method=BOOTSTRAP)


class _Units:
    """How many independent units (rows, or distinct groups) lie behind a set of rows."""

    def __init__(self, groups, n: int):
        self.codes = None if groups is None else pd.factorize(np.asarray(groups))[0]
        self.n = n

    def count(self, mask: np.ndarray) -> int:
        if self.codes is None:
            return int(mask.sum())
        return int(len(np.unique(self.codes[mask])))


def _proportion(value: float, mask: np.ndarray, units: _Units, confidence: float, reason: str):
    n = units.count(mask)
    if n == 0 or not np.isfinite(value):
        return interval_entry(float("nan"), None, None, method=CLOPPER_PEARSON, undefined=reason)
    return proportion_entry(value * n, n, confidence, value=value)


def bootstrap_metrics(
    y_true,
    y_score,
    *,
    labels: Sequence,
    y_pred=None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups=None,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Every metric of :func:`~cxrlab.evaluation.metrics.compute_metrics` with its interval.

    Args:
        y_true: (N,) true labels.
        y_score: (N, K) probabilities in ``labels`` order.
        labels: Classes in model output order.
        y_pred: (N,) predicted labels (default: argmax of ``y_score``).
        n_boot: Resamples (use >= 1000 for reported intervals).
        seed: Seed of ``np.random.default_rng``.
        confidence: Interval coverage.
        groups: Optional (N,) group keys drawn whole (see module docstring).
        n_bins: ECE bins.

    Returns:
        ``{"n", "n_per_class", "metrics": {name: {"value", "ci_low", "ci_high"}},
        "per_class": {class: {metric: {...}, "support": int}}, "confusion_matrix": {"labels",
        "counts"}, "bootstrap": {"method", "n_boot", "seed", "confidence"}, "intervals": {...}}``.
        Each interval entry also carries ``method`` (``"clopper-pearson"`` or ``"bootstrap"``),
        ``n`` for proportions, and ``undefined`` (the reason) where the value is ``None``.
    """
    _check(n_boot, confidence)
    labels = list(labels)
    k = len(labels)
    point = compute_metrics(y_true, y_score, labels=labels, y_pred=y_pred, n_bins=n_bins)
    t = encode_labels(y_true, labels)
    scores = np.asarray(y_score, dtype=np.float64)
    p = scores.argmax(axis=1) if y_pred is None else encode_labels(y_pred, labels, name="y_pred")
    wanted = set(SCALAR_METRICS) | set(PER_CLASS_METRICS)

    def fn(w):
        out = compute_metrics_codes(t, p, scores, w, k=k, n_bins=n_bins)
        return {name: v for name, v in out.items() if name in wanted}

    samples = bootstrap_samples(fn, t, n_boot=n_boot, seed=seed, groups=groups)
    jack = jackknife_values(fn, len(t), groups)
    support = np.bincount(t, minlength=k)
    units = _Units(groups, len(t))
    every = np.ones(len(t), dtype=bool)
    metrics = {}
    for name in SCALAR_METRICS:
        if name in PROPORTION_METRICS:
            metrics[name] = _proportion(point[name], every, units, confidence, "no samples")
        else:
            metrics[name] = bootstrap_entry(
                point[name],
                samples[name],
                confidence,
                undefined=_macro_reason(name),
                jackknife=jack[name],
            )
    denominators = {
        "precision": lambda j: p == j,
        "recall": lambda j: t == j,
        "specificity": lambda j: t != j,
        "npv": lambda j: p != j,
    }
    per_class = {}
    for j, c in enumerate(labels):
        entry = {}
        for name in PER_CLASS_METRICS:
            reason = UNDEFINED_REASON.get(name)
            if name in PROPORTION_PER_CLASS:
                entry[name] = _proportion(
                    point[name][j], denominators[name](j), units, confidence, reason
                )
            else:
                entry[name] = bootstrap_entry(
                    point[name][j],
                    samples[name][:, j],
                    confidence,
                    undefined=reason,
                    jackknife=jack[name][:, j],
                )
        entry["support"] = int(support[j])
        per_class[str(c)] = entry
    return {
        "n": int(len(t)),
        "n_per_class": {str(c): int(s) for c, s in zip(labels, support, strict=True)},
        "metrics": metrics,
        "per_class": per_class,
        "confusion_matrix": {
            "labels": [str(c) for c in labels],
            "counts": point["confusion_matrix"].round().astype(int).tolist(),
        },
        "bootstrap": bootstrap_settings(n_boot, seed, confidence, groups=groups is not None),
        "intervals": interval_settings(confidence),
    }


def _macro_reason(name: str) -> str:
    if name in ("macro_roc_auc", "macro_average_precision"):
        return "undefined for every class (each class needs true and other samples)"
    return "no samples"


def paired_bootstrap_difference(
    y_true,
    y_score_a,
    y_score_b,
    *,
    labels: Sequence,
    y_pred_a=None,
    y_pred_b=None,
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap CI of metric(A) - metric(B) on the same test samples.

    Both runs are scored on the same resample indices, so the interval accounts for the
    correlation between their errors.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}`` for the difference A - B.
    """
    _check(n_boot, confidence)
    labels = list(labels)
    k = len(labels)
    t = encode_labels(y_true, labels)
    sa = np.asarray(y_score_a, dtype=np.float64)
    sb = np.asarray(y_score_b, dtype=np.float64)
    pa = sa.argmax(axis=1) if y_pred_a is None else encode_labels(y_pred_a, labels, name="y_pred_a")
    pb = sb.argmax(axis=1) if y_pred_b is None else encode_labels(y_pred_b, labels, name="y_pred_b")
    unknown = [m for m in metrics if m not in SCALAR_METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {list(SCALAR_METRICS)}.")
    ones = np.ones((1, len(t)))
    label_only = all(m in _LABEL_METRICS for m in metrics)
    sa_, sb_ = (None, None) if label_only else (sa, sb)

    def diff(w):
        a = compute_metrics_codes(t, pa, sa_, w, k=k)
        b = compute_metrics_codes(t, pb, sb_, w, k=k)
        return {m: a[m] - b[m] for m in metrics}

    point = diff(ones)
    samples = bootstrap_samples(diff, t, n_boot=n_boot, seed=seed)
    return {m: _ci(point[m][0], samples[m], confidence) for m in metrics}
