"""``evaluate_run``: a run directory's test metrics with CIs, calibration, tables and figures.

Files written into the run directory (all atomically)::

    metrics.json                  see below
    tables/metrics.{md,tex}       scalar metrics with 95% CIs (+ temperature-scaling rows)
    tables/per_class.{md,tex}     one-vs-rest precision, sensitivity, specificity, F1, AUC, AP
    tables/operating_points.{md,tex}  thresholds chosen on val, applied to test (with val)
    figures/<name>.{png,pdf}      confusion_matrix, confusion_matrix_normalized, roc, pr,
                                  reliability, operating_points (with val), training_curves
    predictions/{val,test}.csv    only when missing or older than the checkpoint

``metrics.json`` holds ``classes``, ``n``, ``n_per_class``, ``test_set`` (fingerprint: sha1 of
the sorted (sha1-or-path, label) pairs of split.csv's test rows) and ``test_set_hash`` (its sha1),
``format`` (:data:`METRICS_FORMAT`), ``bootstrap`` (method, n_boot, seed, confidence),
``intervals`` (which interval method each metric uses), ``metrics`` (each scalar metric as
``{"value", "ci_low", "ci_high", "method"}``; ``null`` values carry ``undefined``, the reason),
``per_class`` (class -> metric -> interval, plus ``support``), ``confusion_matrix`` (``labels``,
``counts``), ``calibration`` (``temperature`` applied or null, ``fit`` with its search bounds and
whether it was applied, ``before``/``after`` ECE, Brier and NLL on test, ``reliability`` bins),
``operating_points`` (see :mod:`cxrlab.evaluation.operating_points`) and ``definitions`` (how
each metric is computed, in words). The file is strict JSON (no ``NaN``). Re-running
``cxrlab evaluate RUN`` on an old run rewrites it under the current conventions.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab import __version__
from cxrlab.evaluation.bootstrap import bootstrap_metrics
from cxrlab.evaluation.calibration import (
    calibration_summary,
    reliability_curve,
    temperature_scaling,
)
from cxrlab.evaluation.operating_points import operating_points, operating_points_table
from cxrlab.evaluation.runs import (
    ensure_predictions,
    load_predictions,
)
from cxrlab.io import write_json
from cxrlab.reports import figures, tables
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)

#: Version of metrics.json's conventions; 2: scikit-learn zero_division, Clopper-Pearson
#: proportions, strict JSON, temperature fit report, operating points.
METRICS_FORMAT = 2

#: How each metric is defined (metrics.json ``definitions``; the README repeats it).
DEFINITIONS = {
    "averages": "macro = unweighted mean over all classes; weighted = mean weighted by class "
    "support. A per-class precision, recall, F1 or specificity that is undefined (0/0: class "
    "never predicted, or absent) is null per class with the reason beside it and counts as 0 in "
    "the macro and weighted averages, with a warning naming the class: scikit-learn's "
    "precision_recall_fscore_support with its default zero_division",
    "roc_auc": "one-vs-rest per class (ties count 1/2); macro = mean over classes where defined "
    "(the class has true and other samples)",
    "average_precision": "one-vs-rest step-wise sum (scikit-learn average_precision_score); "
    "macro = mean over classes where defined",
    "npv": "one-vs-rest TN / (TN + FN)",
    "ece": "15 equal-width bins of the top-class probability",
    "brier": "multiclass: mean over samples of sum over classes of (p - onehot)^2, in [0, 2]",
    "nll": "mean negative natural log probability of the true class",
    "intervals": "proportions (accuracy, per-class precision, recall/sensitivity, "
    "specificity, NPV) get Clopper-Pearson intervals; all other metrics and differences a "
    "stratified percentile bootstrap; see 'intervals' for the method of each metric",
    "undefined": "null values are undefined; the reason is beside them ('undefined' or "
    "'no_interval')",
}

#: The seed project's published test results (Keras, its own split): a note, not a baseline.
SEED_PUBLISHED = {
    "accuracy": 0.7016,
    "macro_precision": 0.6450,
    "macro_recall": 0.7053,
    "macro_f1": 0.6484,
}


@dataclass
class EvaluationResult:
    """What :func:`evaluate_run` computed and wrote.

    Attributes:
        run_dir: The run directory.
        classes: Class names in model output order.
        metrics: The content of ``metrics.json``.
        files: Written files by short name (``metrics``, ``metrics_md``, ``roc_png``...).
        probe: ``probe.json``'s summary when the run has one.
    """

    run_dir: Path
    classes: list[str]
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    probe: dict[str, Any] | None = None

    def value(self, name: str) -> float:
        """Point estimate of a scalar metric (e.g. ``"accuracy"``)."""
        return self.metrics["metrics"][name]["value"]


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    device=None,
    make_figures: bool = True,
    tta: int = 1,
) -> EvaluationResult:
    """Evaluate a run on its test split and write metrics, tables and figures into it.

    Predictions (``predictions/{val,test}.csv``) are computed from the best checkpoint when
    missing or older than it. Proportions get Clopper-Pearson intervals, the other metrics
    stratified percentile bootstrap ones; temperature scaling is fitted on the validation
    predictions (applied only when it is a fit) and operating points are chosen there too.

    Args:
        run_dir: A run directory written by ``cxrlab train`` (or any folder with
            ``predictions/test.csv``, optionally ``predictions/val.csv`` and ``split.csv``).
        n_boot: Bootstrap resamples (>= 1000 for reported intervals).
        seed: Bootstrap seed.
        device: Where to predict if predictions must be computed (default: CUDA if available).
        make_figures: Draw figures (turn off for speed in bulk evaluation).
        tta: Test-time views averaged per image (:mod:`cxrlab.inference.tta`; 1 = off); the
            val and test predictions are recomputed when made with another; recorded in
            metrics.json (``tta``, ``tta_transforms``).

    Returns:
        An :class:`EvaluationResult`; files are written to ``metrics.json``, ``tables/`` and
        ``figures/`` of the run directory.
    """
    run = RunDir.open(run_dir)
    run_dir = run.path
    if n_boot < 1000:
        warnings.warn(
            f"n_boot={n_boot}: percentile intervals from fewer than 1000 resamples are unstable; "
            "use at least 1000 for reported results.",
            UserWarning,
            stacklevel=2,
        )
    from cxrlab.inference.tta import describe_tta

    transforms = describe_tta(tta)
    found = ensure_predictions(run_dir, device=device, tta=tta)
    classes = run.read_classes()
    test = load_predictions(run_dir, "test", classes)
    classes = list(test.classes)
    logger.info(
        "Evaluating %d test predictions of %s (%d bootstrap resamples)", len(test), run_dir, n_boot
    )
    result = bootstrap_metrics(
        test.y_true, test.probs, labels=classes, y_pred=test.y_pred, n_boot=n_boot, seed=seed
    )

    calibration: dict[str, Any]
    points: dict[str, Any]
    if "val" in found:
        val = load_predictions(run_dir, "val", classes)
        calibration = temperature_scaling(
            val.y_true, val.probs, test.y_true, test.probs, labels=classes
        )
        points = operating_points(val.y_true, val.probs, test.y_true, test.probs, labels=classes)
    else:
        why = "refitted on train+val, so no held-out" if run.is_refit() else "no"
        points = {
            "classes": {},
            "note": f"{why} validation predictions; thresholds are never chosen on the test set",
        }
        calibration = {
            "temperature": None,
            "note": f"{why} validation predictions; temperature scaling skipped",
            "before": calibration_summary(test.y_true, test.probs, labels=classes),
            "reliability_before": reliability_curve(test.y_true, test.probs, labels=classes),
        }
    test_set = run.fingerprint()
    metrics = {
        "cxrlab_version": __version__,
        "format": METRICS_FORMAT,
        "split": "test",
        "predictions": "predictions/test.csv",
        "classes": classes,
        "n": result["n"],
        "n_per_class": result["n_per_class"],
        "test_set": test_set,
        "test_set_hash": test_set["sha1"],
        "tta": int(tta),
        "tta_transforms": transforms,
        **ensemble_entry(run),
        **metrics_entries(result),
        "calibration": {
            **{k: v for k, v in calibration.items() if not _is_array_like(v)},
            "reliability": {
                when: calibration[f"reliability_{when}"].to_dict(orient="list")
                for when in ("before", "after")
                if f"reliability_{when}" in calibration
            },
            "reliability_empty_bins": "confidence, accuracy and gap are null in bins that hold "
            "no sample",
        },
        "operating_points": points,
        "definitions": DEFINITIONS,
    }
    files = {"metrics": write_json(run.metrics, metrics)}
    metrics = json.loads(files["metrics"].read_text())  # the result is what the file holds
    files.update(_write_tables(run_dir, metrics))
    if make_figures:
        files.update(_write_figures(run_dir, test, classes, result, calibration, points))
    probe = _probe_summary(run_dir)
    logger.info("Wrote %s and %d other files", files["metrics"], len(files) - 1)
    return EvaluationResult(
        run_dir=run_dir, classes=classes, metrics=metrics, files=files, probe=probe
    )


#: The entries of :func:`cxrlab.evaluation.bootstrap.bootstrap_metrics`'s result that metrics.json
#: holds as they are, internal and external alike.
METRICS_ENTRIES = ("bootstrap", "intervals", "metrics", "per_class", "confusion_matrix")


def ensemble_entry(run: RunDir) -> dict[str, Any]:
    """``{"ensemble": {model_name, members, shared_split}}`` for an ensemble folder, else {}."""
    from cxrlab.rundir import EnsembleDir

    if not isinstance(run, EnsembleDir):
        return {}
    manifest = run.read_manifest()
    return {
        "ensemble": {
            "model_name": manifest.get("model_name"),
            "combine": manifest.get("combine"),
            "shared_split": manifest.get("shared_split"),
            "members": [m.get("checkpoint") for m in manifest["members"]],
        }
    }


def metrics_entries(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json entries taken as they are from a ``bootstrap_metrics`` result."""
    return {key: result[key] for key in METRICS_ENTRIES}


