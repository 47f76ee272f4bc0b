"""``cxrlab study report``: the results section of a study, from its cells' saved predictions.

Per model (``model`` or ``model+variant``): :func:`~cxrlab.evaluation.cv_summary.summarize_cv`
over its finished cells gives each metric's mean and SD across seeds and folds and the interval
of the pooled out-of-fold test predictions (bootstrapped by image, so the seeds' repeated
predictions of one image are not independent evidence).

Against the baseline, cells are paired by (fold, seed) and must share the test-set fingerprint
(:meth:`~cxrlab.rundir.RunDir.fingerprint`). The tests use each image's seed-averaged
out-of-fold probabilities, one prediction per image per model: McNemar's exact test on their
argmax, DeLong's test of the macro and per-class AUCs, paired bootstrap CIs of the accuracy,
macro-F1 and macro-AUC differences; McNemar and DeLong p-values are Holm-adjusted over the
models compared. The mean and SD of the per-cell differences are given beside them.

Everything goes to ``<study>/report/``: Markdown and LaTeX tables (``\\input``-ready), figures
(ROC overlays per class, forest plot) and ``report.json``; ``report.md`` strings them together,
and ``study.html`` (:mod:`cxrlab.study.page`) shows the same tables and figures as one
self-contained page built with the run report's templates.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError, RunDirError
from cxrlab.evaluation.bootstrap import paired_bootstrap_difference
from cxrlab.evaluation.compare import DIFF_METRICS, _format_p, holm_adjust, mcnemar_exact
from cxrlab.evaluation.cv_summary import summarize_cv
from cxrlab.evaluation.delong import delong_ovr
from cxrlab.evaluation.runs import load_predictions
from cxrlab.io import write_json, write_text
from cxrlab.reports import tables
from cxrlab.rundir import RunDir
from cxrlab.study.planner import REPORT_DIR, STUDY_FILE, STUDY_PAGE, make_plan, read_status
from cxrlab.study.schema import StudyConfig

logger = logging.getLogger(__name__)

#: Metrics of the models table.
TABLE_METRICS = ("accuracy", "macro_f1", "macro_roc_auc", "ece")


@dataclass
class StudyReport:
    """What :func:`write_report` wrote.

    Attributes:
        out: The report folder.
        summaries: Label -> summarize_cv dict.
        comparisons: One dict per model compared with the baseline.
        missing: Cell ids not finished (with their state and error).
        files: Written files by short name.
    """

    out: Path
    summaries: dict[str, dict[str, Any]]
    comparisons: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)

    def summary_text(self) -> str:
        n = sum(s["n_runs"] for s in self.summaries.values())
        lines = [
            f"Report of {n} finished cell(s) in {self.out}: {self.files['md']}, "
            f"{self.files['html']}"
        ]
        if self.missing:
            lines.append(f"  {len(self.missing)} cell(s) missing: " + ", ".join(
                f"{m['id']} ({m['state']})" for m in self.missing[:6]))  # fmt: skip
        return "\n".join(lines)


def _load_study(study_dir: Path) -> StudyConfig:
    saved = read_status(study_dir / STUDY_FILE)
    if not saved or "study" not in saved:
        raise RunDirError(
            f"{study_dir} holds no readable {STUDY_FILE}; pass a folder written by "
            "`cxrlab study run` (its --out)."
        )
    return StudyConfig(**saved["study"])


def _seed_averaged(run_dirs: list[Path], classes: list[str]) -> pd.DataFrame:
    """Per image (sha1 key): its true label and the mean probabilities over the given cells."""
    frames = []
    for d in run_dirs:
        p = load_predictions(d, "test", classes)
        sha = RunDir(d).path_to_sha1()
        frame = pd.DataFrame(p.probs, columns=classes)
        frame.insert(0, "key", [sha.get(x) or x for x in p.paths])
        frame.insert(1, "label", p.y_true)
        frames.append(frame)
    both = pd.concat(frames, ignore_index=True)
    return both.groupby(["key", "label"], sort=True)[classes].mean().reset_index()


def _compare(study, label, cells_by_key, baseline_cells, summaries, classes, n_boot, seed):
    """The model ``label`` against the baseline on their matched (fold, seed) cells."""
    pairs, mismatched = [], []
    for key, d in cells_by_key.items():
        b = baseline_cells.get(key)
        if b is None:
            continue
        if RunDir(d).fingerprint()["sha1"] != RunDir(b).fingerprint()["sha1"]:
            mismatched.append(str(d))
            continue
        pairs.append((d, b))
    entry: dict[str, Any] = {"model": label, "baseline": study.baseline_label,
                             "n_cells": len(pairs), "not_comparable": mismatched}  # fmt: skip
    if not pairs:
        entry["undefined"] = "no (fold, seed) cell finished for both the model and the baseline"
        return entry
    a = _seed_averaged([p[0] for p in pairs], classes)
    b = _seed_averaged([p[1] for p in pairs], classes)
    merged = a.merge(b, on=["key", "label"], suffixes=("_a", "_b"))
    y = merged["label"].to_numpy(dtype=object)
    pa = merged[[f"{c}_a" for c in classes]].to_numpy()
    pb = merged[[f"{c}_b" for c in classes]].to_numpy()
    cls = np.asarray(classes, dtype=object)
    entry["n_images"] = int(len(merged))
    entry["mcnemar"] = mcnemar_exact(y, cls[pa.argmax(1)], cls[pb.argmax(1)])
    entry["delong"] = delong_ovr(y, pa, pb, labels=classes)
    entry["difference"] = paired_bootstrap_difference(
        y, pa, pb, labels=classes, metrics=DIFF_METRICS, n_boot=n_boot, seed=seed
    )
    # Per-cell differences: mean and SD over the matched cells.
    runs = {r["run_dir"]: r for s in summaries.values() for r in s["runs"]}
    per_cell = {}
    for m in DIFF_METRICS:
        v = [runs[str(p[0])][m] - runs[str(p[1])][m] for p in pairs]
        per_cell[m] = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1
                       else float("nan"), "values": v}  # fmt: skip
    entry["per_cell_difference"] = per_cell
    return entry


def models_table(summaries: dict[str, dict[str, Any]], totals: dict[str, int]) -> pd.DataFrame:
    rows = []
    for label, s in summaries.items():
        row = {"Model": label, "Cells": f"{s['n_runs']}/{totals[label]}"}
        for name in TABLE_METRICS:
            title, pct = tables.METRIC_DISPLAY[name]
            e = s["metrics"][name]
            short = title.replace(" (%)", "")
            row[f"{short} mean ± SD"] = (
                f"{tables.format_value(e['mean'], percent=pct)} ± "
                f"{tables.format_value(e['sd'], percent=pct)}"
            )
            row[f"{short} pooled (95% CI)"] = tables.format_ci(e["pooled"], percent=pct)
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(comparisons: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for c in comparisons:
        row = {"Model": c["model"], "vs": c["baseline"], "Cells": str(c["n_cells"])}
        if "undefined" in c:
            row["McNemar p (Holm)"] = c["undefined"]
            rows.append(row)
            continue
        m, macro = c["mcnemar"], c["delong"]["macro"]
        row["Images"] = str(c["n_images"])
        row["McNemar p (Holm)"] = f"{_format_p(m['p_value'])} ({_format_p(m['p_value_holm'])})"
        row["DeLong macro AUC p (Holm)"] = (
            f"{_format_p(macro['p_value'])} ({_format_p(macro['p_value_holm'])})"
            if "p_value_holm" in macro else "n/a"
        )  # fmt: skip
        for name, e in c["difference"].items():
            label, pct = tables.METRIC_DISPLAY[name]
            unit = "pp, " if pct else ""
            pc = c["per_cell_difference"][name]
            row[f"Δ {label.replace(' (%)', '')} ({unit}95% CI)"] = tables.format_ci(e, percent=pct)
            row[f"Δ {label.replace(' (%)', '')} per cell"] = (
                f"{tables.format_value(pc['mean'], percent=pct)} ± "
                f"{tables.format_value(pc['sd'], percent=pct)}"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _probe_rows(plan) -> pd.DataFrame:
    from cxrlab.evaluation.evaluate import _probe_summary

    rows = []
    for label in plan.study.labels():
        cells = [c for c in plan.cells if c.label == label and c.state == "finished"]
        verdicts = []
        for c in cells:
            try:
                summary = _probe_summary(c.run_dir)
            except CxrlabError as exc:
                logger.warning("%s", exc)
                summary = None
            if summary is not None:
                verdicts.append(summary.get("shortcut_suspected"))
        probed = len(verdicts)
        suspected = sum(1 for v in verdicts if v is True)
        rows.append({"Model": label, "Cells probed": f"{probed}/{len(cells)}",
                     "Shortcut suspected": f"{suspected}/{probed}" if probed else
                     "not run (`cxrlab probe RUN` on the cells)"})  # fmt: skip
    return pd.DataFrame(rows)


def write_report(study_dir: str | os.PathLike, *, n_boot: int | None = None) -> StudyReport:
    """Write the study's tables, figures and report.json into ``<study_dir>/report``."""
    from cxrlab.reports.figures import figure_svg, save_figure
    from cxrlab.reports.study_figures import plot_forest, plot_roc_overlays
    from cxrlab.study.page import PageTable, write_study_page

    study_dir = Path(study_dir)
    study = _load_study(study_dir)
    plan = make_plan(study, study_dir)
    n_boot = n_boot or study.n_boot
    out = study_dir / REPORT_DIR
    missing = [{"id": c.id, "state": c.state, "error": c.error} for c in plan.cells
               if c.state != "finished"]  # fmt: skip
    finished = {lab: [c for c in plan.cells if c.label == lab and c.state == "finished"]
                for lab in study.labels()}  # fmt: skip
    totals = {lab: sum(1 for c in plan.cells if c.label == lab) for lab in study.labels()}
    summaries = {lab: summarize_cv([c.run_dir for c in cells], n_boot=n_boot,
                                   seed=study.eval_seed)
                 for lab, cells in finished.items() if cells}  # fmt: skip
    if not summaries:
        raise RunDirError(
            f"No cell of the study in {study_dir} has finished, so there is nothing to report. "
            "Run `cxrlab study run` first."
        )
    classes = next(iter(summaries.values()))["classes"]
    by_key = {lab: {(c.fold, c.seed): c.run_dir for c in cells} for lab, cells in finished.items()}
    base = study.baseline_label
    comparisons = [
        _compare(study, lab, by_key[lab], by_key.get(base, {}), summaries, classes, n_boot,
                 study.eval_seed)
        for lab in study.labels() if lab != base and lab in summaries
    ]  # fmt: skip
    for test, getter in (("mcnemar", lambda c: c["mcnemar"]),
                         ("delong", lambda c: c["delong"]["macro"])):  # fmt: skip
        usable = [c for c in comparisons if test in c and "p_value" in getter(c)]
        for c, adj in zip(usable, holm_adjust([getter(c)["p_value"] for c in usable]),
                          strict=True):  # fmt: skip
            getter(c)["p_value_holm"] = adj
    files: dict[str, Path] = {}
    page: dict[str, PageTable] = {}
    b = next(iter(summaries.values()))["pooled"]["bootstrap"]
    grid = f"{len(study.seeds)} seed(s) x {study.folds or 1} fold(s)"
    note_models = (
        f"Mean ± SD (ddof 1) over the finished cells ({grid}); pooled: every cell's test "
        f"predictions bootstrapped by image ({b['method']}, {b['n_boot']} resamples, seed "
        f"{b['seed']})."
    )
    t_models = models_table(summaries, totals)
    page["models"] = PageTable(t_models, f"Models of the study {study.name}.", note_models)
    files.update({f"models_{k}": v for k, v in tables.write_table(
        out / "models", t_models, caption=f"Models of the study {study.name}.",
        label="tab:study-models", note=note_models).items()})  # fmt: skip
    t_comp = comparison_table(comparisons)
    note_comp = (
        f"Each model against {base} on the (fold, seed) cells both finished, with identical "
        "test sets. Tests on each image's seed-averaged out-of-fold prediction: McNemar exact, "
        f"DeLong (macro AUC), Holm-adjusted over {len(comparisons)} model(s); paired bootstrap "
        f"CIs of the differences ({n_boot} resamples); per cell: mean ± SD of the cells' "
        "differences."
    )
    if len(t_comp):
        page["comparison"] = PageTable(t_comp, f"Models against the baseline {base}.", note_comp)
        files.update({f"comparison_{k}": v for k, v in tables.write_table(
            out / "comparison", t_comp, caption=f"Models against the baseline {base}.",
            label="tab:study-baseline", note=note_comp).items()})  # fmt: skip
    ext = _external_rows(plan)
    if len(ext):
        page["external"] = PageTable(ext, "External test sets.", "External validation per model.")
        files.update({f"external_{k}": v for k, v in tables.write_table(
            out / "external", ext, caption="External test sets.", label="tab:study-external",
            note="External validation per model.").items()})  # fmt: skip
    probes = _probe_rows(plan)
    page["probes"] = PageTable(probes, "Shortcut probes.",
                               "Verdicts of probe.json in each finished cell.")  # fmt: skip
    files.update({f"probes_{k}": v for k, v in tables.write_table(
        out / "probes", probes, caption="Shortcut probes.", label="tab:study-probes",
        note="Verdicts of probe.json in each finished cell.").items()})  # fmt: skip
    cells = pd.DataFrame([{"Cell": c.id, "State": c.state, "Error": c.error[:200]}
                          for c in plan.cells])  # fmt: skip
    files.update({f"cells_{k}": v for k, v in tables.write_table(
        out / "cells", cells, caption="Cells.", label="tab:study-cells",
        note=f"{len(missing)} of {len(plan.cells)} cell(s) not finished.").items()})  # fmt: skip
    curves = {lab: _seed_averaged([c.run_dir for c in cells], classes)
              for lab, cells in finished.items() if cells}  # fmt: skip
    roc = plot_roc_overlays(
        {lab: (f["label"].to_numpy(dtype=object), f[classes].to_numpy()) for lab, f in
         curves.items()}, labels=classes,
        title="ROC per class, seed-averaged out-of-fold predictions")  # fmt: skip
    files["roc_png"], files["roc_pdf"] = save_figure(roc, out / "figures" / "roc_overlay")
    svgs = {"roc": figure_svg(roc)}
    forest_rows = [{"model": c["model"], "metric": m, **e} for c in comparisons
                   if "difference" in c for m, e in c["difference"].items()]  # fmt: skip
    if forest_rows:
        fig = plot_forest(forest_rows, baseline=base)
        files["forest_png"], files["forest_pdf"] = save_figure(fig, out / "figures" / "forest")
        svgs["forest"] = figure_svg(fig)
    files["json"] = write_json(out / "report.json", {
        "study": study.name, "baseline": base, "n_boot": n_boot, "models": summaries,
        "comparisons": comparisons, "missing": missing,
        "external": [{"model": lab, "set": n, "state": s} for lab, n, s in plan.external],
    })  # fmt: skip
    files["md"] = write_text(out / "report.md", _markdown(study, out, files, missing))
    files["html"] = write_study_page(out / STUDY_PAGE, study=study, plan=plan, tables=page,
                                     svgs=svgs, missing=missing, n_boot=n_boot)  # fmt: skip
    return StudyReport(out, summaries, comparisons, missing, files)


