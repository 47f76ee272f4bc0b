"""Markdown and LaTeX (booktabs) tables of metrics with confidence intervals.

Builders turn result dictionaries into DataFrames of display strings ("95.1 (93.8-96.2)": value
and 95% interval, in percent for rates); :func:`to_markdown` and :func:`to_latex` render any such
DataFrame. LaTeX output escapes special characters (class names like ``Lung_Opacity``), uses
``--`` for ranges and needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab.reports.style import class_label

#: Display name and whether the metric is a rate shown in percent (else 3 decimals).
METRIC_DISPLAY: dict[str, tuple[str, bool]] = {
    "accuracy": ("Accuracy (%)", True),
    "macro_precision": ("Macro precision (%)", True),
    "macro_recall": ("Macro recall / sensitivity (%)", True),
    "macro_f1": ("Macro F1 (%)", True),
    "macro_specificity": ("Macro specificity (%)", True),
    "weighted_precision": ("Weighted precision (%)", True),
    "weighted_recall": ("Weighted recall (%)", True),
    "weighted_f1": ("Weighted F1 (%)", True),
    "macro_roc_auc": ("Macro ROC AUC", False),
    "macro_average_precision": ("Macro average precision", False),
    "ece": ("ECE (15 bins)", False),
    "brier": ("Brier score (multiclass)", False),
    "nll": ("NLL", False),
}
#: Per-class column headers.
PER_CLASS_DISPLAY: dict[str, tuple[str, bool]] = {
    "precision": ("Precision (%)", True),
    "recall": ("Sensitivity (%)", True),
    "specificity": ("Specificity (%)", True),
    "f1": ("F1 (%)", True),
    "roc_auc": ("ROC AUC", False),
    "average_precision": ("AP", False),
}


def is_percent(metric: str) -> bool:
    """Whether ``metric`` is displayed in percent."""
    return METRIC_DISPLAY.get(metric, PER_CLASS_DISPLAY.get(metric, ("", False)))[1]


def format_value(value: float | None, *, percent: bool, digits: int | None = None) -> str:
    """``0.9512`` -> ``"95.1"`` (percent) or ``"0.951"``; nan/None -> ``"n/a"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if digits is None:
        digits = 1 if percent else 3
    return f"{100 * value if percent else value:.{digits}f}"


def format_ci(entry: Mapping[str, Any], *, percent: bool, digits: int | None = None) -> str:
    """``{"value", "ci_low", "ci_high"}`` -> ``"95.1 (93.8-96.2)"``.

    Ranges with a negative bound read ``"-1.2 (-3.4 to 0.5)"`` so the minus sign is unambiguous.
    An entry marked ``undefined`` (0/0, see metrics.json) reads ``"undefined"``, not a number.
    """
    if entry.get("undefined"):
        return "undefined"
    value = format_value(entry.get("value"), percent=percent, digits=digits)
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if value == "n/a" or low is None or high is None or math.isnan(low) or math.isnan(high):
        return value
    lo = format_value(low, percent=percent, digits=digits)
    hi = format_value(high, percent=percent, digits=digits)
    sep = " to " if lo.startswith("-") or hi.startswith("-") else "-"
    return f"{value} ({lo}{sep}{hi})"


