"""Evaluation: metrics with bootstrap CIs, calibration, run comparison and the CV summary.

Module map:

* :mod:`~cxrlab.evaluation.metrics`: the metric maths (weighted pure functions, sklearn-shaped).
* :mod:`~cxrlab.evaluation.bootstrap`: stratified percentile bootstrap CIs, paired differences.
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
    reliability_curve,
    temperature_scaling,
)
from cxrlab.evaluation.compare import ComparisonResult, compare_runs, mcnemar_exact
from cxrlab.evaluation.cv_summary import summarize_cv
from cxrlab.evaluation.evaluate import EvaluationResult, evaluate_run
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
from cxrlab.evaluation.predictions import Predictions, read_predictions, write_predictions

__all__ = [
    "ComparisonResult",
    "EvaluationResult",
    "Predictions",
    "UndefinedMetricWarning",
    "accuracy",
    "apply_temperature",
    "average_precision_ovr",
    "bootstrap_metrics",
    "brier_score",
    "compare_runs",
    "compute_metrics",
    "confusion_matrix",
    "evaluate_run",
    "expected_calibration_error",
    "fit_temperature",
    "mcnemar_exact",
    "negative_log_likelihood",
    "paired_bootstrap_difference",
    "precision_recall_fscore_support",
    "read_predictions",
    "reliability_curve",
    "roc_auc_ovr",
    "specificity",
    "summarize_cv",
    "temperature_scaling",
    "write_predictions",
]
