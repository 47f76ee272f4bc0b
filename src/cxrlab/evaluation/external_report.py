"""Tables and figures of an external validation (``RUN/external/<name>/tables|figures``).

Tables (Markdown + LaTeX, :func:`cxrlab.reports.tables.write_table`):

* ``metrics``: the scalar metrics of the external set with 95% CIs (as the internal table);
* ``per_class``: one-vs-rest metrics per model class (absent classes show their undefined cells);
* ``internal_vs_external``: accuracy, macro-F1, per-class sensitivity, macro AUC and ECE on the
  internal test and the external set, with the difference and its interval;
* ``per_source``: the same per source (internal test and external set), with counts;
* ``transfer``: the val-chosen thresholds' sensitivity/specificity on val, internal test and the
  external set, and ECE before/after the val-fitted temperature on both.

Every table's note says whether overlapping images were kept (``--keep-overlap``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cxrlab.evaluation.per_source import comparison_table, per_source_table
from cxrlab.reports import figures, tables
from cxrlab.reports.tables import format_ci, format_value
from cxrlab.rundir import ExternalDir


def _note(metrics: dict[str, Any], keep_overlap: bool) -> str:
    o = metrics["overlap"]
    b = metrics["bootstrap"]
    overlap = (
        f"OVERLAP KEPT (--keep-overlap): {o['n_matched']} of the scored images match a run image"
        if keep_overlap
        else f"{o['n_matched']} of {o['n_checked']} external images matched a run image (exact or "
        f"perceptual-hash distance <= {o['threshold']} of 256 bits) and are left out"
    )
    absent = (
        f" Model classes absent from the external set: {', '.join(metrics['classes_absent'])}."
        if metrics["classes_absent"]
        else ""
    )
    return (
        f"External set {metrics['external_set']}: n = {metrics['n']}. {overlap}.{absent} 95% CIs: "
        f"Clopper-Pearson for proportions; {b['method']} ({b['n_boot']} resamples, seed "
        f"{b['seed']}) for the others; differences: independent percentile bootstrap."
    )


def transfer_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Thresholds and temperature chosen on val: how they do on internal test and external."""
    name = metrics["external_set"]
    transfer = metrics["transfer"]
    rows = []
    for c, rules in (transfer.get("thresholds") or {}).items():
        for rule, e in rules.items():
            internal = e.get("internal_test") or {}
            ext = e[name]
            rows.append(
                {
                    "Item": f"{c} vs rest, {rule} (threshold {e['threshold']:.4f})",
                    "Val": f"sens {100 * e['val']['sensitivity']:.1f}, spec "
                    f"{100 * e['val']['specificity']:.1f}",
                    "Internal test": (
                        f"sens {format_ci(internal['sensitivity'], percent=True)}, spec "
                        f"{format_ci(internal['specificity'], percent=True)}"
                    )
                    if internal
                    else "",
                    name: f"sens {format_ci(ext['sensitivity'], percent=True)}, spec "
                    f"{format_ci(ext['specificity'], percent=True)}",
                }
            )
    ece = transfer.get("ece")
    if ece:
        t = transfer.get("temperature")
        fit = transfer.get("temperature_fit") or {}
        label = (
            f"ECE before -> after T = {t:.3f} (fitted on val)"
            if t is not None
            else f"ECE (T = {fit.get('temperature', float('nan')):.3g} not applied: "
            f"{fit.get('reason', '')})"
        )

        def pair(entry):
            if entry is None or entry.get("before") is None:
                return ""
            after = entry.get("after")
            text = format_value(entry["before"], percent=False)
            return text + (f" -> {format_value(after, percent=False)}" if after is not None else "")

        rows.append(
            {"Item": label, "Val": "", "Internal test": pair(ece.get("internal_test")),
             name: pair(ece.get(name))}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["Item", "Val", "Internal test", name])


def write_outputs(
    out: ExternalDir,
    metrics: dict[str, Any],
    y_true,
    probs,
    calibration: dict[str, Any],
    *,
    keep_overlap: bool,
    make_figures: bool,
) -> dict[str, Any]:
    """Write the tables (and figures) of one external validation; return their paths."""
    name = metrics["external_set"]
    note = _note(metrics, keep_overlap)
    frames = [
        ("metrics", tables.metrics_table(metrics["metrics"]),
         f"Performance on the external set {name} with 95% confidence intervals."),
        ("per_class", tables.per_class_table(metrics["per_class"]),
         f"Per-class performance on the external set {name} (one-vs-rest)."),
        ("transfer", transfer_table(metrics),
         f"Thresholds and temperature chosen on the internal validation split, applied to the "
         f"internal test and to {name}."),
    ]  # fmt: skip
    if metrics.get("internal_vs_external"):
        frames.append(
            ("internal_vs_external",
             comparison_table(metrics["internal_vs_external"], keep_overlap=keep_overlap),
             f"Internal test next to the external set {name}, over the classes present in it.")
        )  # fmt: skip
    per_source = [
        per_source_table(block, set_name=set_name)
        for set_name, block in metrics["per_source"].items()
        if block
    ]
    if per_source:
        frames.append(
            ("per_source", pd.concat(per_source, ignore_index=True).fillna(""),
             "Performance per source (classes present in each source).")
        )  # fmt: skip
    files: dict[str, Any] = {}
    for stem, frame, caption in frames:
        written = tables.write_table(
            out.tables / stem, frame, caption=caption, label=f"tab:external-{stem}", note=note
        )
        files[f"{stem}_md"], files[f"{stem}_tex"] = written["md"], written["tex"]
    if not make_figures:
        return files
    from cxrlab.evaluation.evaluate import standard_figures

    made = standard_figures(y_true, probs, metrics["classes"], metrics, calibration, pr=False)
    for stem, fig in made.items():
        png, pdf = figures.save_figure(fig, out.figures / stem)
        files[f"{stem}_png"], files[f"{stem}_pdf"] = png, pdf
    return files
