"""``study.html``: the study's results section as one self-contained page.

Rendered from ``cxrlab/reports/templates/study.html.j2`` with the run report's Jinja2
environment and style sheet (:mod:`cxrlab.reports.report`): the same tables as the Markdown and
LaTeX files (the frames :func:`cxrlab.study.report.write_report` builds), the ROC overlays and the
forest plot inlined as SVG, and links (relative, so the study folder can be moved or zipped) to
each cell's run directory and to its own ``report.html`` where ``cxrlab report`` wrote one.
Nothing on the page refers to a network resource.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import cxrlab
from cxrlab.io import write_text
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)

#: Page sections in order: (anchor, heading). The test checks every one is rendered.
SECTIONS = (
    ("summary", "Summary"),
    ("models", "Models"),
    ("baseline", "Against the baseline"),
    ("roc", "ROC curves per class"),
    ("external", "External test sets"),
    ("probes", "Shortcut probes"),
    ("cells", "Cells"),
)


@dataclass
class PageTable:
    """One table of the page: the frame the .md/.tex files were written from, and its texts."""

    frame: pd.DataFrame | None
    caption: str
    note: str = ""


def write_study_page(
    page: Path,
    *,
    study,
    plan,
    tables: dict[str, PageTable],
    svgs: dict[str, str],
    missing: list[dict[str, Any]],
    n_boot: int,
) -> Path:
    """Render ``study.html`` into ``page``.

    Args:
        page: Where to write (``<study>/report/study.html``).
        study: The :class:`~cxrlab.study.schema.StudyConfig`.
        plan: The :class:`~cxrlab.study.planner.Plan` the report was made from (cell states).
        tables: ``models``, ``comparison``, ``external``, ``probes``, ``cells`` (those present).
        svgs: ``roc`` and ``forest`` (those drawn) as SVG documents.
        missing: The cells not finished (``id``, ``state``, ``error``).
        n_boot: Bootstrap resamples of the report.
    """
    from cxrlab.reports.report import _env, _git_commit, _table

    counts = plan.counts()
    cells = []
    for c in plan.cells:
        run = RunDir(c.run_dir)
        cells.append({
            "id": c.id, "label": c.label, "fold": c.fold, "seed": c.seed, "state": c.state,
            "error": c.error.splitlines()[0][:300] if c.error else "",
            "href": _relative(c.run_dir, page.parent),
            "report": _relative(run.report, page.parent) if run.report.is_file() else None,
        })  # fmt: skip
    context = {
        "title": f"Study {study.name}",
        "study": study,
        "study_dir": plan.out,
        "labels": study.labels(),
        "baseline": study.baseline_label,
        "sections": SECTIONS,
        "tables": {
            k: {"html": _table(t.frame), "caption": t.caption, "note": t.note}
            for k, t in tables.items()
        },  # fmt: skip
        "svgs": svgs,
        "missing": missing,
        "cells": cells,
        "n_cells": len(plan.cells),
        "n_finished": counts.get("finished", 0),
        "unfinished_models": [
            lab
            for lab in study.labels()
            if not any(c.label == lab and c.state == "finished" for c in plan.cells)
        ],  # fmt: skip
        "external_states": [
            {"label": lab, "set": name, "state": state} for lab, name, state in plan.external
        ],  # fmt: skip
        "n_boot": n_boot,
        "version": cxrlab.__version__,
        "commit": _git_commit(),
        "command": shlex.join(["cxrlab", "study", "report", str(plan.out)]),
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    path = write_text(page, _env().get_template("study.html.j2").render(**context))
    logger.info("Wrote %s", path)
    return path


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()