def _markdown(study, out: Path, files: dict[str, Path], missing) -> str:
    parts = [f"# Study {study.name}\n", f"Dataset: `{study.data}`; baseline: "
             f"`{study.baseline_label}`; models: {', '.join(study.labels())}; seeds "
             f"{study.seeds}; {study.folds or 1} fold(s). The same as one page: "
             f"[{STUDY_PAGE}]({STUDY_PAGE}).\n"]  # fmt: skip
    for key, title in (("models_md", "Models"), ("comparison_md", "Against the baseline"),
                       ("external_md", "External test sets"), ("probes_md", "Shortcut probes"),
                       ("cells_md", "Cells")):  # fmt: skip
        if key in files:
            parts.append(f"## {title}\n\n" + files[key].read_text())
    for key, title in (("roc_png", "ROC per class"), ("forest_png", "Differences")):
        if key in files:
            parts.append(f"![{title}]({files[key].relative_to(out)})\n")
    if missing:
        parts.append("Missing cells: " + ", ".join(f"{m['id']} ({m['state']})" for m in missing))
    return "\n".join(parts) + "\n"


def _external_rows(plan) -> pd.DataFrame:
    """Per model and external set: mean and SD over the finished cells' external metrics."""
    import json

    from cxrlab.rundir import RunDir

    rows = []
    for label, name, state in plan.external:
        values: dict[str, list[float]] = {"accuracy": [], "macro_f1": [], "macro_roc_auc": []}
        for cell in plan.cells:
            path = RunDir(cell.run_dir).external(name).metrics
            if cell.label != label or cell.state != "finished" or not path.is_file():
                continue
            metrics = json.loads(path.read_text())["metrics"]
            for key, got in values.items():
                value = metrics.get(key, {}).get("value")
                if value is not None:
                    got.append(float(value))
        row = {"Model": label, "External set": name, "Cells": len(values["accuracy"])}
        for key, title, scale in (("accuracy", "Acc (%)", 100), ("macro_f1", "Macro F1 (%)", 100),
                                  ("macro_roc_auc", "Macro AUC", 1)):  # fmt: skip
            got = np.asarray(values[key]) * scale
            row[title] = (
                f"{got.mean():.3g} ± {got.std(ddof=1):.2g}"
                if len(got) > 1
                else f"{got[0]:.3g}"
                if len(got)
                else state
            )
        rows.append(row)
    return pd.DataFrame(rows)
