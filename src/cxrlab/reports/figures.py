"""Paper figures: confusion matrices, ROC and PR curves, reliability diagrams, training curves.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend)
with fonts of 9 pt or more, class names wrapped onto two lines where long, and constrained layout,
and saved as PNG (200 dpi) and PDF by :func:`save_figure`.
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlab.evaluation.metrics import encode_labels
from cxrlab.io import savefig

logger = logging.getLogger(__name__)

#: Base font size (points); tick labels and legends are never smaller than 9 pt.
FONT_SIZE = 10
DPI = 200
_RC = {
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE + 1,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,
}


def display_name(name: str, width: int = 10) -> str:
    """A class name for a plot: underscores as spaces, wrapped onto lines of ``width`` chars."""
    return textwrap.fill(str(name).replace("_", " "), width=width, break_long_words=False)


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def save_figure(
    fig: Figure, stem: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Save ``fig`` atomically as ``stem.png`` and ``stem.pdf``; return the paths written."""
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context(_RC):
        for fmt in formats:
            paths.append(savefig(fig, stem.with_suffix(f".{fmt}"), dpi=DPI))
    return paths


def plot_confusion_matrix(
    cm, classes: Sequence[str], *, normalize: bool = False, title: str | None = None
) -> Figure:
    """Confusion matrix heat map: counts, or rows normalised to recall (with counts beneath)."""
    cm = np.asarray(cm, dtype=np.float64)
    k = len(classes)
    with matplotlib.rc_context(_RC):
        fig = _figure(1.2 * k + 2.6, 1.1 * k + 1.9)
        ax = fig.add_subplot()
        if normalize:
            rows = cm.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                values = np.where(rows > 0, cm / np.where(rows > 0, rows, 1), np.nan)
            image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1)
        else:
            values = cm
            image = ax.imshow(values, cmap="Blues", vmin=0)
        cbar = fig.colorbar(image, ax=ax, shrink=0.85)
        cbar.ax.tick_params(labelsize=9)
        if normalize:
            cbar.set_label("fraction of true class")
        vmax = np.nanmax(values) if np.isfinite(values).any() else 1.0
        fontsize = 10 if k <= 6 else 9
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                if normalize:
                    text = "n/a" if np.isnan(v) else f"{100 * v:.1f}%\n({int(round(cm[i, j]))})"
                else:
                    text = f"{int(round(v))}"
                dark = np.isfinite(v) and v > 0.55 * vmax
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if dark else "black",
                )
        names = [display_name(c) for c in classes]
        ax.set_xticks(range(k), names)
        ax.set_yticks(range(k), names)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(
            title
            or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)")
        )
    return fig