def standard_figures(
    y_true, probs, classes: list[str], result: dict, calibration: dict, *, pr=True
):
    """The figures every evaluated set gets: confusion matrices, ROC (and PR), reliability.

    Returns:
        Figure name -> matplotlib figure (the caller saves them).
    """
    cm = result["confusion_matrix"]["counts"]
    made = {
        "confusion_matrix": figures.plot_confusion_matrix(cm, classes),
        "confusion_matrix_normalized": figures.plot_confusion_matrix(cm, classes, normalize=True),
        "roc": figures.plot_roc_curves(y_true, probs, labels=classes),
    }
    if pr:
        made["pr"] = figures.plot_pr_curves(y_true, probs, labels=classes)
    made["reliability"] = figures.plot_reliability(
        calibration["reliability_before"],
        calibration.get("reliability_after"),
        ece_before=calibration["before"]["ece"],
        ece_after=calibration.get("after", {}).get("ece"),
        temperature=calibration.get("temperature"),
    )
    return made


def _is_array_like(value: Any) -> bool:
    return isinstance(value, pd.DataFrame) or hasattr(value, "shape")


def _calibration_rows(calibration: dict[str, Any]) -> pd.DataFrame:
    rows = []
    fit = calibration.get("fit")
    if fit is not None and calibration.get("temperature") is None:
        rows.append(
            {
                "Metric": "Temperature (fitted on val, not applied)",
                "Value (95% CI)": f"{fit['temperature']:.3g} (bounds {fit['bounds'][0]:g}-"
                f"{fit['bounds'][1]:g}): {fit['reason']}",
            }
        )
    if calibration.get("temperature") is not None:
        rows.append(
            {
                "Metric": "Temperature (fitted on val)",
                "Value (95% CI)": f"{calibration['temperature']:.3f} (bounds "
                f"{fit['bounds'][0]:g}-{fit['bounds'][1]:g})",
            }
        )
        for name, label in (("ece", "ECE"), ("brier", "Brier score"), ("nll", "NLL")):
            rows.append(
                {
                    "Metric": f"{label} after temperature scaling",
                    "Value (95% CI)": tables.format_value(
                        calibration["after"][name], percent=False
                    ),
                }
            )
    return pd.DataFrame(rows, columns=["Metric", "Value (95% CI)"])


