"""Cross-validation summary: the evaluated runs of a CV, read from their saved predictions.

The summary gives each metric's mean, standard deviation (ddof=1), min and max across runs, and a
pooled interval: the test predictions of all runs are pooled and bootstrapped by image (every
prediction of one image, one per seed, is drawn together) stratified by class, so repeated
predictions of the same image under several seeds are not counted as independent evidence.

Training the runs is :func:`cxrlab.training.cv.run_cv`; the run-directory names it uses
(:func:`cv_run_name`) are defined here, beside the parser that reads fold and seed back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import DataError
from cxrlab.evaluation.bootstrap import bootstrap_metrics
from cxrlab.evaluation.metrics import PER_CLASS_METRICS, SCALAR_METRICS, compute_metrics
from cxrlab.evaluation.runs import load_predictions
from cxrlab.io import write_json
from cxrlab.reports import tables
from cxrlab.rundir import RunDir

_RUN_NAME = re.compile(r"fold(\d+)-seed(\d+)$")


def cv_run_name(fold: int, seed: int) -> str:
    """Directory name of one CV run."""
    return f"fold{fold}-seed{seed}"


def parse_cv_run_name(name: str) -> tuple[int, int] | None:
    """``(fold, seed)`` of a directory named by :func:`cv_run_name`, else None."""
    match = _RUN_NAME.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _spread(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    ok = v[~np.isnan(v)]
    return {
        "mean": float(ok.mean()) if len(ok) else float("nan"),
        "sd": float(ok.std(ddof=1)) if len(ok) > 1 else float("nan"),
        "min": float(ok.min()) if len(ok) else float("nan"),
        "max": float(ok.max()) if len(ok) else float("nan"),
        "n_runs": int(len(ok)),
        "values": [float(x) for x in v],
    }


def summarize_cv(
    run_dirs: Sequence[str | os.PathLike],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Summarise evaluated runs (each with predictions/test.csv) of a cross-validation.

    Args:
        run_dirs: The runs; classes must agree.
        n_boot: Resamples of the pooled bootstrap.
        seed: Its seed.
        confidence: Interval coverage.

    Returns:
        ``{"classes", "n_runs", "runs": [{"run_dir", "fold", "seed", "n_test"}], "metrics":
        {name: {"mean", "sd", "min", "max", "n_runs", "values", "pooled": {value, ci_low,
        ci_high}}}, "per_class": {class: {metric: {...}}}, "pooled": {"n_predictions",
        "n_images", "bootstrap"}}``.
    """
    run_dirs = [RunDir.open(d).path for d in run_dirs]
    if not run_dirs:
        raise DataError("summarize_cv needs at least one run directory.")
    classes = None
    per_run, runs, pooled_true, pooled_pred, pooled_prob, pooled_key = [], [], [], [], [], []
    for d in run_dirs:
        p = load_predictions(d, "test", RunDir(d).read_classes())
        if classes is None:
            classes = list(p.classes)
        elif list(p.classes) != classes:
            raise DataError(f"{d} has classes {list(p.classes)}, but {run_dirs[0]} has {classes}.")
        m = compute_metrics(p.y_true, p.probs, labels=classes, y_pred=p.y_pred)
        per_run.append(m)
        match = _RUN_NAME.search(d.name)
        runs.append(
            {
                "run_dir": str(d),
                "fold": int(match.group(1)) if match else None,
                "seed": int(match.group(2)) if match else None,
                "n_test": len(p),
                **{name: float(m[name]) for name in SCALAR_METRICS},
            }
        )
        sha = RunDir(d).path_to_sha1()
        pooled_true.append(p.y_true)
        pooled_pred.append(p.y_pred)
        pooled_prob.append(p.probs)
        pooled_key.append(np.array([sha.get(x) or x for x in p.paths], dtype=object))
    keys = np.concatenate(pooled_key)
    y_true = np.concatenate(pooled_true)
    pooled = bootstrap_metrics(
        y_true, np.concatenate(pooled_prob), labels=classes, y_pred=np.concatenate(pooled_pred),
        n_boot=n_boot, seed=seed, confidence=confidence, groups=keys,
    )  # fmt: skip
    metrics = {}
    for name in SCALAR_METRICS:
        metrics[name] = {**_spread([m[name] for m in per_run]), "pooled": pooled["metrics"][name]}
    per_class = {
        c: {
            name: {**_spread([m[name][j] for m in per_run]), "pooled": pooled["per_class"][c][name]}
            for name in PER_CLASS_METRICS
        }
        for j, c in enumerate(classes)
    }
    return {
        "classes": classes,
        "n_runs": len(run_dirs),
        "runs": runs,
        "metrics": metrics,
        "per_class": per_class,
        "pooled": {
            "n_predictions": int(len(y_true)),
            "n_images": int(len(set(keys))),
            "n_per_class": pooled["n_per_class"],
            "bootstrap": pooled["bootstrap"],
        },
    }


def cv_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Metric | Mean ± SD | Min-max | Pooled (95% CI)."""
    rows = []
    for name, entry in summary["metrics"].items():
        label, pct = tables.METRIC_DISPLAY.get(name, (name, False))

        def fmt(v, pct=pct):
            return tables.format_value(v, percent=pct)

        rows.append(
            {
                "Metric": label,
                "Mean ± SD": f"{fmt(entry['mean'])} ± {fmt(entry['sd'])}",
                "Min-max": f"{fmt(entry['min'])}-{fmt(entry['max'])}",
                "Pooled (95% CI)": tables.format_ci(entry["pooled"], percent=pct),
            }
        )
    return pd.DataFrame(rows)


def write_cv_summary(summary: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write cv_summary.json, cv_summary.md and cv_summary.tex atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    table = cv_table(summary)
    b = summary["pooled"]["bootstrap"]
    note = (
        f"{summary['n_runs']} runs. Mean ± SD (ddof 1), min-max across runs; pooled: all runs' "
        f"test predictions ({summary['pooled']['n_predictions']} predictions of "
        f"{summary['pooled']['n_images']} "
        f"images) with a {b['method']} by image ({b['n_boot']} resamples, seed {b['seed']})."
    )
    return {
        "json": write_json(out_dir / "cv_summary.json", summary),
        **tables.write_table(
            out_dir / "cv_summary",
            table,
            caption="Cross-validation summary.",
            label="tab:cv",
            note=note,
        ),
    }