def metrics_table(
    metrics: Mapping[str, Mapping[str, Any]], *, names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Table of scalar metrics with CIs: columns ``Metric``, ``Value (95% CI)``."""
    names = [n for n in (names or METRIC_DISPLAY) if n in metrics]
    rows = []
    for name in names:
        label, pct = METRIC_DISPLAY.get(name, (name, False))
        rows.append({"Metric": label, "Value (95% CI)": format_ci(metrics[name], percent=pct)})
    return pd.DataFrame(rows, columns=["Metric", "Value (95% CI)"])


def per_class_table(per_class: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per class: ``Class`` (its display spelling, as in the figures), ``n`` and each
    per-class metric with its CI."""
    rows = []
    for cls, entry in per_class.items():
        row = {"Class": class_label(cls), "n": str(entry.get("support", ""))}
        for name, (label, pct) in PER_CLASS_DISPLAY.items():
            if name in entry:
                row[label] = format_ci(entry[name], percent=pct)
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(
    runs: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    names: Sequence[str] = ("accuracy", "macro_f1", "macro_recall", "macro_roc_auc", "ece"),
) -> pd.DataFrame:
    """One row per run (``runs``: run name -> its ``metrics`` dict), one column per metric."""
    rows = []
    for run, metrics in runs.items():
        row = {"Run": run}
        for name in names:
            if name in metrics:
                label, pct = METRIC_DISPLAY.get(name, (name, False))
                row[label] = format_ci(metrics[name], percent=pct)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Rendering


def to_markdown(frame: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown table; numeric-looking columns are right-aligned."""
    cols = [str(c) for c in frame.columns]
    cells = [[_md_cell(v) for v in row] for row in frame.itertuples(index=False)]
    right = [_numeric_column(frame[c]) for c in frame.columns]
    widths = [max([len(c)] + [len(r[i]) for r in cells] + [3]) for i, c in enumerate(cols)]

    def line(values):
        return (
            "| "
            + " | ".join(
                v.rjust(w) if r else v.ljust(w)
                for v, w, r in zip(values, widths, right, strict=True)
            )
            + " |"
        )

    rule = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right, strict=True)
        )
        + " |"
    )
    return "\n".join([line(cols), rule] + [line(r) for r in cells]) + "\n"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _numeric_column(series: pd.Series) -> bool:
    return bool(len(series)) and all(
        re.match(r"^[-\d.]", str(v)) or str(v) in ("n/a", "undefined") for v in series
    )


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "−": "$-$",
}


def latex_escape(text: Any) -> str:
    """Escape LaTeX special characters (``Lung_Opacity`` -> ``Lung\\_Opacity``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_cell(value: Any) -> str:
    text = latex_escape(value)
    text = re.sub(r"^(-?[\d.]+)-([\d.]+)$", r"\1--\2", text)  # a bare range "93.1-95.2"
    return re.sub(r"\((-?[\d.]+)-([\d.]+)\)", r"(\1--\2)", text)  # "(93.8-96.2)" -> en dash


def to_latex(
    frame: pd.DataFrame,
    *,
    caption: str | None = None,
    label: str | None = None,
    notes: str | None = None,
) -> str:
    """A booktabs ``table`` environment; cells and headers are escaped.

    Args:
        frame: Display strings (from the builders above).
        caption: Table caption (escaped).
        label: ``\\label`` key (not escaped).
        notes: A footnote line under the table (escaped).
    """
    align = "".join("r" if _numeric_column(frame[c]) else "l" for c in frame.columns)
    lines = [
        "% Requires \\usepackage{booktabs}",
        "\\begin{table}[htbp]",
        "\\centering",
        "\\small",
    ]
    if caption:
        lines.append(f"\\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + " \\\\",
        "\\midrule",
    ]
    for row in frame.itertuples(index=False):
        lines.append(" & ".join(_latex_cell(v) for v in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if notes:
        lines.append(f"\\par\\smallskip{{\\footnotesize {latex_escape(notes)}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def write_table(
    stem: Path, frame: pd.DataFrame, *, caption: str, label: str, note: str
) -> dict[str, Path]:
    """Write ``frame`` as ``<stem>.md`` (with ``note`` below) and ``<stem>.tex`` atomically.

    Returns:
        ``{"md": path, "tex": path}``.
    """
    from cxrlab.io import write_text

    return {
        "md": write_text(stem.with_suffix(".md"), to_markdown(frame) + "\n" + note + "\n"),
        "tex": write_text(
            stem.with_suffix(".tex"), to_latex(frame, caption=caption, label=label, notes=note)
        ),
    }
