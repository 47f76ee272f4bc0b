"""Confidence intervals: one method per metric, used by evaluate, compare, CV and the probe.

* Proportions (accuracy, sensitivity/recall, specificity, precision/PPV, NPV) get the
  Clopper-Pearson ("exact") interval: the set of p for which the observed count is not in either
  2.5% binomial tail. It never has zero width, also at 0% or 100% (20/20 correct gives
  83.2-100%), and its coverage is at least the nominal level for every p and n. The Wilson score
  interval is shorter but covers only ~92% at p = 0.98, n = 50 (tests/test_eval_coverage.py).
* Everything else (F1, macro and weighted averages, ROC AUC, AP, ECE, Brier, NLL) gets the
  stratified BCa bootstrap of :mod:`cxrlab.evaluation.bootstrap` (bias-corrected and accelerated,
  the acceleration from the jackknife); the plain percentile interval covers a class of 20
  positives' AUC only ~91% of the time, BCa >= 93% (tests/test_eval_coverage.py). Differences
  between runs get the paired percentile bootstrap.
  When every resample gives the same value (e.g. AUC = 1 for a perfectly separated class) the
  bootstrap cannot bound the metric; the bounds are then ``None`` with the reason beside them
  rather than a zero-width interval.

When predictions of one image are pooled from several runs (cross-validation), a proportion's
``n`` is the number of distinct images behind it and its count is the observed proportion times
that ``n`` (a non-integer count is fine for the beta quantiles).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import beta

#: Short method names recorded beside every interval.
CLOPPER_PEARSON = "clopper-pearson"
BOOTSTRAP = "bootstrap"
#: What each method is, in words (metrics.json ``intervals.methods``).
METHOD_DESCRIPTIONS = {
    CLOPPER_PEARSON: "Clopper-Pearson exact binomial interval (beta quantiles) of a proportion; "
    "with pooled predictions, n is the number of distinct images",
    BOOTSTRAP: "stratified BCa bootstrap (resamples drawn within each true class; bias "
    "correction and jackknife acceleration); bounds are null when every resample gives the same "
    "value",
}
#: Scalar metrics that are proportions.
PROPORTION_METRICS = frozenset({"accuracy"})
#: Per-class metrics that are proportions: metric -> (what is counted, out of what).
PROPORTION_PER_CLASS = {
    "precision": ("true positives", "samples predicted as the class"),
    "recall": ("true positives", "samples of the class"),
    "specificity": ("true negatives", "samples of other classes"),
    "npv": ("true negatives", "samples not predicted as the class"),
}


def clopper_pearson(
    successes, n, *, confidence: float = 0.95
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Clopper-Pearson interval of ``successes / n``, vectorised over arrays.

    Args:
        successes: Count(s) in [0, n]; may be non-integer (effective counts).
        n: Trial count(s); where 0 the bounds are nan.
        confidence: Coverage, e.g. 0.95.

    Returns:
        ``(low, high)``: floats for scalar input, else arrays of the broadcast shape.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    x, n = np.broadcast_arrays(x, n)
    if np.any((x < 0) | (x > n + 1e-9)):
        raise ValueError("successes must lie in [0, n].")
    x = np.minimum(x, n)
    alpha = 1 - confidence
    ok = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(ok & (x > 0), beta.ppf(alpha / 2, np.maximum(x, 1e-12), n - x + 1), 0.0)
        high = np.where(ok & (x < n), beta.ppf(1 - alpha / 2, x + 1, np.maximum(n - x, 1e-12)), 1.0)
    low = np.where(ok, low, np.nan)
    high = np.where(ok, high, np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def proportion_interval(successes, n, *, confidence: float = 0.95) -> tuple[float, float]:
    """The interval cxrlab reports for a proportion (Clopper-Pearson); (nan, nan) for n = 0.

    The shortcut probe's accuracy interval and metrics.json's accuracy use this one function.
    """
    low, high = clopper_pearson(successes, n, confidence=confidence)
    return float(low), float(high)


def _finite(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def interval_entry(
    value,
    low,
    high,
    *,
    method: str,
    undefined: str | None = None,
    n: float | None = None,
) -> dict[str, Any]:
    """``{"value", "ci_low", "ci_high", "method"}`` with strict-JSON ``None`` for undefined.

    Args:
        value: Point estimate (nan: undefined).
        low: Lower bound (nan: no interval).
        high: Upper bound.
        method: :data:`CLOPPER_PEARSON` or :data:`BOOTSTRAP`.
        undefined: Why the value is undefined (written beside it as ``"undefined"``).
        n: The proportion's denominator, for Clopper-Pearson entries.
    """
    v, lo, hi = _finite(value), _finite(low), _finite(high)
    out: dict[str, Any] = {"value": v, "ci_low": lo, "ci_high": hi, "method": method}
    if n is not None:
        out["n"] = float(n) if not float(n).is_integer() else int(n)
    if v is None:
        out["ci_low"] = out["ci_high"] = None
        out["undefined"] = undefined or "0/0: the metric is undefined here"
    elif lo is None or hi is None:
        out["ci_low"] = out["ci_high"] = None
        out["no_interval"] = (
            "every bootstrap resample gave the same value, so the bootstrap cannot bound it"
            if method == BOOTSTRAP
            else "no samples to form an interval"
        )
    return out


def bootstrap_entry(
    value,
    samples: np.ndarray,
    confidence: float,
    *,
    undefined: str | None = None,
    jackknife: np.ndarray | None = None,
) -> dict[str, Any]:
    """A bootstrap :func:`interval_entry` from resampled values (nan resamples ignored).

    BCa with ``jackknife`` (leave-one-out values), else the percentile interval.
    """
    from cxrlab.evaluation.bootstrap import bca_interval, percentile_interval

    samples = np.asarray(samples, dtype=np.float64)
    if jackknife is None:
        low, high = percentile_interval(samples, confidence)
    else:
        low, high = bca_interval(samples, value, jackknife, confidence)
    ok = samples[~np.isnan(samples)]
    if len(ok) and np.ptp(ok) == 0:
        low = high = float("nan")
    return interval_entry(value, low, high, method=BOOTSTRAP, undefined=undefined)


def proportion_entry(
    successes: float,
    n: float,
    confidence: float,
    *,
    value: float | None = None,
    undefined: str | None = None,
) -> dict[str, Any]:
    """A Clopper-Pearson :func:`interval_entry` of ``successes / n`` (``value`` overrides it)."""
    if n <= 0:
        return interval_entry(
            float("nan"), None, None, method=CLOPPER_PEARSON, undefined=undefined, n=0
        )
    low, high = clopper_pearson(successes, n, confidence=confidence)
    v = successes / n if value is None else value
    return interval_entry(v, low, high, method=CLOPPER_PEARSON, n=n)
