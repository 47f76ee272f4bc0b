"""Internal next to external, and metrics per source: the summaries of an external validation.

Metrics here are computed over the classes *present* in the external set (a model class absent
from it would count as 0 in a macro average and say nothing about transfer), on both sets alike,
so the two columns compare the same quantity:

* accuracy and per-class sensitivity: Clopper-Pearson intervals (the proportions of
  metrics.json);
* macro-F1 (classes present; an undefined F1 counts as 0, scikit-learn's default), macro AUC
  (one-vs-rest, classes present) and ECE: stratified BCa bootstrap, as metrics.json;
* the difference external - internal: an **independent** stratified percentile bootstrap (the two
  sets hold different images, so each is resampled on its own and the resampled values are
  subtracted), with the 2.5 and 97.5 percentiles of the differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.evaluation.bootstrap import bootstrap_samples, jackknife_values, percentile_interval
from cxrlab.evaluation.intervals import (
    BOOTSTRAP,
    bootstrap_entry,
    interval_entry,
    proportion_entry,
)
from cxrlab.evaluation.metrics import compute_metrics_codes, encode_labels

#: Metrics of the internal-vs-external table, in display order (sensitivities follow accuracy).
SUMMARY_METRICS = ("accuracy", "macro_f1", "macro_roc_auc", "ece")
DISPLAY = {
    "accuracy": ("Accuracy (%)", True),
    "macro_f1": ("Macro-F1, classes present (%)", True),
    "macro_roc_auc": ("Macro AUC, classes present", False),
    "ece": ("ECE", False),
}


def present_metrics(
    t: np.ndarray, p: np.ndarray, scores: np.ndarray, w: np.ndarray, *, k: int, present: list[int]
) -> dict[str, np.ndarray]:
    """Accuracy, per-class recall and macros over ``present`` classes, under (B, N) weights."""
    out = compute_metrics_codes(t, p, scores, w, k=k)
    f1 = np.nan_to_num(out["f1"][:, present], nan=0.0)
    auc = out["roc_auc"][:, present]
    with np.errstate(invalid="ignore"):
        defined = ~np.isnan(auc)
        macro_auc = np.where(
            defined.any(axis=1), np.nansum(auc, axis=1) / np.maximum(defined.sum(axis=1), 1), np.nan
        )
    return {
        "accuracy": out["accuracy"],
        "recall": out["recall"],
        "macro_f1": f1.mean(axis=1),
        "macro_roc_auc": macro_auc,
        "ece": out["ece"],
    }


class SetSummary:
    """Point estimates, intervals and bootstrap samples of one set's summary metrics.

    Attributes:
        n: Samples.
        entries: Metric -> interval entry (``sensitivity:<class>`` for the per-class ones).
        samples: Metric -> (n_boot,) resampled values (for differences).
    """

    def __init__(
        self,
        y_true,
        y_score,
        *,
        labels: Sequence[str],
        present: Sequence[str],
        n_boot: int,
        seed: int,
        confidence: float = 0.95,
    ):
        labels = list(labels)
        k = len(labels)
        t = encode_labels(y_true, labels)
        scores = np.asarray(y_score, dtype=np.float64)
        p = scores.argmax(axis=1)
        idx = [labels.index(c) for c in present]
        self.n = len(t)

        def fn(w):
            return present_metrics(t, p, scores, w, k=k, present=idx)

        point = fn(np.ones((1, len(t))))
        boot = bootstrap_samples(fn, t, n_boot=n_boot, seed=seed)
        jack = jackknife_values(fn, len(t))
        self.entries: dict[str, dict[str, Any]] = {}
        self.samples: dict[str, np.ndarray] = {}
        correct = int((t == p).sum())
        self.entries["accuracy"] = proportion_entry(correct, len(t), confidence)
        self.samples["accuracy"] = boot["accuracy"]
        for c, j in zip(present, idx, strict=True):
            pos = t == j
            self.entries[f"sensitivity:{c}"] = proportion_entry(
                int((pos & (p == j)).sum()), int(pos.sum()), confidence, undefined="no sample"
            )
            self.samples[f"sensitivity:{c}"] = boot["recall"][:, j]
        for name in ("macro_f1", "macro_roc_auc", "ece"):
            self.entries[name] = bootstrap_entry(
                point[name][0],
                boot[name],
                confidence,
                undefined="needs two classes present" if name == "macro_roc_auc" else None,
                jackknife=jack[name],
            )
            self.samples[name] = boot[name]

    def names(self) -> list[str]:
        return list(self.entries)


def difference(
    external: SetSummary, internal: SetSummary, name: str, *, confidence: float = 0.95
) -> dict[str, Any]:
    """External - internal for one metric, independent percentile bootstrap interval."""
    a, b = external.entries[name]["value"], internal.entries[name]["value"]
    if a is None or b is None:
        return interval_entry(float("nan"), None, None, method=BOOTSTRAP, undefined="undefined")
    diff = external.samples[name] - internal.samples[name]
    low, high = percentile_interval(diff, confidence)
    return interval_entry(float(a) - float(b), low, high, method=BOOTSTRAP)


def metric_label(name: str) -> tuple[str, bool]:
    """Display label and whether the metric is shown in percent."""
    if name.startswith("sensitivity:"):
        return f"Sensitivity {name.split(':', 1)[1]} (%)", True
    return DISPLAY[name]


def comparison(
    internal: SetSummary, externals: dict[str, SetSummary], *, confidence: float = 0.95
) -> dict[str, Any]:
    """metrics.json's ``internal_vs_external`` block: values and differences with intervals."""
    out: dict[str, Any] = {
        "classes_compared": [n.split(":", 1)[1] for n in internal.names() if ":" in n],
        "difference": "external - internal; independent stratified percentile bootstrap of "
        "the two sets",
        "internal": {"n": internal.n, **internal.entries},
    }
    for name, ext in externals.items():
        out[name] = {
            "n": ext.n,
            **ext.entries,
            "difference": {m: difference(ext, internal, m, confidence=confidence) for m in
                           internal.names()},
        }  # fmt: skip
    return out


