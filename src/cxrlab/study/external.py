"""External test sets of a study (``external:`` in study.yaml).

Every finished cell is scored on every external set with
:func:`cxrlab.evaluation.external.evaluate_external` (what ``cxrlab evaluate RUN --data FOLDER
--name NAME`` runs: the leakage audit, then the internal metrics.json schema), into the cell's
``external/<name>/``. A set the evaluation refuses (for instance every image overlaps the cell's
training data) is recorded as failed with its message; the other sets and cells go on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cxrlab.errors import CxrlabError
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)


def external_state(run_dir: Path, name: str) -> str:
    """``"finished"`` when the cell's ``external/<name>/metrics.json`` exists, else ``"ready"``."""
    return "finished" if RunDir(run_dir).external(name).metrics.is_file() else "ready"


def evaluate_external(run_dir: Path, name: str, folder: Path) -> dict[str, Any]:
    """Score one finished cell on one external set: ``{"state", ...}``."""
    from cxrlab.evaluation.external import evaluate_external as score

    try:
        result = score(run_dir, folder, name=name)
    except CxrlabError as exc:
        logger.warning("External set %s on %s failed: %s", name, run_dir, exc)
        return {"state": "failed", "error": str(exc)}
    m = result.metrics["metrics"]
    return {
        "state": "finished",
        "n": result.metrics.get("n"),
        "accuracy": m["accuracy"]["value"],
        "macro_f1": m["macro_f1"]["value"],
    }
