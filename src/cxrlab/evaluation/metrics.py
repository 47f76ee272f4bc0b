"""Classification, ranking and calibration metrics, written once as weighted pure functions.

Every metric is computed from per-sample weights, so the same code gives the point estimate
(all weights 1) and every bootstrap resample (weights = how often each sample was drawn, one row
per resample). Functions are shaped like scikit-learn's: truth first, options keyword-only, the
full ``labels`` list always passed so a split missing a class still gives a K x K matrix.

Conventions (the seed's published numbers are scikit-learn macro averages):

* precision (PPV), recall (sensitivity), F1, specificity and NPV per class are ``nan``
  (undefined, written as ``null`` with the reason) where their denominator is 0 (precision: class
  never predicted; recall: class absent; F1 = 2TP / (2TP + FP + FN): class absent and never
  predicted; specificity: every sample belongs to the class; NPV: every sample predicted as the
  class). In the macro and weighted averages an undefined per-class value counts as **0**, with an
  :class:`UndefinedMetricWarning` naming the class: exactly scikit-learn's
  ``precision_recall_fscore_support`` with its default ``zero_division`` (what the seed's 64.50%
  macro precision was computed with). A model predicting one class for every image of a balanced
  3-class test set has macro precision (1/3 + 0 + 0) / 3 = 11.1%, not 33.3%.
* ROC AUC and average precision are one-vs-rest per class (ties count one half, AP is the
  step-wise sum of ``sklearn.metrics.average_precision_score``); the macro value is the mean over
  classes where they are defined (the class is present and not every sample belongs to it).
* ECE uses ``n_bins`` (15) equal-width bins of the top-class probability on (0, 1], bins closed on
  the right: ``sum_b |sum_{i in b} (correct_i - confidence_i)| / N``; correct: argmax == truth.
* Brier score is the multiclass form: the mean over samples of the sum over classes of
  ``(p_ik - y_ik)^2`` with one-hot ``y``; it lies in [0, 2] (0 is perfect; scikit-learn's binary
  ``brier_score_loss`` is half of this for two classes).
* NLL is the mean of ``-log p_i,true`` with probabilities clipped to [1e-15, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

#: Probabilities are clipped to this floor before taking logs.
PROB_EPS = 1e-15
#: Default number of equal-width confidence bins for ECE and reliability diagrams.
N_BINS = 15

Average = Literal["macro", "weighted"] | None


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for some class (0/0): ``nan`` per class, 0 in the averages."""


# --------------------------------------------------------------------------------------------
# Encoding and weights


def encode_labels(
    y: Sequence | np.ndarray, labels: Sequence, *, name: str = "y_true"
) -> np.ndarray:
    """Map class names (or any hashable labels) to integer positions in ``labels``.

    Raises:
        ValueError: ``y`` holds a value that is not in ``labels``.
    """
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}.")
    values = np.asarray(y, dtype=object).ravel()
    codes = pd.Index(labels).get_indexer(values)
    if (codes < 0).any():
        unknown = sorted({str(v) for v in values[codes < 0]})
        raise ValueError(
            f"{name} contains label(s) {unknown} that are not in labels {labels}; pass the full "
            "label list of the model."
        )
    return codes.astype(np.int64)


def _weights(sample_weight, n: int) -> tuple[np.ndarray, bool]:
    """Return weights as (B, n) float64 and whether the input was batched (2-D)."""
    if sample_weight is None:
        return np.ones((1, n)), False
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 1:
        if w.shape[0] != n:
            raise ValueError(f"sample_weight has {w.shape[0]} entries for {n} samples.")
        return w[None, :], False
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(
            f"sample_weight must be (n,) or (n_resamples, n) with n={n}, got {w.shape}."
        )
    return w, True