def _macro_curve(fprs: list[np.ndarray], tprs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    grid = np.unique(np.concatenate(fprs))
    mean_tpr = np.mean([np.interp(grid, f, t) for f, t in zip(fprs, tprs, strict=True)], axis=0)
    return grid, mean_tpr


def plot_roc_curves(
    y_true, y_score, *, labels: Sequence[str], title: str = "ROC curves (one-vs-rest)"
) -> Figure:
    """One-vs-rest ROC curve per class plus the macro-average curve, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    t = encode_labels(y_true, labels)
    scores = np.asarray(y_score, dtype=np.float64)
    with matplotlib.rc_context(_RC):
        fig = _figure(5.6, 5.0)
        ax = fig.add_subplot()
        fprs, tprs, aucs = [], [], []
        for j, c in enumerate(labels):
            pos = t == j
            if pos.all() or not pos.any():
                continue
            fpr, tpr, _ = roc_curve(pos, scores[:, j])
            auc = roc_auc_score(pos, scores[:, j])
            fprs.append(fpr)
            tprs.append(tpr)
            aucs.append(auc)
            ax.plot(fpr, tpr, lw=1.6, label=f"{str(c).replace('_', ' ')} (AUC {auc:.3f})")
        if fprs:
            grid, mean_tpr = _macro_curve(fprs, tprs)
            ax.plot(
                grid,
                mean_tpr,
                color="black",
                lw=2.2,
                ls="--",
                label=f"macro average (mean AUC {np.mean(aucs):.3f})",
            )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (1 - specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        ax.set_title(title)
        ax.legend(loc="lower right", frameon=True)
        ax.grid(alpha=0.3)
    return fig


def plot_pr_curves(
    y_true, y_score, *, labels: Sequence[str], title: str = "Precision-recall curves"
) -> Figure:
    """One-vs-rest precision-recall curve per class, average precision in the legend."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    t = encode_labels(y_true, labels)
    scores = np.asarray(y_score, dtype=np.float64)
    with matplotlib.rc_context(_RC):
        fig = _figure(5.6, 5.0)
        ax = fig.add_subplot()
        aps = []
        for j, c in enumerate(labels):
            pos = t == j
            if not pos.any():
                continue
            precision, recall, _ = precision_recall_curve(pos, scores[:, j])
            ap = average_precision_score(pos, scores[:, j])
            aps.append(ap)
            line = ax.step(
                recall,
                precision,
                where="post",
                lw=1.6,
                label=f"{str(c).replace('_', ' ')} (AP {ap:.3f})",
            )
            ax.axhline(pos.mean(), color=line[0].get_color(), lw=0.7, ls=":")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.03)
        ax.set_aspect("equal")
        ax.set_xlabel("Recall (sensitivity)")
        ax.set_ylabel("Precision")
        suffix = f" (macro AP {np.mean(aps):.3f})" if aps else ""
        ax.set_title(title + suffix)
        ax.legend(loc="lower left", frameon=True)
        ax.grid(alpha=0.3)
    return fig


