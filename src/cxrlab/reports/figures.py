"""Paper figures: confusion matrices, ROC and PR curves, reliability diagrams, training curves.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend)
at journal size (:mod:`cxrlab.reports.style`: 3.5 in single column, 7.2 in double column), with
fonts of 7 pt or more at that size, the Okabe-Ito palette, one spelling of class names and no
title baked in (captions belong to the report and the manuscript; panels of a multi-panel figure
keep a short label). :func:`save_figure` writes a vector PDF and a 300-dpi PNG.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.figure import Figure

from cxrlab.evaluation.metrics import encode_labels
from cxrlab.io import savefig
from cxrlab.reports.style import (
    DOUBLE_COLUMN,
    DPI,
    FONT_SIZE,
    HEATMAP_CMAP,
    MIN_FONT_SIZE,
    PALETTE,
    SINGLE_COLUMN,
    class_label,
    wrapped_label,
)

logger = logging.getLogger(__name__)

_RC = {
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": MIN_FONT_SIZE,
    "ytick.labelsize": MIN_FONT_SIZE,
    "legend.fontsize": MIN_FONT_SIZE,
    "axes.prop_cycle": cycler(color=PALETTE),
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}


def display_name(name: str, width: int = 10) -> str:
    """A class name for a plot (:func:`~cxrlab.reports.style.wrapped_label`)."""
    return wrapped_label(name, width)


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def save_figure(
    fig: Figure, stem: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Save ``fig`` atomically as ``stem.png`` (300 dpi) and ``stem.pdf`` (vector)."""
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context(_RC):
        for fmt in formats:
            paths.append(savefig(fig, stem.with_suffix(f".{fmt}"), dpi=DPI))
    return paths


def figure_svg(fig: Figure) -> str:
    """``fig`` as an SVG document (text kept as text), for inlining in the HTML report."""
    import io

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # The RDF metadata block names vocabularies by URL; the page needs none of it.
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)


