"""DeLong's test for paired ROC AUCs (DeLong, DeLong & Clarke-Pearson, Biometrics 1988).

For one binary problem with m positives and n negatives, each positive's placement
``V10_i = mean_k psi(X_i, Y_k)`` and each negative's ``V01_k = mean_i psi(X_i, Y_k)`` (psi = 1 if
the positive scores higher, 1/2 on a tie) average to the AUC, and the covariance of two models'
AUCs on the same samples is ``S10_ab / m + S01_ab / n`` with ``S`` the sample covariances
(ddof 1) of the placements. Placements come from midranks (Sun & Xu 2014), O(N log N).

For the macro (one-vs-rest mean) AUC, each class's AUC is written per sample as
``psi_i = (V10_i - AUC) / sqrt(m (m - 1))`` for its positives and
``(V01_k - AUC) / sqrt(n (n - 1))`` for its negatives; then ``sum_i psi_i^a psi_i^b`` is exactly
DeLong's covariance within a class, and the same sum across classes estimates the covariance
between classes' AUCs (they share samples), so the variance of the macro difference is that of
``sum_i (1/K) sum_j (psi_ij^A - psi_ij^B)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from cxrlab.evaluation.metrics import encode_labels

TEST = "DeLong test for two correlated ROC AUCs (two-sided, normal approximation)"


def _components(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC per model, (M,), and per-sample components psi, (M, N) (see module docstring)."""
    pos = np.asarray(positive, dtype=bool)
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's test needs at least 2 positives and 2 negatives, got {m} and {n}."
        )
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    r_all = rankdata(scores, axis=1)
    r_pos = rankdata(scores[:, pos], axis=1)
    r_neg = rankdata(scores[:, ~pos], axis=1)
    v10 = (r_all[:, pos] - r_pos) / n
    v01 = 1.0 - (r_all[:, ~pos] - r_neg) / m
    auc = v10.mean(axis=1)
    psi = np.empty_like(scores)
    psi[:, pos] = (v10 - auc[:, None]) / math.sqrt(m * (m - 1))
    psi[:, ~pos] = (v01 - auc[:, None]) / math.sqrt(n * (n - 1))
    return auc, psi


def delong_covariance(positive, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for M models scored on the same samples.

    Args:
        positive: (N,) bool truth.
        scores: (M, N) scores, higher = more likely positive.

    Returns:
        ``(auc (M,), cov (M, M))``.
    """
    auc, psi = _components(positive, scores)
    return auc, psi @ psi.T


def _test(diff: float, var: float, confidence: float) -> dict[str, Any]:
    se = math.sqrt(max(var, 0.0))
    zq = norm.ppf(0.5 + confidence / 2)
    if se == 0:
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    return {
        "difference": float(diff),
        "se": se,
        "z": z if math.isfinite(z) else None,
        "p_value": p,
        "ci_low": float(diff - zq * se),
        "ci_high": float(diff + zq * se),
    }


def delong_test(positive, score_a, score_b, *, confidence: float = 0.95) -> dict[str, Any]:
    """DeLong's paired test of AUC(A) = AUC(B) for one binary problem.

    Returns:
        ``{"auc_a", "auc_b", "difference" (A - B), "se", "z", "p_value", "ci_low", "ci_high",
        "test"}``; the interval is difference +/- z * se.
    """
    auc, cov = delong_covariance(positive, np.vstack([score_a, score_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        **_test(auc[0] - auc[1], var, confidence),
        "test": TEST,
    }


def delong_ovr(
    y_true, y_score_a, y_score_b, *, labels: Sequence, confidence: float = 0.95
) -> dict[str, Any]:
    """DeLong's test per class one-vs-rest and for the macro AUC, two runs on the same images.

    Classes without 2 positives and 2 negatives are skipped (``undefined`` says why) and left out
    of the macro mean, as they are of the macro AUC itself.

    Returns:
        ``{"per_class": {class: delong_test result}, "macro": {...}, "test"}``.
    """
    labels = list(labels)
    t = encode_labels(y_true, labels)
    sa = np.asarray(y_score_a, dtype=np.float64)
    sb = np.asarray(y_score_b, dtype=np.float64)
    per_class: dict[str, Any] = {}
    psis, diffs, aucs = [], [], []
    for j, c in enumerate(labels):
        pos = t == j
        try:
            auc, psi = _components(pos, np.vstack([sa[:, j], sb[:, j]]))
        except ValueError as exc:
            per_class[str(c)] = {"undefined": str(exc)}
            continue
        d = psi[0] - psi[1]
        per_class[str(c)] = {
            "auc_a": float(auc[0]),
            "auc_b": float(auc[1]),
            **_test(auc[0] - auc[1], float(d @ d), confidence),
        }
        psis.append(d)
        diffs.append(auc[0] - auc[1])
        aucs.append(auc)
    if psis:
        d = np.mean(psis, axis=0)
        a = np.mean(aucs, axis=0)
        macro = {
            "auc_a": float(a[0]),
            "auc_b": float(a[1]),
            "n_classes": len(psis),
            **_test(float(np.mean(diffs)), float(d @ d), confidence),
        }
    else:
        macro = {"undefined": "no class has 2 positives and 2 negatives"}
    return {"per_class": per_class, "macro": macro, "test": TEST}
