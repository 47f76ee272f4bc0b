"""Study orchestration overhead on tiny CPU cells (target <= 5% of the cells' own time).

Runs one study (default: small-cnn x 2 seeds x 2 folds on a synthetic dataset at 64 px) through
``run_study`` in this process and compares its wall time with the cells' own time from their
status files:

* ``cell_seconds``: what each cell costs run by hand (``cxrlab train`` + ``cxrlab evaluate``:
  scan, decode cache, model, fit, predictions, metrics): each cell's own wall time from its
  status file, plus, for the one cell that trained on the plan's scan and split instead of
  scanning (``plan_scan_seconds`` in its status; only when it really did), that scan's seconds:
  the same ``prepare_split`` call with the same options, made once, before the cell's clock
  started. ``overhead`` = (study wall - sum) / sum is what the study adds: the calibration,
  survey and cell-state reads, status files, study.json, the external-set bookkeeping.
  Imports land wherever they first happen, as in ``cxrlab study run``: validation imports the
  model registry before the clock starts; the training and evaluation code, Lightning and
  torch's optimizer stack are imported inside the first cell's wall time (a cell's clock starts
  before its imports), and nothing else is imported ahead of the study.
* ``fit_seconds``: Lightning's fit alone (train_summary.json); ``overhead_vs_fit`` counts the
  per-cell scan, cache, evaluation and model set-up as overhead too.

The report (``cxrlab study report``) is timed separately: it is the results section, not
orchestration.

``--by-hand`` is the cross-check that needs no accounting: the same cells (the same TrainConfigs,
from the same study file) run one after another through ``run_cell``, the unit ``cxrlab cv``
loops over, with no plan, no calibration and no study files, timed from the same point (after
validation). Run both modes in fresh processes, interleaved, and compare their wall times:
``study_wall_s`` (study) - ``hand_wall_s`` (by hand) is what the study adds.

Usage: python benchmarks/study_overhead.py [--per-class 100] [--epochs 3] [--seeds 2] [--by-hand]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cxrlab.data.synth import synthesize
from cxrlab.study import run_study, validate_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--by-hand", action="store_true", help="The cells alone (no study).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = synthesize(tmp / "data", per_class=args.per_class, size=args.size, seed=0)
        study = validate_study(
            {"name": "overhead", "data": str(data), "models": [args.model],
             "seeds": list(range(args.seeds)), "folds": args.folds,
             "train": {"image_size": args.size, "epochs": args.epochs, "accelerator": "cpu",
                       "cache_dir": str(tmp / "cache")}},
            where="benchmark",
        )  # fmt: skip
        if args.by_hand:
            print(json.dumps(_by_hand(study, tmp / "hand")))
            return
        start = time.perf_counter()
        result = run_study(study, tmp / "out", calibrate=args.calibrate)
        wall = time.perf_counter() - start
        from cxrlab.study.report import write_report  # not before the study's clock

        start = time.perf_counter()
        write_report(tmp / "out")
        report = time.perf_counter() - start
    statuses = list(result.statuses.values())
    handed = sum(s.get("plan_scan_seconds") or 0.0 for s in statuses)
    cell = sum(s["wall"] for s in statuses) + handed
    fit = sum(s["fit_seconds"] for s in statuses)
    print(json.dumps({
        "cells": len(statuses), "study_wall_s": round(wall, 2), "cell_seconds": round(cell, 2),
        "fit_seconds": round(fit, 2),
        "eval_seconds": round(sum(s["eval_seconds"] for s in statuses), 2),
        "plan_scan_s": round(result.plan.scan_seconds, 2),
        "plan_scan_used_by_a_cell_s": round(handed, 2),
        "calibration_s": round(result.plan.calibration_seconds, 2),
        "overhead": round((wall - cell) / cell, 4),
        "overhead_without_calibration": round(
            (wall - cell - result.plan.calibration_seconds) / cell, 4),
        "overhead_vs_fit": round((wall - fit) / fit, 4),
        "report_s": round(report, 2), "target": 0.05,
    }))  # fmt: skip


def _by_hand(study, out: Path) -> dict:
    """The study's cells through ``run_cell`` in a loop, as by hand: no plan, calibration, files."""
    from cxrlab.study import make_plan
    from cxrlab.training.cv import run_cell

    cells = make_plan(study, out).cells
    start = time.perf_counter()
    for cell in cells:
        run_cell(cell.config, n_boot=study.n_boot, eval_seed=study.eval_seed,
                 make_figures=study.figures)  # fmt: skip
    return {"cells": len(cells), "hand_wall_s": round(time.perf_counter() - start, 2)}


if __name__ == "__main__":
    main()