def plot_confusion_matrix(
    cm, classes: Sequence[str], *, normalize: bool = False, title: str | None = None
) -> Figure:
    """Confusion matrix heat map: counts, or rows normalised to recall (with counts beneath).

    ``title`` is kept for callers but not drawn unless given (captions go in the report).
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = len(classes)
    width = SINGLE_COLUMN if k <= 5 else DOUBLE_COLUMN
    with matplotlib.rc_context(_RC):
        fig = _figure(width, min(width * 0.9, 0.55 * k + 1.3))
        ax = fig.add_subplot()
        if normalize:
            rows = cm.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                values = np.where(rows > 0, cm / np.where(rows > 0, rows, 1), np.nan)
            image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0, vmax=1)
        else:
            values = cm
            image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0)
        cbar = fig.colorbar(image, ax=ax, shrink=0.85)
        cbar.ax.tick_params(labelsize=MIN_FONT_SIZE)
        cbar.set_label("fraction of true class" if normalize else "images")
        vmax = np.nanmax(values) if np.isfinite(values).any() else 1.0
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                if normalize:
                    text = "n/a" if np.isnan(v) else f"{100 * v:.1f}%\n({int(round(cm[i, j]))})"
                else:
                    text = f"{int(round(v))}"
                light = np.isfinite(v) and v > 0.55 * vmax  # cividis is light at the top
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=MIN_FONT_SIZE,
                    color="black" if light else "white",
                )
        names = [display_name(c) for c in classes]
        ax.set_xticks(range(k), names)
        ax.set_yticks(range(k), names)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        if title:
            ax.set_title(title)
    return fig


def _macro_curve(fprs: list[np.ndarray], tprs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    grid = np.unique(np.concatenate(fprs))
    mean_tpr = np.mean([np.interp(grid, f, t) for f, t in zip(fprs, tprs, strict=True)], axis=0)
    return grid, mean_tpr


def plot_roc_curves(y_true, y_score, *, labels: Sequence[str], title: str | None = None) -> Figure:
    """One-vs-rest ROC curve per class plus the macro-average curve, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    t = encode_labels(y_true, labels)
    scores = np.asarray(y_score, dtype=np.float64)
    with matplotlib.rc_context(_RC):
        fig = _figure(SINGLE_COLUMN, SINGLE_COLUMN)
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
            ax.plot(fpr, tpr, label=f"{class_label(c)} (AUC {auc:.3f})")
        if fprs:
            grid, mean_tpr = _macro_curve(fprs, tprs)
            ax.plot(
                grid,
                mean_tpr,
                color="black",
                lw=1.6,
                ls="--",
                label=f"macro average (mean AUC {np.mean(aucs):.3f})",
            )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":", label="chance")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (1 - specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        if title:
            ax.set_title(title)
        ax.legend(loc="lower right", frameon=True)
        ax.grid(alpha=0.3)
    return fig


def plot_pr_curves(y_true, y_score, *, labels: Sequence[str], title: str | None = None) -> Figure:
    """One-vs-rest precision-recall curve per class, average precision in the legend.

    Each class's prevalence (the precision of a random ranking) is a dotted line of its colour;
    one legend entry explains the dotted lines, and the macro AP is the legend's title.
    """
    from matplotlib.lines import Line2D
    from sklearn.metrics import average_precision_score, precision_recall_curve

    t = encode_labels(y_true, labels)
    scores = np.asarray(y_score, dtype=np.float64)
    with matplotlib.rc_context(_RC):
        fig = _figure(SINGLE_COLUMN, SINGLE_COLUMN)
        ax = fig.add_subplot()
        aps = []
        for j, c in enumerate(labels):
            pos = t == j
            if not pos.any():
                continue
            precision, recall, _ = precision_recall_curve(pos, scores[:, j])
            ap = average_precision_score(pos, scores[:, j])
            aps.append(ap)
            line = ax.step(recall, precision, where="post", label=f"{class_label(c)} (AP {ap:.3f})")
            ax.axhline(pos.mean(), color=line[0].get_color(), lw=0.7, ls=":")
        handles, names = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="grey", lw=0.7, ls=":"))
        names.append("prevalence (chance level)")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.03)
        ax.set_aspect("equal")
        ax.set_xlabel("Recall (sensitivity)")
        ax.set_ylabel("Precision")
        if title:
            ax.set_title(title)
        ax.legend(
            handles,
            names,
            loc="lower left",
            frameon=True,
            title=f"macro AP {np.mean(aps):.3f}" if aps else None,
            title_fontsize=MIN_FONT_SIZE,
        )
        ax.grid(alpha=0.3)
    return fig