def comparison_table(block: dict[str, Any], *, keep_overlap: bool = False) -> pd.DataFrame:
    """One row per metric: internal test, each external set, and each difference (95% CI)."""
    from cxrlab.reports.tables import format_ci

    internal = block["internal"]
    externals = [k for k in block if k not in ("classes_compared", "difference", "internal")]
    rows = []
    for name in internal:
        if name == "n":
            continue
        label, pct = metric_label(name)
        row = {"Metric": label, f"Internal test (n = {internal['n']})": format_ci(
            internal[name], percent=pct)}  # fmt: skip
        for ext in externals:
            e = block[ext]
            tag = f"{ext} (n = {e['n']}{', overlap kept' if keep_overlap else ''})"
            row[tag] = format_ci(e[name], percent=pct)
            row[f"Difference {ext} - internal"] = format_ci(e["difference"][name], percent=pct)
        rows.append(row)
    return pd.DataFrame(rows)


def per_source(
    y_true,
    y_score,
    sources,
    *,
    labels: Sequence[str],
    n_boot: int,
    seed: int,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Metrics per source (``""`` = unknown): n, counts per class, accuracy, sensitivities, AUC.

    Each source's metrics are over the classes present in it; macro AUC needs two of them.
    """
    labels = list(labels)
    y_true = np.asarray(y_true).astype(str)
    sources = np.asarray(sources).astype(str)
    scores = np.asarray(y_score, dtype=np.float64)
    out = {}
    for src in sorted(set(sources.tolist())):
        rows = sources == src
        present = [c for c in labels if (y_true[rows] == c).any()]
        summary = SetSummary(
            y_true[rows], scores[rows], labels=labels, present=present, n_boot=n_boot, seed=seed,
            confidence=confidence,
        )  # fmt: skip
        out[src or "(unknown)"] = {
            "n": int(rows.sum()),
            "n_per_class": {c: int((y_true[rows] == c).sum()) for c in present},
            **summary.entries,
        }
    return out


def per_source_table(block: dict[str, dict[str, Any]], *, set_name: str) -> pd.DataFrame:
    """One row per source: set, source, n, class counts, accuracy, macro AUC, sensitivities."""
    from cxrlab.reports.tables import format_ci

    rows = []
    for src, e in block.items():
        row = {
            "Set": set_name,
            "Source": src,
            "n": e["n"],
            "Images per class": ", ".join(f"{c} {n}" for c, n in e["n_per_class"].items()),
            "Accuracy (%)": format_ci(e["accuracy"], percent=True),
            "Macro AUC": format_ci(e["macro_roc_auc"], percent=False),
        }
        for name, entry in e.items():
            if name.startswith("sensitivity:"):
                row[metric_label(name)[0]] = format_ci(entry, percent=True)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")