def _write_tables(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Path]:
    b = metrics["bootstrap"]
    note = (
        f"Test set: n = {metrics['n']}. 95% CIs: Clopper-Pearson for accuracy, precision, "
        f"sensitivity and specificity; {b['method']} ({b['n_boot']} resamples, seed {b['seed']}) "
        "for the others (no interval shown where every resample gave the same value). Rates in "
        "percent; macro averages are unweighted means over all classes, an undefined class "
        "counting as 0 (scikit-learn's default)."
    )
    main = pd.concat(
        [tables.metrics_table(metrics["metrics"]), _calibration_rows(metrics["calibration"])],
        ignore_index=True,
    )
    per_class = tables.per_class_table(metrics["per_class"])
    out = {}
    for name, frame, caption, label in (
        ("metrics", main, "Test-set performance with 95% confidence intervals.", "tab:metrics"),
        (
            "per_class",
            per_class,
            "Per-class test-set performance (one-vs-rest) with 95% confidence intervals.",
            "tab:per-class",
        ),
    ):
        written = tables.write_table(
            RunDir(run_dir).tables / name, frame, caption=caption, label=label, note=note
        )
        out[f"{name}_md"], out[f"{name}_tex"] = written["md"], written["tex"]
    if metrics["operating_points"]["classes"]:
        written = tables.write_table(
            RunDir(run_dir).tables / "operating_points",
            operating_points_table(metrics["operating_points"]),
            caption="Operating points one-vs-rest: thresholds chosen on the validation set, "
            "applied to the test set (95% Clopper-Pearson CIs).",
            label="tab:operating-points",
            note=f"Test set: n = {metrics['n']}. A sample is called positive when its class "
            "probability is at least the threshold.",
        )
        out["operating_points_md"], out["operating_points_tex"] = written["md"], written["tex"]
    return out