def _reliability_axes(ax, curve: pd.DataFrame, title: str, ece: float | None) -> None:
    """Accuracy bars with the confidence of each bin as an outlined marker and bin counts.

    The gap is drawn as a hatched outline (no fill) so the top of the accuracy bar stays
    visible; the number of test images in each bin is printed above it.
    """
    width = curve["upper"] - curve["lower"]
    centers = (curve["upper"] + curve["lower"]) / 2
    filled = curve["count"] > 0
    ax.bar(
        centers[filled],
        curve["accuracy"][filled],
        width=width[filled],
        color=PALETTE[0],
        edgecolor="black",
        lw=0.4,
        label="accuracy",
    )
    gap_bottom = np.minimum(curve["accuracy"], curve["confidence"])[filled]
    gap_height = np.abs(curve["gap"])[filled]
    ax.bar(
        centers[filled],
        gap_height,
        bottom=gap_bottom,
        width=width[filled],
        fill=False,
        edgecolor=PALETTE[3],
        hatch="////",
        lw=0.6,
        label="gap to mean confidence",
    )
    for x, acc, conf, n in zip(
        centers[filled], curve["accuracy"][filled], curve["confidence"][filled],
        curve["count"][filled], strict=True,
    ):  # fmt: skip
        top = max(float(acc), float(conf))
        ax.text(x, top + 0.015, f"{int(n)}", ha="center", va="bottom",
                fontsize=MIN_FONT_SIZE - 0.0, rotation=90)  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.42)  # headroom above 1 holds the legend, clear of every bar and count
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlabel("Confidence (top-class probability)")
    ax.set_ylabel("Accuracy")
    label = title if ece is None else f"{title}, ECE = {ece:.3f}"
    if label:
        ax.set_title(label, loc="left")
    ax.legend(loc="upper left", frameon=False, ncol=2, title="numbers: images per bin",
              title_fontsize=MIN_FONT_SIZE, columnspacing=0.8, handlelength=1.4)  # fmt: skip
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
    side by side before and after temperature scaling when ``after`` is given (double column),
    else one single-column panel."""
    panels = 1 if after is None else 2
    with matplotlib.rc_context(_RC):
        width = SINGLE_COLUMN if panels == 1 else DOUBLE_COLUMN
        fig = _figure(width, 3.5)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        _reliability_axes(
            axes[0], before, "(a) before temperature scaling" if after is not None else "",
            ece_before,
        )  # fmt: skip
        if after is not None:
            t = f" (T = {temperature:.2f})" if temperature is not None else ""
            _reliability_axes(axes[1], after, f"(b) after temperature scaling{t}", ece_after)
    return fig


#: history.csv columns drawn in each panel of the training-curve figure.
_HISTORY_PANELS = (
    ("Training loss", ("train_loss",), False),
    ("Validation loss", ("val_loss",), False),
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


def history_epochs(history: pd.DataFrame) -> np.ndarray:
    """1-based epoch numbers of ``history.csv`` rows (its ``epoch`` column is 0-based)."""
    if "epoch" in history.columns:
        x = pd.to_numeric(history["epoch"], errors="coerce").to_numpy(dtype=np.float64)
        if np.nanmin(x) == 0:
            x = x + 1
        return x
    return np.arange(1, len(history) + 1, dtype=np.float64)


def plot_training_curves(
    history: pd.DataFrame,
    *,
    chosen_epoch: int | None = None,
    train_loss_note: str | None = None,
) -> Figure | None:
    """Training loss, validation loss, validation metrics and learning rate against epoch.

    Train and validation loss sit on separate axes: the training loss is measured on augmented
    images with label smoothing, so its level is not comparable with the validation loss
    (``train_loss_note`` says how, e.g. "label smoothing 0.1, augmented"). ``chosen_epoch``
    (1-based: the checkpoint kept) is marked in every panel. Missing columns are skipped (a panel
    with none of its columns is left out); rows without a value are skipped per line. Returns
    None when nothing can be drawn.
    """
    x = history_epochs(history)
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
        fig = _figure(DOUBLE_COLUMN, 2.3 if len(panels) > 2 else 2.6)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, cols, log) in zip(axes, panels, strict=True):
            for col in cols:
                y = pd.to_numeric(history[col], errors="coerce").to_numpy()
                ok = np.isfinite(y) & np.isfinite(x)
                ax.plot(x[ok], y[ok], marker="o", ms=1.8, lw=1.0,
                        label=_HISTORY_LABELS.get(col, col))  # fmt: skip
            if log and (pd.to_numeric(history[cols[0]], errors="coerce") > 0).all():
                ax.set_yscale("log")
            first = ax is axes[0]
            if chosen_epoch is not None:
                ax.axvline(chosen_epoch, color="black", lw=0.8, ls="--",
                           label=f"chosen epoch ({chosen_epoch})" if first else None)  # fmt: skip
            ax.set_xlabel("Epoch")
            ax.set_title(title, loc="left")
            if cols == ["train_loss"] and train_loss_note:
                ax.set_ylabel(f"on training images\n({train_loss_note})", fontsize=MIN_FONT_SIZE)
            ax.grid(alpha=0.3)
            if len(cols) > 1 or (first and chosen_epoch is not None):
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
        fig = _figure(DOUBLE_COLUMN, DOUBLE_COLUMN / max(len(names), 1) + 0.9)
        axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
        for ax, c in zip(axes, names, strict=False):
            j = list(labels).index(c)
            pos = t == j
            if pos.any() and not pos.all():
                fpr, tpr, _ = roc_curve(pos, scores[:, j])
                ax.plot(fpr, tpr, lw=1.0, color=PALETTE[0])
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
                    ms=5,
                    mfc="none",
                    mew=1.0,
                    label=f"{rule} (t = {e['threshold']:.3f})",
                )
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_aspect("equal")
            ax.set_title(f"{class_label(c)} vs rest", loc="left")
            ax.set_xlabel("1 - specificity (test)")
            ax.set_ylabel("Sensitivity (test)")
            ax.legend(loc="lower right", frameon=True)
            ax.grid(alpha=0.3)
    return fig
