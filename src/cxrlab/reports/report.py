"""``build_report``: the paper in one page: report.html, model_card.md and claim_checklist.md.

The page is one self-contained HTML file rendered from the Jinja2 templates shipped in
``cxrlab/reports/templates``: figures are inlined (SVG redrawn from the run's files, so they
print as vectors; the CAM panel as a PNG data URI), the style sheet is inline, and nothing
refers to a network resource. It reads only the run's files (:mod:`cxrlab.reports.facts`) and
needs neither a GPU nor the training code; it is rebuilt in seconds.
"""

from __future__ import annotations

import base64
import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import cxrlab
from cxrlab.io import refuse_inside, write_text
from cxrlab.reports import figures, tables
from cxrlab.reports.claim import CITATION as CLAIM_CITATION
from cxrlab.reports.claim import (
    STATUS_TEXT,
    ClaimItem,
    bootstrap_name,
    claim_checklist,
    status_counts,
)
from cxrlab.reports.facts import Facts, collect_facts
from cxrlab.reports.model_card import CITATION as CARD_CITATION
from cxrlab.reports.model_card import CardSection, model_card
from cxrlab.reports.style import class_label

logger = logging.getLogger(__name__)

#: Report sections, in page order: (anchor, heading). Tests check every one is rendered.
SECTIONS = (
    ("summary", "Summary"),
    ("data", "Data"),
    ("model", "Model and training"),
    ("test", "Internal test"),
    ("external", "External validation"),
    ("probes", "Shortcut probes"),
    ("cam", "Class activation maps"),
    ("limitations", "Limitations"),
    ("model-card", "Model card"),
    ("claim", "CLAIM 2024 checklist"),
)


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        html: The report page.
        model_card: model_card.md.
        claim_checklist: claim_checklist.md.
        claim_counts: CLAIM items per status (``filled``, ``prefilled``, ``author``).
        sections: Anchors of the sections rendered with content (others say what is missing).
    """

    html: Path
    model_card: Path
    claim_checklist: Path
    claim_counts: dict[str, int]
    sections: list[str]


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cxrlab.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["label"] = class_label
    return env


def build_report(
    run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None
) -> ReportResult:
    """Write ``report.html`` (or ``out``), ``model_card.md`` and ``claim_checklist.md``.

    Args:
        run_dir: A run directory written by ``cxrlab train`` (ideally evaluated, probed and
            explained).
        out: Where to write the page (default ``RUN/report.html``); the Markdown files go
            beside it, or into the run directory when ``out`` is not given.

    Raises:
        RunDirError: Not a run directory.
        DataError: ``out`` lies inside the dataset folder.
    """
    facts = collect_facts(run_dir)
    run = facts.run
    page = Path(out) if out is not None else run.report
    if facts.data.get("data_root"):
        refuse_inside(page, facts.data["data_root"], "--out")
    card_path = run.model_card if out is None else page.with_name(run.MODEL_CARD)
    claim_path = run.claim_checklist if out is None else page.with_name(run.CLAIM_CHECKLIST)
    card = model_card(facts)
    claim = claim_checklist(facts)
    counts = status_counts(claim)
    context = _context(facts, card, claim, counts, page)
    env = _env()
    write_text(page, env.get_template("report.html.j2").render(**context))
    write_text(card_path, env.get_template("model_card.md.j2").render(**context))
    write_text(claim_path, env.get_template("claim_checklist.md.j2").render(**context))
    logger.info("Wrote %s, %s and %s", page, card_path, claim_path)
    return ReportResult(page, card_path, claim_path, counts, context["present"])


# -- context -------------------------------------------------------------------------------------
def _table(frame: pd.DataFrame | None) -> str:
    if frame is None or frame.empty:
        return ""
    return frame.to_html(index=False, border=0, classes="t", escape=True)


def _svg(fig) -> str:
    if fig is None:
        return ""
    try:
        return figures.figure_svg(fig)
    finally:
        fig.clf()


def _git_commit() -> str | None:
    src = Path(cxrlab.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _data_tables(f: Facts) -> dict[str, str]:
    d = f.data
    if not d.get("has_split"):
        return {}
    rows = [{"Class": class_label(c), **{s: v[s] for s in ("train", "val", "test")},
             "total": sum(v.values())} for c, v in d["per_class"].items()]  # fmt: skip
    rows.append({"Class": "all", **{s: d["per_split"][s] for s in ("train", "val", "test")},
                 "total": d["n_images"]})  # fmt: skip
    src_rows = [{"Class": class_label(c), "Source": s, "Images": n}
                for c, v in d["sources"].items() for s, n in v.items()]  # fmt: skip
    return {
        "per_class": _table(pd.DataFrame(rows)),
        "sources": _table(pd.DataFrame(src_rows)),
    }


def _test_section(f: Facts) -> dict[str, Any]:
    m = f.metrics
    if m is None:
        return {}
    from cxrlab.evaluation.operating_points import operating_points_table

    out: dict[str, Any] = {
        "n": m.get("n"),
        "metrics": _table(tables.metrics_table(m["metrics"])),
        "per_class": _table(_labelled(tables.per_class_table(m.get("per_class") or {}))),
        "bootstrap": m.get("bootstrap") or {},
        "bootstrap_name": bootstrap_name((m.get("bootstrap") or {}).get("method")),
    }
    cm = (m.get("confusion_matrix") or {}).get("counts")
    if cm is not None:
        out["cm"] = _svg(figures.plot_confusion_matrix(cm, f.classes))
        out["cm_norm"] = _svg(figures.plot_confusion_matrix(cm, f.classes, normalize=True))
    cal = m.get("calibration") or {}
    rel = cal.get("reliability") or {}
    if "before" in rel:
        after = pd.DataFrame(rel["after"]) if "after" in rel else None
        out["reliability"] = _svg(figures.plot_reliability(
            pd.DataFrame(rel["before"]).astype(float), None if after is None else after.astype(
                float), ece_before=(cal.get("before") or {}).get("ece"),
            ece_after=(cal.get("after") or {}).get("ece"), temperature=cal.get("temperature"),
        ))  # fmt: skip
    out["calibration"] = {
        "temperature": cal.get("temperature"),
        "fit": cal.get("fit"),
        "before": cal.get("before"),
        "after": cal.get("after"),
        "note": cal.get("note"),
    }
    points = m.get("operating_points") or {}
    if points.get("classes"):
        out["operating_points"] = _table(_labelled(operating_points_table(points),
                                                   "Class (vs rest)"))  # fmt: skip
    pred = f.run.predictions("test")
    if pred.is_file():
        from cxrlab.evaluation.runs import load_predictions

        test = load_predictions(f.run.path, "test", f.classes)
        out["roc"] = _svg(figures.plot_roc_curves(test.y_true, test.probs, labels=f.classes))
        out["pr"] = _svg(figures.plot_pr_curves(test.y_true, test.probs, labels=f.classes))
        if points.get("classes"):
            out["op_fig"] = _svg(figures.plot_operating_points(
                test.y_true, test.probs, labels=f.classes, points=points))  # fmt: skip
    return out


def _labelled(frame: pd.DataFrame, col: str = "Class") -> pd.DataFrame:
    if col in frame.columns:
        frame = frame.copy()
        frame[col] = frame[col].map(class_label)
    return frame


_EXTERNAL_METRICS = ("accuracy", "macro_f1", "macro_recall", "macro_roc_auc", "ece")


def _external_section(f: Facts) -> list[dict[str, Any]]:
    out = []
    internal = (f.metrics or {}).get("metrics") or {}
    for e in f.external:
        ext = e["metrics"].get("metrics") or {}
        rows = []
        for name in _EXTERNAL_METRICS:
            if name not in ext and name not in internal:
                continue
            label, pct = tables.METRIC_DISPLAY.get(name, (name, False))
            rows.append({
                "Metric": label,
                f"Internal test (n = {(f.metrics or {}).get('n', '?')})":
                    tables.format_ci(internal[name], percent=pct) if name in internal else "",
                f"{e['name']} (n = {e['metrics'].get('n', '?')})":
                    tables.format_ci(ext[name], percent=pct) if name in ext else "",
            })  # fmt: skip
        overlap = e.get("overlap")
        out.append({
            "name": e["name"],
            "n": e["metrics"].get("n"),
            "comparison": _table(pd.DataFrame(rows)),
            "overlap_rows": 0 if overlap is None else len(overlap),
            "overlap": _table(overlap.head(20)) if overlap is not None else "",
            "n_predictions": e.get("n_predictions"),
            "per_class": _table(_labelled(tables.per_class_table(e["metrics"].get("per_class")
                                                                 or {}))),
        })  # fmt: skip
    return out


def _probe_section(f: Facts) -> dict[str, Any]:
    p = f.probe
    if p is None:
        return {}
    rows = []
    clean = p.get("clean") or {}
    if "accuracy" in clean:
        rows.append({"Input": "unmodified images", "Accuracy": f"{clean['accuracy']:.3f}"})
    for name, e in (p.get("probes") or {}).items():
        if isinstance(e, dict) and "accuracy" in e:
            rows.append({"Input": name.replace("_", " "), "Accuracy": f"{e['accuracy']:.3f}"})
    chance = (p.get("chance") or {}).get("majority")
    if chance is not None:
        rows.append({"Input": "chance (majority class)", "Accuracy": f"{chance:.3f}"})
    rules = [{"Rule": r.get("name", ""), "In words": r.get("rule", ""),
              "Value": "" if r.get("value") is None else f"{r['value']:.3f}",
              "Threshold": "" if r.get("threshold") is None else f"{r['threshold']:.3f}",
              "Fired": "yes" if r.get("triggered") else ("no" if r.get("evaluated", True)
                                                         else "not evaluated")}
             for r in p.get("rules") or [] if isinstance(r, dict)]  # fmt: skip
    return {
        "verdict": "shortcut suspected" if p.get("shortcut_suspected") else "no shortcut flagged",
        "suspected": bool(p.get("shortcut_suspected")),
        "summary": str(p.get("summary", "")),
        "scores": _table(pd.DataFrame(rows)),
        "rules": _table(pd.DataFrame(rules)),
        "split": p.get("split"),
        "n": p.get("n_images"),
        "region": (p.get("lung_region") or {}).get("source"),
    }


def _cam_section(f: Facts) -> dict[str, Any]:
    if f.explain is None or not f.run.cam_panel.is_file():
        return {}
    data = base64.b64encode(f.run.cam_panel.read_bytes()).decode("ascii")
    e = f.explain
    return {"png": f"data:image/png;base64,{data}", "method": e.get("method"),
            "layer": e.get("layer"), "target": e.get("target"), "n": e.get("n_images"),
            "split": e.get("split"), "image_size": e.get("image_size"),
            "display_size": e.get("display_size"),
            "attention": e.get("lung_attention") or {}}  # fmt: skip


def _context(f: Facts, card: list[CardSection], claim: list[ClaimItem], counts, page: Path):
    t = f.training
    curves = None
    if f.history is not None:
        curves = _svg(figures.plot_training_curves(
            f.history, chosen_epoch=t.get("chosen_epoch"),
            train_loss_note=t.get("train_loss_note") or None))  # fmt: skip
    test = _test_section(f)
    external = _external_section(f)
    probes = _probe_section(f)
    cam = _cam_section(f)
    present = ["summary", "limitations", "model-card", "claim"]
    present += [a for a, ok in (("data", f.data.get("has_split")), ("model", bool(f.config)),
                                ("test", bool(test)), ("external", bool(external)),
                                ("probes", bool(probes)), ("cam", bool(cam))) if ok]  # fmt: skip
    command = ["cxrlab", "report", str(f.run.path)]
    if page != f.run.report:
        command += ["--out", str(page)]
    recipe_rows = pd.DataFrame(
        [{"Setting": k, "Value": str(v)} for k, v in t["recipe"].items()]
        + [{"Setting": f"augment.{k}", "Value": str(v)} for k, v in t["augment"].items()]
    )
    env = f.environment
    return {
        "title": f"{f.run.path.name}: {t['recipe'].get('model') or _ensemble_name(f)} on "
        + ", ".join(class_label(c) for c in f.classes),
        "f": f,
        "d": f.data,
        "t": t,
        "classes": [class_label(c) for c in f.classes],
        "sections": SECTIONS,
        "present": present,
        "data_tables": _data_tables(f),
        "recipe": _table(recipe_rows),
        "packages": ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items()),
        "env": env,
        "curves": curves,
        "test": test,
        "external": external,
        "probes": probes,
        "cam": cam,
        "card": card,
        "claim": claim,
        "counts": counts,
        "status_text": STATUS_TEXT,
        "claim_citation": CLAIM_CITATION,
        "card_citation": CARD_CITATION,
        "version": cxrlab.__version__,
        "commit": _git_commit(),
        "command": shlex.join(command),
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "fmt": _fmt,
    }


def _ensemble_name(f: Facts) -> str:
    """An evaluated ensemble's name (``ensemble(3 x resnet18)``), else ``model``."""
    return ((f.metrics or {}).get("ensemble") or {}).get("model_name") or "model"


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
