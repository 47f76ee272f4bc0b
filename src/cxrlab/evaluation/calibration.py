"""Calibration: reliability-diagram data and temperature scaling fitted on validation predictions.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 chosen to minimise
the negative log-likelihood on the validation split; it never changes the argmax, so accuracy and
the confusion matrix are unchanged and only the probabilities move. cxrlab's prediction files hold
probabilities, so their logs serve as logits (softmax(log p) = p, hence T = 1 reproduces them).

A fit is applied only when it is a fit: the minimiser must lie inside the search bounds
(:data:`T_BOUNDS`, not within 0.1% of either in log T) and must lower the validation NLL below
that of T = 1. Otherwise the report keeps the fitted value, its bounds and the reason, and the
test probabilities are left as they are (``temperature`` is ``None``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from cxrlab.evaluation.metrics import (
    N_BINS,
    PROB_EPS,
    brier_score,
    confidence_bins,
    encode_labels,
    expected_calibration_error,
    negative_log_likelihood,
)

logger = logging.getLogger(__name__)

#: Search range for the temperature.
T_BOUNDS = (0.01, 100.0)


def reliability_curve(y_true, y_score, *, labels: Sequence, n_bins: int = N_BINS) -> pd.DataFrame:
    """Reliability-diagram data: accuracy vs mean confidence per equal-width confidence bin.

    Returns:
        One row per bin (empty bins included, with nan means): ``lower``, ``upper``, ``count``,
        ``confidence`` (mean top-class probability), ``accuracy`` (fraction argmax == truth),
        ``gap`` (accuracy - confidence).
    """
    labels = list(labels)
    t = encode_labels(y_true, labels)
    scores = np.asarray(y_score, dtype=np.float64)
    confidence = scores.max(axis=1)
    correct = (scores.argmax(axis=1) == t).astype(np.float64)
    bins = confidence_bins(confidence, n_bins)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count.astype(int),
            "confidence": conf,
            "accuracy": acc,
            "gap": acc - conf,
        }
    )


def probabilities_to_logits(y_score) -> np.ndarray:
    """Log-probabilities (clipped at 1e-15) to use as logits."""
    return np.log(np.clip(np.asarray(y_score, dtype=np.float64), PROB_EPS, 1.0))


def apply_temperature(y_score, temperature: float, *, from_logits: bool = False) -> np.ndarray:
    """Softmax of logits / T; ``y_score`` is probabilities unless ``from_logits``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    z = np.asarray(y_score, dtype=np.float64) if from_logits else probabilities_to_logits(y_score)
    return np.exp(log_softmax(z / temperature, axis=1))


def _nll_at(z: np.ndarray, t: np.ndarray, temperature: float) -> float:
    zt = z / temperature
    return float(np.mean(logsumexp(zt, axis=1) - zt[np.arange(len(t)), t]))


