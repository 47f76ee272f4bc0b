"""Operating points: one-vs-rest thresholds chosen on validation, applied to test and later sets.

A screening paper reports sensitivity at a fixed specificity with the threshold fixed before the
test set is looked at. For each class (COVID first when present), one-vs-rest on its predicted
probability, a sample is called positive when ``score >= threshold``. On the validation
predictions we choose:

* ``spec90`` / ``spec95``: the lowest threshold whose validation specificity is >= 90% / 95%
  (the most sensitive such rule);
* ``sens90`` / ``sens95``: the highest threshold whose validation sensitivity is >= 90% / 95%
  (the most specific such rule);
* ``youden``: the threshold maximising sensitivity + specificity - 1 (the highest on ties).

Candidate thresholds are the distinct validation scores and one just above the highest (calling
no validation sample positive).
Each threshold is then applied unchanged to the test predictions, where sensitivity, specificity,
PPV and NPV get Clopper-Pearson intervals and the binary confusion matrix is recorded. The
thresholds are kept in metrics.json so later sets (external validation) use the same rule:
:func:`apply_operating_points`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.evaluation.intervals import proportion_entry
from cxrlab.evaluation.metrics import encode_labels

#: Operating-point rules: name -> (which rate is constrained, target), in table order.
RULES: dict[str, tuple[str, float | None]] = {
    "spec90": ("specificity", 0.90),
    "spec95": ("specificity", 0.95),
    "sens90": ("sensitivity", 0.90),
    "sens95": ("sensitivity", 0.95),
    "youden": ("youden", None),
}
RULE_DISPLAY = {
    "spec90": "Specificity >= 90% on val",
    "spec95": "Specificity >= 95% on val",
    "sens90": "Sensitivity >= 90% on val",
    "sens95": "Sensitivity >= 95% on val",
    "youden": "Youden (max sens + spec - 1 on val)",
}


def class_order(classes: Sequence[str]) -> list[str]:
    """Classes with COVID first (when present), then the model's order."""
    classes = [str(c) for c in classes]
    first = [c for c in classes if c.lower() == "covid"]
    return first + [c for c in classes if c not in first]


def _rates_at(score: np.ndarray, pos: np.ndarray, thresholds: np.ndarray):
    """Sensitivity and specificity of ``score >= t`` for each t, two (T,) arrays (nan if 0/0)."""
    called = score[None, :] >= thresholds[:, None]
    p, n = pos.sum(), (~pos).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (called & pos).sum(axis=1) / p if p else np.full(len(thresholds), np.nan)
        spec = (~called & ~pos).sum(axis=1) / n if n else np.full(len(thresholds), np.nan)
    return sens, spec