def _reliability_axes(ax, curve: pd.DataFrame, title: str, ece: float | None) -> None:
    width = curve["upper"] - curve["lower"]
    centers = (curve["upper"] + curve["lower"]) / 2
    filled = curve["count"] > 0
    ax.bar(
        centers[filled],
        curve["accuracy"][filled],
        width=width[filled],
        color="#4C72B0",
        edgecolor="black",
        lw=0.6,
        label="accuracy",
    )
    gap_bottom = np.minimum(curve["accuracy"], curve["confidence"])[filled]
    gap_height = np.abs(curve["gap"])[filled]
    ax.bar(
        centers[filled],
        gap_height,
        bottom=gap_bottom,
        width=width[filled],
        color="#DD8452",
        alpha=0.45,
        edgecolor="#DD8452",
        hatch="//",
        lw=0.6,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1.0, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("Confidence (top-class probability)")
    ax.set_ylabel("Accuracy")
    ax.set_title(title if ece is None else f"{title}\nECE = {ece:.3f}")
    ax.legend(loc="upper left", frameon=True)
    ax.grid(alpha=0.3)


def plot_reliability(
    before: pd.DataFrame,
    after: pd.DataFrame | None = None,
    *,
    ece_before: float | None = None,
    ece_after: float | None = None,
    temperature: float | None = None,
) -> Figure:
    """Reliability diagram from :func:`~cxrlab.evaluation.calibration.reliability_curve` data,
    side by side before and after temperature scaling when ``after`` is given."""
    panels = 1 if after is None else 2
    with matplotlib.rc_context(_RC):
        fig = _figure(4.8 * panels, 5.0)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        _reliability_axes(
            axes[0],
            before,
            "Before temperature scaling" if after is not None else "Reliability",
            ece_before,
        )
        if after is not None:
            t = f" (T = {temperature:.2f})" if temperature is not None else ""
            _reliability_axes(axes[1], after, f"After temperature scaling{t}", ece_after)
    return fig


#: history.csv columns drawn in each panel of the training-curve figure.
_HISTORY_PANELS = (
    ("Loss", ("train_loss", "val_loss"), False),
    ("Validation metrics", ("val_acc", "val_f1"), False),
    ("Learning rate", ("lr",), True),
)
_HISTORY_LABELS = {
    "train_loss": "train loss",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "val_f1": "validation macro F1",
    "lr": "learning rate",
}


def plot_training_curves(history: pd.DataFrame) -> Figure | None:
    """Loss, validation metrics and learning rate against epoch from ``history.csv``.

    Missing columns are skipped (a panel with none of its columns is left out); rows without a
    value are skipped per line. Returns None when nothing can be drawn.
    """
    if "epoch" in history.columns:
        x = pd.to_numeric(history["epoch"], errors="coerce").to_numpy()
        if history["epoch"].min() == 0:
            x = x + 1
    else:
        x = np.arange(1, len(history) + 1)
    panels = []
    for title, cols, log in _HISTORY_PANELS:
        present = [
            c
            for c in cols
            if c in history.columns and pd.to_numeric(history[c], errors="coerce").notna().any()
        ]
        if present:
            panels.append((title, present, log))
    if not panels:
        logger.info(
            "history has none of the columns %s; no training curves drawn", sorted(_HISTORY_LABELS)
        )
        return None
    with matplotlib.rc_context(_RC):
        fig = _figure(4.2 * len(panels), 3.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, cols, log) in zip(axes, panels, strict=True):
            for col in cols:
                y = pd.to_numeric(history[col], errors="coerce").to_numpy()
                ok = np.isfinite(y) & np.isfinite(x)
                ax.plot(x[ok], y[ok], marker="o", ms=3, lw=1.5, label=_HISTORY_LABELS.get(col, col))
            if log and (pd.to_numeric(history[cols[0]], errors="coerce") > 0).all():
                ax.set_yscale("log")
            ax.set_xlabel("Epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(frameon=True)
            ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


#: Marker per operating-point rule (see :mod:`cxrlab.evaluation.operating_points`).
_POINT_MARKERS = {"spec90": "s", "spec95": "D", "sens90": "^", "sens95": "v", "youden": "o"}


def plot_operating_points(y_true, y_score, *, labels: Sequence[str], points: dict) -> Figure:
    """One panel per class (COVID first): its one-vs-rest test ROC with the operating points.

    Args:
        y_true: (N,) true labels of the test set.
        y_score: (N, K) probabilities in ``labels`` order.
        labels: Classes in model output order.
        points: :func:`~cxrlab.evaluation.operating_points.operating_points` (thresholds chosen
            on val; the markers are their test sensitivity and 1 - specificity).
    """
    from sklearn.metrics import roc_curve

    t = encode_labels(y_true, labels)
    scores = np.asarray(y_score, dtype=np.float64)
    names = [c for c in points["classes"] if c in list(labels)]
    with matplotlib.rc_context(_RC):
        fig = _figure(3.4 * max(len(names), 1) + 0.4, 3.9)
        axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
        for ax, c in zip(axes, names, strict=False):
            j = list(labels).index(c)
            pos = t == j
            if pos.any() and not pos.all():
                fpr, tpr, _ = roc_curve(pos, scores[:, j])
                ax.plot(fpr, tpr, lw=1.4, color="tab:blue")
            for rule, e in points["classes"][c].items():
                test = e.get("test")
                if not test or test["sensitivity"]["value"] is None:
                    continue
                spec = test["specificity"]["value"]
                if spec is None:
                    continue
                ax.plot(
                    1 - spec,
                    test["sensitivity"]["value"],
                    marker=_POINT_MARKERS.get(rule, "o"),
                    ls="none",
                    ms=7,
                    mfc="none",
                    mew=1.5,
                    label=f"{rule} (t = {e['threshold']:.3f})",
                )
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_aspect("equal")
            ax.set_title(f"{display_name(c, 16)} vs rest")
            ax.set_xlabel("1 - specificity (test)")
            ax.set_ylabel("Sensitivity (test)")
            ax.legend(loc="lower right", fontsize=9, frameon=True)
            ax.grid(alpha=0.3)
    return fig