def fit_temperature_report(
    y_true, y_score, *, labels: Sequence, from_logits: bool = False
) -> dict[str, Any]:
    """Fit T on these (validation) samples and say whether the fit can be applied.

    The search is over log T in [log 0.01, log 100] (bounded Brent); the NLL is convex in 1/T,
    so the minimum is unique.

    Returns:
        ``{"temperature": fitted T, "bounds": [lo, hi], "on_bound": bool, "val_nll_before": NLL at
        T = 1, "val_nll_after": NLL at the fitted T, "applied": bool, "reason": why not applied
        (None when applied)}``.
    """
    t = encode_labels(y_true, labels)
    if len(t) == 0:
        raise ValueError("Cannot fit a temperature on zero samples.")
    z = np.asarray(y_score, dtype=np.float64) if from_logits else probabilities_to_logits(y_score)
    lo, hi = (math.log(b) for b in T_BOUNDS)
    res = minimize_scalar(
        lambda u: _nll_at(z, t, math.exp(u)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = math.exp(res.x)
    before = _nll_at(z, t, 1.0)
    after = float(res.fun)
    on_bound = min(abs(res.x - lo), abs(res.x - hi)) < 1e-3 * (hi - lo)
    if before < 1e-9:
        reason = "the validation NLL is ~0 (every prediction correct with probability ~1)"
    elif on_bound:
        reason = (
            f"it lies on the search bound {list(T_BOUNDS)} (predictions unrelated to the labels?)"
        )
    elif not after < before - 1e-12:
        reason = "it does not lower the validation NLL below that of T = 1"
    else:
        reason = None
    return {
        "temperature": temperature,
        "bounds": list(T_BOUNDS),
        "on_bound": bool(on_bound),
        "val_nll_before": before,
        "val_nll_after": after,
        "applied": reason is None,
        "reason": reason,
    }


def fit_temperature(y_true, y_score, *, labels: Sequence, from_logits: bool = False) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on these (validation) samples.

    A warning is issued when the fit is not usable (see :func:`fit_temperature_report`): it lands
    on a bound, the NLL is ~0 (then any small T fits and the value means nothing), or it does
    not lower the validation NLL.
    """
    report = fit_temperature_report(y_true, y_score, labels=labels, from_logits=from_logits)
    if report["reason"]:
        warnings.warn(
            f"The fitted temperature {report['temperature']:.3g} is not reliable: "
            f"{report['reason']}; check the validation predictions.",
            UserWarning,
            stacklevel=2,
        )
    return report["temperature"]


def calibration_summary(
    y_true, y_score, *, labels: Sequence, n_bins: int = N_BINS
) -> dict[str, float]:
    """ECE, Brier score and NLL of one set of predictions."""
    return {
        "ece": expected_calibration_error(y_true, y_score, labels=labels, n_bins=n_bins),
        "brier": brier_score(y_true, y_score, labels=labels),
        "nll": negative_log_likelihood(y_true, y_score, labels=labels),
    }


def temperature_scaling(
    y_true_val,
    y_score_val,
    y_true_test,
    y_score_test,
    *,
    labels: Sequence,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Fit T on validation predictions and report test calibration before and after.

    A fit that lands on a search bound or does not lower the validation NLL is reported
    (``fit``) but not applied: ``temperature`` is then ``None`` and there is no ``after``.

    Returns:
        ``{"temperature" (applied T or None), "fit": :func:`fit_temperature_report`, "fitted_on":
        "val", "n_val", "n_bins", "before": {ece, brier, nll}, "after": {...},
        "reliability_before": DataFrame, "reliability_after": DataFrame,
        "test_probabilities_after": (N, K) array}``. The two DataFrames and the array are for
        figures; drop them before writing JSON.
    """
    labels = list(labels)
    fit = fit_temperature_report(y_true_val, y_score_val, labels=labels)
    out: dict[str, Any] = {
        "method": "temperature scaling (log-probabilities as logits), NLL minimised on val",
        "temperature": fit["temperature"] if fit["applied"] else None,
        "fit": fit,
        "fitted_on": "val",
        "n_val": int(len(y_true_val)),
        "n_bins": int(n_bins),
        "before": calibration_summary(y_true_test, y_score_test, labels=labels, n_bins=n_bins),
        "reliability_before": reliability_curve(
            y_true_test, y_score_test, labels=labels, n_bins=n_bins
        ),
    }
    if not fit["applied"]:
        out["note"] = (
            f"temperature T = {fit['temperature']:.3g} (search bounds {fit['bounds']}) not "
            f"applied: {fit['reason']}"
        )
        warnings.warn(f"Temperature scaling not applied: {out['note']}.", UserWarning, stacklevel=2)
        return out
    after = apply_temperature(y_score_test, fit["temperature"])
    logger.info(
        "Temperature scaling: T = %.3f fitted on %d validation predictions (NLL %.4f -> %.4f)",
        fit["temperature"],
        len(y_true_val),
        fit["val_nll_before"],
        fit["val_nll_after"],
    )
    out.update(
        after=calibration_summary(y_true_test, after, labels=labels, n_bins=n_bins),
        reliability_after=reliability_curve(y_true_test, after, labels=labels, n_bins=n_bins),
        test_probabilities_after=after,
    )
    return out
