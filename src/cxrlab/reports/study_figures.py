"""Figures of a study: ROC overlays per class (one curve per model) and a forest plot.

Same conventions as :mod:`cxrlab.reports.figures` (fonts of 9 pt or more, constrained layout,
PNG and PDF through :func:`~cxrlab.reports.figures.save_figure`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from cxrlab.evaluation.metrics import encode_labels
from cxrlab.reports.figures import _RC, display_name
from cxrlab.reports.tables import METRIC_DISPLAY


def plot_roc_overlays(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    labels: Sequence[str],
    title: str = "ROC curves per class (one-vs-rest)",
) -> Figure:
    """One panel per class; in each, one ROC curve per model with its AUC in the legend.

    Args:
        curves: Model label -> ``(y_true (N,) class names, y_score (N, K) probabilities)``.
        labels: Class names in column order.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    k = len(labels)
    cols = 2 if k == 4 else min(k, 3)
    rows = math.ceil(k / cols)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(4.2 * cols, 4.0 * rows + 0.4), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for j, cls in enumerate(labels):
            ax = axes[j // cols][j % cols]
            for name, (y_true, y_score) in curves.items():
                pos = encode_labels(y_true, labels) == j
                if pos.all() or not pos.any():
                    continue
                score = np.asarray(y_score, dtype=np.float64)[:, j]
                fpr, tpr, _ = roc_curve(pos, score)
                ax.plot(fpr, tpr, lw=1.6, label=f"{name} ({roc_auc_score(pos, score):.3f})")
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_aspect("equal")
            ax.set_title(display_name(cls, width=24))
            ax.set_xlabel("False positive rate")
            ax.set_ylabel("Sensitivity")
            ax.legend(loc="lower right", title="model (AUC)", frameon=True)
            ax.grid(alpha=0.3)
        for j in range(k, rows * cols):
            axes[j // cols][j % cols].set_visible(False)
        fig.suptitle(title)
    return fig


def plot_forest(
    rows: Sequence[Mapping[str, object]],
    *,
    baseline: str,
    title: str | None = None,
) -> Figure:
    """Forest plot of differences against the baseline, one line per (model, metric).

    Args:
        rows: Each ``{"model", "metric", "value", "ci_low", "ci_high"}`` (a difference model -
            baseline; rates as fractions, drawn in percentage points).
        baseline: The baseline's label, for the axis title.
    """
    metrics = list(dict.fromkeys(str(r["metric"]) for r in rows))
    with matplotlib.rc_context(_RC):
        per_panel = max(1, len(rows) // max(1, len(metrics)))
        fig = Figure(figsize=(5.2 * max(1, len(metrics)), 0.5 * per_panel + 1.8),
                     layout="constrained")  # fmt: skip
        axes = fig.subplots(1, max(1, len(metrics)), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=False):
            mine = [r for r in rows if r["metric"] == metric]
            label, pct = METRIC_DISPLAY.get(metric, (metric, False))
            scale = 100.0 if pct else 1.0
            ys = np.arange(len(mine))[::-1]
            for y, r in zip(ys, mine, strict=True):
                v, lo, hi = (float(r[key]) * scale for key in ("value", "ci_low", "ci_high"))
                ax.errorbar(v, y, xerr=[[v - lo], [hi - v]], fmt="o", color="black", capsize=3)
            ax.axvline(0.0, color="grey", lw=1, ls="--")
            ax.set_yticks(ys, [str(r["model"]) for r in mine])
            unit = " (pp)" if pct else ""
            ax.set_xlabel(f"Δ {label.replace(' (%)', '')}{unit} vs {baseline}")
            ax.grid(alpha=0.3, axis="x")
        fig.suptitle(title or f"Difference against the baseline {baseline} (95% CI)")
    return fig
