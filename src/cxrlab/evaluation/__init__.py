"""Evaluation: metrics with bootstrap CIs, calibration, run comparison and the CV summary.

Module map:

* :mod:`~cxrlab.evaluation.metrics`: the metric maths (weighted pure functions, sklearn-shaped).
* :mod:`~cxrlab.evaluation.intervals`: one interval method per metric (Clopper-Pearson for
  proportions, else bootstrap); :func:`proportion_interval` is the one proportion interval.
* :mod:`~cxrlab.evaluation.bootstrap`: stratified BCa bootstrap CIs, paired differences.
* :mod:`~cxrlab.evaluation.delong`: DeLong's paired ROC AUC test (per class and macro).
* :mod:`~cxrlab.evaluation.operating_points`: thresholds chosen on val, applied to test.
* :mod:`~cxrlab.evaluation.calibration`: reliability curves, temperature scaling.
* :mod:`~cxrlab.evaluation.predictions`: reading/validating/writing ``predictions/<split>.csv``.
* :mod:`~cxrlab.evaluation.evaluate`: :func:`evaluate_run` on a run directory.
* :mod:`~cxrlab.evaluation.compare`: :func:`compare_runs` (McNemar, paired bootstrap).
* :mod:`~cxrlab.evaluation.cv_summary`: :func:`summarize_cv` of a cross-validation's runs.

Tables and figures of these results are in :mod:`cxrlab.reports`; training the runs of a
cross-validation is :func:`cxrlab.training.cv.run_cv`.
"""

from cxrlab.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap_difference
from cxrlab.evaluation.calibration import (
    apply_temperature,
    fit_temperature,
    fit_temperature_report,
    reliability_curve,
    temperature_scaling,
)
from cxrlab.evaluation.compare import ComparisonResult, compare_runs, mcnemar_exact
from cxrlab.evaluation.cv_summary import summarize_cv
from cxrlab.evaluation.delong import delong_ovr, delong_test
from cxrlab.evaluation.evaluate import EvaluationResult, evaluate_run
from cxrlab.evaluation.intervals import clopper_pearson, proportion_interval
from cxrlab.evaluation.metrics import (
    UndefinedMetricWarning,
    accuracy,
    average_precision_ovr,
    brier_score,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    negative_log_likelihood,
    precision_recall_fscore_support,
    roc_auc_ovr,
    specificity,
)
from cxrlab.evaluation.operating_points import apply_operating_points, operating_points
from cxrlab.evaluation.predictions import Predictions, read_predictions, write_predictions

__all__ = [
    "ComparisonResult",
    "EvaluationResult",
    "Predictions",
    "UndefinedMetricWarning",
    "accuracy",
    "apply_operating_points",
    "apply_temperature",
    "average_precision_ovr",
    "bootstrap_metrics",
    "brier_score",
    "clopper_pearson",
    "compare_runs",
    "compute_metrics",
    "confusion_matrix",
    "delong_ovr",
    "delong_test",
    "evaluate_run",
    "expected_calibration_error",
    "fit_temperature",
    "fit_temperature_report",
    "mcnemar_exact",
    "negative_log_likelihood",
    "operating_points",
    "paired_bootstrap_difference",
    "precision_recall_fscore_support",
    "proportion_interval",
    "read_predictions",
    "reliability_curve",
    "roc_auc_ovr",
    "specificity",
    "summarize_cv",
    "temperature_scaling",
    "write_predictions",
]