def choose_thresholds(score, positive) -> dict[str, dict[str, Any]]:
    """The thresholds of :data:`RULES` for one class from validation scores.

    Args:
        score: (N,) predicted probability of the class.
        positive: (N,) bool, the sample belongs to the class.

    Returns:
        ``{rule: {"threshold", "val_sensitivity", "val_specificity"}}``; ``threshold`` is None
        (with ``"undefined"``) when the validation set lacks positives or negatives, or when no
        threshold meets the target.
    """
    score = np.asarray(score, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if pos.all() or not pos.any():
        why = "the validation set has no " + ("negatives" if pos.all() else "positives")
        return {r: {"threshold": None, "undefined": why} for r in RULES}
    candidates = np.r_[np.unique(score), np.nextafter(score.max(), np.inf)]
    sens, spec = _rates_at(score, pos, candidates)
    out = {}
    for rule, (rate, target) in RULES.items():
        if rate == "specificity":
            ok = np.flatnonzero(spec >= target - 1e-12)
            i = ok[0] if len(ok) else None  # lowest threshold meeting the target
        elif rate == "sensitivity":
            ok = np.flatnonzero(sens >= target - 1e-12)
            i = ok[-1] if len(ok) else None  # highest threshold meeting the target
        else:
            j = sens + spec - 1
            i = int(np.flatnonzero(j == j.max())[-1])
        if i is None:
            out[rule] = {"threshold": None, "undefined": f"no threshold reaches {rate} {target}"}
            continue
        out[rule] = {
            "threshold": float(candidates[i]),
            "val_sensitivity": float(sens[i]),
            "val_specificity": float(spec[i]),
        }
    return out


def binary_summary(
    score, positive, threshold: float, *, confidence: float = 0.95
) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV (Clopper-Pearson) and the 2x2 matrix of ``score >= t``."""
    score = np.asarray(score, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    called = score >= threshold
    tp = int((called & pos).sum())
    fp = int((called & ~pos).sum())
    fn = int((~called & pos).sum())
    tn = int((~called & ~pos).sum())
    return {
        "sensitivity": proportion_entry(
            tp, tp + fn, confidence, undefined="the set has no positives"
        ),
        "specificity": proportion_entry(
            tn, tn + fp, confidence, undefined="the set has no negatives"
        ),
        "ppv": proportion_entry(tp, tp + fp, confidence, undefined="nothing was called positive"),
        "npv": proportion_entry(tn, tn + fn, confidence, undefined="nothing was called negative"),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def operating_points(
    y_true_val,
    y_score_val,
    y_true_test,
    y_score_test,
    *,
    labels: Sequence,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every class's operating points chosen on val and evaluated on test.

    Returns:
        ``{"chosen_on": "val", "applied_to": "test", "rule": "positive if score >= threshold",
        "classes": {class: {rule: {"threshold", "val_sensitivity", "val_specificity", "test":
        {sensitivity, specificity, ppv, npv, confusion}}}}}``, classes COVID first.
    """
    labels = [str(c) for c in labels]
    tv = encode_labels(y_true_val, labels)
    tt = encode_labels(y_true_test, labels)
    sv = np.asarray(y_score_val, dtype=np.float64)
    st = np.asarray(y_score_test, dtype=np.float64)
    classes = {}
    for c in class_order(labels):
        j = labels.index(c)
        chosen = choose_thresholds(sv[:, j], tv == j)
        for entry in chosen.values():
            if entry["threshold"] is not None:
                entry["test"] = binary_summary(
                    st[:, j], tt == j, entry["threshold"], confidence=confidence
                )
        classes[c] = chosen
    return {
        "chosen_on": "val",
        "applied_to": "test",
        "rule": "one-vs-rest: positive if the class probability >= threshold",
        "confidence": float(confidence),
        "classes": classes,
    }


def apply_operating_points(
    points: Mapping[str, Any], y_true, y_score, *, labels: Sequence, confidence: float = 0.95
) -> dict[str, dict[str, Any]]:
    """Apply thresholds saved by :func:`operating_points` (metrics.json) to another set.

    Returns:
        ``{class: {rule: binary_summary}}`` for every rule with a threshold.
    """
    labels = [str(c) for c in labels]
    t = encode_labels(y_true, labels)
    s = np.asarray(y_score, dtype=np.float64)
    out = {}
    for c, rules in points["classes"].items():
        j = labels.index(c)
        out[c] = {
            rule: binary_summary(s[:, j], t == j, e["threshold"], confidence=confidence)
            for rule, e in rules.items()
            if e.get("threshold") is not None
        }
    return out


def operating_points_table(points: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (class, rule): threshold, test sensitivity/specificity/PPV/NPV with CIs, 2x2."""
    from cxrlab.reports.style import class_label
    from cxrlab.reports.tables import format_ci

    rows = []
    for c, rules in points["classes"].items():
        for rule, e in rules.items():
            row = {"Class (vs rest)": class_label(c), "Rule (chosen on val)": RULE_DISPLAY[rule]}
            if e.get("threshold") is None:
                row["Threshold"] = "undefined"
                rows.append(row)
                continue
            t = e["threshold"]
            row["Threshold"] = f"{t:.4f}"
            test = e["test"]
            for key, label in (
                ("sensitivity", "Sensitivity (%)"),
                ("specificity", "Specificity (%)"),
                ("ppv", "PPV (%)"),
                ("npv", "NPV (%)"),
            ):
                row[label] = format_ci(test[key], percent=True)
            m = test["confusion"]
            row["TP/FP/FN/TN"] = f"{m['tp']}/{m['fp']}/{m['fn']}/{m['tn']}"
            rows.append(row)
    return pd.DataFrame(rows)
