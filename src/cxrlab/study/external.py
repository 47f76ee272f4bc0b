"""External test sets of a study (``external:`` in study.yaml).

Scoring a trained cell on another labelled dataset is the external-validation issue's
``cxrlab.evaluation.external`` (``cxrlab evaluate RUN --data FOLDER --name NAME``). Until that
module is importable here, every external evaluation is recorded as
:data:`~cxrlab.study.planner.PENDING_EXTERNAL` in the plan, ``study.json`` and the report; no
result is made up.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PENDING = "pending: external validation not available"
#: The library function the study calls once it exists: ``fn(run_dir, data=..., name=...)``.
FUNCTION = ("cxrlab.evaluation.external", "evaluate_external")


def _function():
    module, name = FUNCTION
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def external_state() -> str:
    """``"ready"`` when the external evaluation is importable, else :data:`PENDING`."""
    return "ready" if _function() is not None else PENDING


def evaluate_external(run_dir: Path, name: str, folder: Path) -> dict[str, Any]:
    """Score one finished cell on one external set; ``{"state": ...}`` (and its result)."""
    fn = _function()
    if fn is None:
        return {"state": PENDING}
    result = fn(run_dir, data=folder, name=name)
    return {"state": "finished", "result": getattr(result, "to_dict", lambda: str(result))()}