def _write_figures(
    run_dir: Path, test, classes: list[str], result: dict, calibration: dict, points: dict
) -> dict[str, Path]:
    fig_dir = RunDir(run_dir).figures
    made = standard_figures(test.y_true, test.probs, classes, result, calibration)
    if points["classes"]:
        made["operating_points"] = figures.plot_operating_points(
            test.y_true, test.probs, labels=classes, points=points
        )
    history = RunDir(run_dir).history
    if history.is_file():
        try:
            frame = pd.read_csv(history)
            fig = figures.plot_training_curves(frame, **_curve_marks(run_dir, frame))
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            logger.warning("Could not read %s (%s); no training curves", history, exc)
            fig = None
        if fig is not None:
            made["training_curves"] = fig
    out = {}
    for name, fig in made.items():
        png, pdf = figures.save_figure(fig, fig_dir / name)
        out[f"{name}_png"], out[f"{name}_pdf"] = png, pdf
    return out


def _curve_marks(run_dir: Path, history: pd.DataFrame) -> dict[str, Any]:
    """The chosen epoch and the train-loss note for the training-curve figure."""
    from cxrlab.reports.facts import chosen_epoch, train_loss_note

    run = RunDir(run_dir)
    summary = run.read_json(run.summary) if run.summary.is_file() else {}
    config = run.read_config()
    monitor = summary.get("monitor") or config.get("monitor")
    return {
        "chosen_epoch": chosen_epoch(history, monitor),
        "train_loss_note": train_loss_note(config) or None,
    }


def _probe_summary(run_dir: Path) -> dict[str, Any] | None:
    """The headline of ``probe.json`` (written by ``cxrlab probe``), or None.

    Keeps its scalar entries (``shortcut_suspected``, ``split``, ``n_images``, the plain-language
    ``summary``...), plus the clean and per-probe accuracies; nested details stay in the file.
    """
    run = RunDir(run_dir)
    if not run.probe.is_file():
        return None
    probe = run.read_json(run.probe)
    if not isinstance(probe, dict):
        return {"probe": probe}
    if isinstance(probe.get("summary"), dict):
        return probe["summary"]
    skip = {"run_dir", "cxrlab_version", "summary"}
    out = {
        k: v
        for k, v in probe.items()
        if k not in skip and (v is None or isinstance(v, (str, int, float, bool)))
    }
    if isinstance(probe.get("clean"), dict) and "accuracy" in probe["clean"]:
        out["clean_accuracy"] = probe["clean"]["accuracy"]
    for name, entry in (probe.get("probes") or {}).items():
        if isinstance(entry, dict) and "accuracy" in entry:
            out[f"{name}_accuracy"] = entry["accuracy"]
    if "summary" in probe:
        out["summary"] = probe["summary"]
    return out
