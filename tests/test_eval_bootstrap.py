"""Stratified bootstrap: coverage against a known binomial, stratification, groups, pairing."""

import numpy as np
import pytest

from cxrlab.evaluation.bootstrap import (
    bootstrap_metrics,
    iter_stratified_weights,
    paired_bootstrap_difference,
    percentile_interval,
)
from cxrlab.evaluation.metrics import PER_CLASS_METRICS, SCALAR_METRICS

LABELS = ["neg", "pos"]


def _simulated_test_set(rng, n=200, acc=0.8):
    """Two balanced classes; each prediction is correct with probability ``acc``."""
    y = np.repeat([0, 1], n // 2)
    correct = rng.random(n) < acc
    pred = np.where(correct, y, 1 - y)
    conf = rng.uniform(0.55, 0.95, n)
    probs = np.where(pred[:, None] == np.arange(2), conf[:, None], 1 - conf[:, None])
    return np.array(LABELS, dtype=object)[y], probs


def test_percentile_ci_covers_true_accuracy_about_95_percent():
    rng = np.random.default_rng(12345)
    covered = 0
    trials = 200
    for i in range(trials):
        y, probs = _simulated_test_set(rng)
        ci = bootstrap_metrics(y, probs, labels=LABELS, n_boot=300, seed=i)["metrics"]["accuracy"]
        covered += ci["ci_low"] <= 0.8 <= ci["ci_high"]
    assert 0.88 <= covered / trials <= 0.99


def test_result_structure_and_determinism():
    rng = np.random.default_rng(0)
    y, probs = _simulated_test_set(rng, n=100)
    a = bootstrap_metrics(y, probs, labels=LABELS, n_boot=200, seed=7)
    b = bootstrap_metrics(y, probs, labels=LABELS, n_boot=200, seed=7)
    c = bootstrap_metrics(y, probs, labels=LABELS, n_boot=200, seed=8)
    assert a == b
    assert a["metrics"]["accuracy"] == c["metrics"]["accuracy"]  # Clopper-Pearson: no resampling
    assert a["metrics"]["macro_f1"] != c["metrics"]["macro_f1"]  # bootstrap: the seed matters
    assert a["bootstrap"] == {
        "method": "stratified BCa bootstrap",
        "n_boot": 200,
        "seed": 7,
        "confidence": 0.95,
    }
    assert set(a["metrics"]) == set(SCALAR_METRICS)
    assert a["n"] == 100 and a["n_per_class"] == {"neg": 50, "pos": 50}
    methods = a["intervals"]["metrics"]
    assert methods["accuracy"] == "clopper-pearson" and methods["macro_f1"] == "bootstrap"
    for name, entry in a["metrics"].items():
        assert set(entry) >= {"value", "ci_low", "ci_high", "method"}
        assert entry["method"] == methods[name], name
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], name
    for cls in LABELS:
        assert set(a["per_class"][cls]) == set(PER_CLASS_METRICS) | {"support"}
    assert np.array(a["confusion_matrix"]["counts"]).sum() == 100


def test_resamples_are_stratified_by_class():
    strata = np.array([0] * 7 + [1] * 3 + [2] * 1)
    rng = np.random.default_rng(0)
    chunks = list(iter_stratified_weights(strata, n_boot=50, rng=rng))
    w = np.concatenate(chunks)
    assert w.shape == (50, 11)
    np.testing.assert_array_equal(w[:, :7].sum(1), 7)
    np.testing.assert_array_equal(w[:, 7:10].sum(1), 3)
    np.testing.assert_array_equal(w[:, 10], 1)  # a class of one sample is always drawn once
    assert w[:, :7].std() > 0


def test_groups_are_drawn_whole():
    # two images of class 0 and one of class 1, each predicted twice (two seeds)
    strata = np.array([0, 0, 0, 0, 1, 1])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    w = np.concatenate(
        list(
            iter_stratified_weights(strata, n_boot=40, rng=np.random.default_rng(1), groups=groups)
        )
    )
    np.testing.assert_array_equal(w[:, 0], w[:, 1])
    np.testing.assert_array_equal(w[:, 2], w[:, 3])
    np.testing.assert_array_equal(w[:, 0] + w[:, 2], 2)  # two class-0 images drawn per resample
    with pytest.raises(ValueError, match="same true class"):
        next(
            iter_stratified_weights(
                np.array([0, 1]),
                n_boot=1,
                rng=np.random.default_rng(0),
                groups=np.array(["a", "a"]),
            )
        )


def test_percentile_interval_ignores_undefined_resamples():
    samples = np.array([np.nan, 1.0, 2.0, 3.0, 4.0, 5.0])
    low, high = percentile_interval(samples, 0.5)
    assert (low, high) == pytest.approx((2.0, 4.0))


def test_paired_difference_of_identical_runs_is_exactly_zero():
    rng = np.random.default_rng(3)
    y, probs = _simulated_test_set(rng, n=120)
    diff = paired_bootstrap_difference(y, probs, probs, labels=LABELS, n_boot=100, seed=0)
    assert diff["accuracy"] == {
        "value": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        "method": "bootstrap",
    }


def test_paired_difference_value_and_sign():
    rng = np.random.default_rng(4)
    y, probs_a = _simulated_test_set(rng, n=200, acc=0.9)
    _, probs_b = _simulated_test_set(rng, n=200, acc=0.6)
    a = bootstrap_metrics(y, probs_a, labels=LABELS, n_boot=10)["metrics"]
    b = bootstrap_metrics(y, probs_b, labels=LABELS, n_boot=10)["metrics"]
    diff = paired_bootstrap_difference(y, probs_a, probs_b, labels=LABELS, n_boot=300, seed=0)
    for m in ("accuracy", "macro_f1"):
        assert diff[m]["value"] == pytest.approx(a[m]["value"] - b[m]["value"])
        assert 0 < diff[m]["ci_low"] < diff[m]["value"] < diff[m]["ci_high"]
    with pytest.raises(ValueError, match="Unknown metric"):
        paired_bootstrap_difference(y, probs_a, probs_b, labels=LABELS, metrics=("acc",), n_boot=5)


def test_invalid_settings():
    y, probs = _simulated_test_set(np.random.default_rng(0), n=10)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_metrics(y, probs, labels=LABELS, n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_metrics(y, probs, labels=LABELS, confidence=95)