def _scores(y_score, n: int, k: int) -> np.ndarray:
    s = np.asarray(y_score, dtype=np.float64)
    if s.shape != (n, k):
        raise ValueError(
            f"y_score must have shape (n_samples, n_labels) = ({n}, {k}), got {s.shape}."
        )
    return s


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _mean(x: np.ndarray, *, nan_as_zero: bool, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean over the last axis, optionally weighted; nan entries count as 0 (scikit-learn's
    default zero_division) or are left out (nan where every entry is nan)."""
    w = np.ones_like(x) if weights is None else np.broadcast_to(weights, x.shape).astype(np.float64)
    ok = ~np.isnan(x)
    if not nan_as_zero:
        w = np.where(ok, w, 0.0)
    return _div((np.where(ok, x, 0.0) * w).sum(axis=-1), w.sum(axis=-1))


# --------------------------------------------------------------------------------------------
# Label metrics from confusion matrices


def confusion_from_codes(t: np.ndarray, p: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """Weighted confusion matrices, (B, K, K): rows are true classes, columns predictions."""
    pair = t * k + p
    if weights.shape[0] == 1:
        cm = np.bincount(pair, weights=weights[0], minlength=k * k)[None, :]
    else:
        onehot = np.zeros((len(pair), k * k))
        onehot[np.arange(len(pair)), pair] = 1.0
        cm = weights @ onehot
    return cm.reshape(-1, k, k)


def rates_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class and averaged label metrics from confusion matrices, silently nan where undefined.

    Undefined per-class values are nan; the macro and weighted averages count them as 0.

    Args:
        cm: (..., K, K) counts, rows true, columns predicted.

    Returns:
        ``accuracy``, ``macro_*``/``weighted_*`` (precision, recall, f1; macro specificity) with
        shape (...,), and ``precision``, ``recall``, ``specificity``, ``npv``, ``f1``,
        ``support`` with shape (..., K).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1, keepdims=True)
    fp = predicted - tp
    fn = support - tp
    tn = total - tp - fp - fn
    out = {
        "accuracy": _div(tp.sum(axis=-1), total[..., 0]),
        "precision": _div(tp, predicted),
        "recall": _div(tp, support),
        "specificity": _div(tn, tn + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "support": support,
    }
    for name in ("precision", "recall", "f1", "specificity"):
        out[f"macro_{name}"] = _mean(out[name], nan_as_zero=True)
    for name in ("precision", "recall", "f1"):
        out[f"weighted_{name}"] = _mean(out[name], nan_as_zero=True, weights=support)
    return out


# --------------------------------------------------------------------------------------------
# Ranking metrics (one-vs-rest) under weights


def _grouped_sorted(score: np.ndarray, pos: np.ndarray, weights: np.ndarray):
    """Positive and negative weight per distinct score, ascending: two (B, G) arrays."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    w = weights[:, order]
    pw = w * pos[order]
    nw = w - pw
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    if len(starts) < len(s):
        pw = np.add.reduceat(pw, starts, axis=1)
        nw = np.add.reduceat(nw, starts, axis=1)
    return pw, nw


def _auc_ap_one_class(score: np.ndarray, pos: np.ndarray, weights: np.ndarray):
    """ROC AUC (ties count 1/2) and step-wise average precision for one class, each (B,)."""
    pw, nw = _grouped_sorted(score, pos, weights)
    p_tot = pw.sum(axis=1)
    n_tot = nw.sum(axis=1)
    neg_below = np.cumsum(nw, axis=1) - nw
    auc = _div((pw * (neg_below + 0.5 * nw)).sum(axis=1), p_tot * n_tot)
    pw_d, nw_d = pw[:, ::-1], nw[:, ::-1]
    tp = np.cumsum(pw_d, axis=1)
    fp = np.cumsum(nw_d, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
    ap = _div((pw_d * prec).sum(axis=1), p_tot)
    return auc, ap


def ranking_from_codes(
    t: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """One-vs-rest ROC AUC and average precision per class, (B, K), plus macro means, (B,)."""
    k = scores.shape[1]
    auc = np.empty((weights.shape[0], k))
    ap = np.empty((weights.shape[0], k))
    for j in range(k):
        auc[:, j], ap[:, j] = _auc_ap_one_class(scores[:, j], t == j, weights)
    return {
        "roc_auc": auc,
        "average_precision": ap,
        "macro_roc_auc": _mean(auc, nan_as_zero=False),
        "macro_average_precision": _mean(ap, nan_as_zero=False),
    }


# --------------------------------------------------------------------------------------------
# Calibration metrics under weights


def confidence_bins(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index in [0, n_bins) of each confidence; bins are (i/n, (i+1)/n], 0 goes to bin 0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def calibration_from_codes(
    t: np.ndarray, scores: np.ndarray, weights: np.ndarray, *, n_bins: int = N_BINS
) -> dict[str, np.ndarray]:
    """ECE, multiclass Brier score and NLL, each (B,)."""
    n, k = scores.shape
    confidence = scores.max(axis=1)
    correct = (scores.argmax(axis=1) == t).astype(np.float64)
    bins = confidence_bins(confidence, n_bins)
    gap = np.zeros((n, n_bins))
    gap[np.arange(n), bins] = correct - confidence
    onehot = np.zeros((n, k))
    onehot[np.arange(n), t] = 1.0
    sq = ((scores - onehot) ** 2).sum(axis=1)
    nll = -np.log(np.clip(scores[np.arange(n), t], PROB_EPS, 1.0))
    total = weights.sum(axis=1)
    return {
        "ece": _div(np.abs(weights @ gap).sum(axis=1), total),
        "brier": _div(weights @ sq, total),
        "nll": _div(weights @ nll, total),
    }


# --------------------------------------------------------------------------------------------
# Everything at once


#: Scalar metrics :func:`compute_metrics` returns (shape () or (B,)), in display order.
SCALAR_METRICS: tuple[str, ...] = (
    "accuracy", "macro_precision", "macro_recall", "macro_f1", "macro_specificity",
    "weighted_precision", "weighted_recall", "weighted_f1",
    "macro_roc_auc", "macro_average_precision", "ece", "brier", "nll",
)  # fmt: skip
#: Per-class metrics :func:`compute_metrics` returns (shape (K,) or (B, K)).
PER_CLASS_METRICS: tuple[str, ...] = (
    "precision", "recall", "specificity", "npv", "f1", "roc_auc", "average_precision",
)  # fmt: skip


def compute_metrics_codes(
    t: np.ndarray,
    p: np.ndarray,
    scores: np.ndarray | None,
    weights: np.ndarray,
    *,
    k: int,
    n_bins: int = N_BINS,
) -> dict[str, np.ndarray]:
    """All metrics from integer codes under (B, N) weights, silently nan where undefined."""
    cm = confusion_from_codes(t, p, k, weights)
    out = rates_from_confusion(cm)
    out["confusion_matrix"] = cm
    if scores is not None:
        out.update(ranking_from_codes(t, scores, weights))
        out.update(calibration_from_codes(t, scores, weights, n_bins=n_bins))
    return out


def compute_metrics(
    y_true,
    y_score=None,
    *,
    labels: Sequence,
    y_pred=None,
    sample_weight=None,
    n_bins: int = N_BINS,
    warn: bool = True,
) -> dict[str, np.ndarray]:
    """Compute every metric cxrlab reports.

    Args:
        y_true: (N,) true labels, values in ``labels``.
        y_score: (N, K) class probabilities, columns in ``labels`` order; optional (label metrics
            only without it).
        labels: The model's classes in output order.
        y_pred: (N,) predicted labels; default the argmax of ``y_score``.
        sample_weight: (N,) weights, or (B, N) for B weighted copies at once (bootstrap).
        n_bins: ECE bins.
        warn: Warn (:class:`UndefinedMetricWarning`) about undefined per-class values.

    Returns:
        A dict of :data:`SCALAR_METRICS` (float, or (B,) when weights are 2-D), of
        :data:`PER_CLASS_METRICS` and ``support`` ((K,) or (B, K)) and ``confusion_matrix``
        ((K, K) or (B, K, K)). Ranking and calibration metrics need ``y_score``.
    """
    labels = list(labels)
    t = encode_labels(y_true, labels)
    k = len(labels)
    scores = None if y_score is None else _scores(y_score, len(t), k)
    if y_pred is None:
        if scores is None:
            raise ValueError("Pass y_pred or y_score (whose argmax is the prediction).")
        p = scores.argmax(axis=1)
    else:
        p = encode_labels(y_pred, labels, name="y_pred")
        if len(p) != len(t):
            raise ValueError(f"y_true has {len(t)} samples but y_pred has {len(p)}.")
    w, batched = _weights(sample_weight, len(t))
    out = compute_metrics_codes(t, p, scores, w, k=k, n_bins=n_bins)
    if warn:
        _warn_undefined(out, labels)
    if not batched:
        out = {name: (float(v[0]) if v.ndim == 1 else v[0]) for name, v in out.items()}
    return out


#: Why each per-class metric can be undefined (written beside ``null`` in metrics.json).
UNDEFINED_REASON = {
    "precision": "no sample was predicted as the class",
    "recall": "the class has no true samples",
    "f1": "the class has no true and no predicted samples",
    "specificity": "every sample belongs to the class",
    "npv": "every sample was predicted as the class",
    "roc_auc": "the class has no true samples or no other samples",
    "average_precision": "the class has no true samples",
}


def _warn_undefined(out: dict[str, np.ndarray], labels: list, stacklevel: int = 3) -> None:
    """One warning listing every per-class metric that is nan (0/0) in the first weight row."""
    parts = []
    for name, reason in UNDEFINED_REASON.items():
        if name not in out:
            continue
        bad = [str(labels[j]) for j in np.flatnonzero(np.isnan(out[name][0]))]
        if bad:
            parts.append(f"{name} is undefined for class(es) {bad} ({reason})")
    if parts:
        warnings.warn(
            "; ".join(parts) + ". Reported as undefined per class; precision, recall, F1 and "
            "specificity count as 0 in the macro and weighted averages (scikit-learn's default "
            "zero_division), ROC AUC and AP are averaged over the classes where defined.",
            UndefinedMetricWarning,
            stacklevel=stacklevel,
        )


# --------------------------------------------------------------------------------------------
# Thin sklearn-shaped wrappers


def _label_metrics(y_true, y_pred, labels, sample_weight) -> dict[str, np.ndarray]:
    labels = list(labels)
    t = encode_labels(y_true, labels)
    p = encode_labels(y_pred, labels, name="y_pred")
    if len(p) != len(t):
        raise ValueError(f"y_true has {len(t)} samples but y_pred has {len(p)}.")
    w, _ = _weights(sample_weight, len(t))
    out = rates_from_confusion(confusion_from_codes(t, p, len(labels), w))
    return {name: v[0] for name, v in out.items()}


def confusion_matrix(y_true, y_pred, *, labels: Sequence, sample_weight=None) -> np.ndarray:
    """(K, K) confusion matrix, rows true, columns predicted, in ``labels`` order.

    Integer counts without ``sample_weight``; summed weights with it.
    """
    labels = list(labels)
    t = encode_labels(y_true, labels)
    p = encode_labels(y_pred, labels, name="y_pred")
    w, _ = _weights(sample_weight, len(t))
    cm = confusion_from_codes(t, p, len(labels), w)[0]
    return cm.round().astype(np.int64) if sample_weight is None else cm


def accuracy(y_true, y_pred, *, labels: Sequence | None = None, sample_weight=None) -> float:
    """Fraction of samples whose prediction equals the truth (nan for no samples)."""
    if labels is None:
        labels = sorted(
            set(np.asarray(y_true, dtype=object)) | set(np.asarray(y_pred, dtype=object)), key=str
        )
    return float(_label_metrics(y_true, y_pred, labels, sample_weight)["accuracy"])


def _warn_names(metrics: dict[str, np.ndarray], labels, names: Sequence[str]) -> None:
    _warn_undefined({n: np.asarray(metrics[n])[None, :] for n in names}, list(labels), stacklevel=4)


def precision_recall_fscore_support(
    y_true, y_pred, *, labels: Sequence, average: Average = None, sample_weight=None
):
    """Precision, recall (sensitivity), F1 and support, like scikit-learn's default.

    Returns:
        ``(precision, recall, f1, support)``: (K,) arrays for ``average=None``, ``nan`` where
        undefined (scikit-learn with ``zero_division=np.nan``); floats and ``support=None`` for
        ``"macro"`` (unweighted mean over all classes, undefined ones counted as 0, exactly
        scikit-learn's default ``zero_division``) or ``"weighted"`` (mean weighted by support).
    """
    m = _label_metrics(y_true, y_pred, labels, sample_weight)
    _warn_names(m, labels, ("precision", "recall", "f1"))
    if average is None:
        return m["precision"], m["recall"], m["f1"], m["support"]
    if average not in ("macro", "weighted"):
        raise ValueError(f"average must be None, 'macro' or 'weighted', got {average!r}.")
    return tuple(float(m[f"{average}_{n}"]) for n in ("precision", "recall", "f1")) + (None,)


def specificity(
    y_true, y_pred, *, labels: Sequence, average: Literal["macro"] | None = None, sample_weight=None
):
    """One-vs-rest specificity TN / (TN + FP) per class ((K,)), or its macro mean (float)."""
    m = _label_metrics(y_true, y_pred, labels, sample_weight)
    _warn_names(m, labels, ("specificity",))
    if average is None:
        return m["specificity"]
    if average != "macro":
        raise ValueError(f"average must be None or 'macro', got {average!r}.")
    return float(m["macro_specificity"])


def _ranking(y_true, y_score, labels, sample_weight) -> dict[str, np.ndarray]:
    labels = list(labels)
    t = encode_labels(y_true, labels)
    w, _ = _weights(sample_weight, len(t))
    return {
        n: v[0] for n, v in ranking_from_codes(t, _scores(y_score, len(t), len(labels)), w).items()
    }


def roc_auc_ovr(
    y_true,
    y_score,
    *,
    labels: Sequence,
    average: Literal["macro"] | None = "macro",
    sample_weight=None,
):
    """One-vs-rest ROC AUC per class ((K,), ``average=None``) or their mean where defined."""
    r = _ranking(y_true, y_score, labels, sample_weight)
    _warn_names(r, labels, ("roc_auc",))
    return r["roc_auc"] if average is None else float(r["macro_roc_auc"])


def average_precision_ovr(
    y_true,
    y_score,
    *,
    labels: Sequence,
    average: Literal["macro"] | None = "macro",
    sample_weight=None,
):
    """One-vs-rest average precision per class ((K,), ``average=None``) or their mean."""
    r = _ranking(y_true, y_score, labels, sample_weight)
    _warn_names(r, labels, ("average_precision",))
    return r["average_precision"] if average is None else float(r["macro_average_precision"])


def _calibration(y_true, y_score, labels, sample_weight, n_bins=N_BINS) -> dict[str, np.ndarray]:
    labels = list(labels)
    t = encode_labels(y_true, labels)
    w, _ = _weights(sample_weight, len(t))
    return calibration_from_codes(t, _scores(y_score, len(t), len(labels)), w, n_bins=n_bins)


def expected_calibration_error(
    y_true, y_score, *, labels: Sequence, n_bins: int = N_BINS, sample_weight=None
) -> float:
    """Expected calibration error of the top-class probability (see module docstring)."""
    return float(_calibration(y_true, y_score, labels, sample_weight, n_bins)["ece"][0])


def brier_score(y_true, y_score, *, labels: Sequence, sample_weight=None) -> float:
    """Multiclass Brier score: per-sample sum over classes of (p - onehot)^2, averaged (0 to 2)."""
    return float(_calibration(y_true, y_score, labels, sample_weight)["brier"][0])


def negative_log_likelihood(y_true, y_score, *, labels: Sequence, sample_weight=None) -> float:
    """Mean negative log probability of the true class (natural log, probabilities clipped)."""
    return float(_calibration(y_true, y_score, labels, sample_weight)["nll"][0])
