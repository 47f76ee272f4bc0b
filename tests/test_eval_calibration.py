"""Calibration: reliability curves by hand, temperature scaling on over-confident predictions."""

import numpy as np
import pytest
from scipy.special import softmax

from cxrlab.evaluation.calibration import (
    apply_temperature,
    fit_temperature,
    reliability_curve,
    temperature_scaling,
)
from cxrlab.evaluation.metrics import expected_calibration_error

LABELS = ["A", "B", "C"]


def _overconfident(rng, n, true_t=2.5):
    """Labels drawn from softmax(z) (calibrated), reported as softmax(z * true_t) (too sure)."""
    z = rng.normal(scale=1.5, size=(n, 3))
    calibrated = softmax(z, axis=1)
    y = np.array([rng.choice(3, p=p) for p in calibrated])
    return np.array(LABELS, dtype=object)[y], softmax(z * true_t, axis=1)


def test_reliability_curve_hand_computed():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    y = ["A", "B", "B", "B"]
    curve = reliability_curve(y, probs, labels=["A", "B"], n_bins=10)
    assert len(curve) == 10 and curve["count"].sum() == 4
    row9 = curve.iloc[8]  # (0.8, 0.9] holds the two 0.9s
    assert (
        row9["count"] == 2 and row9["accuracy"] == 0.5 and row9["confidence"] == pytest.approx(0.9)
    )
    row7 = curve.iloc[6]  # (0.6, 0.7]
    assert row7["count"] == 2 and row7["accuracy"] == 1.0 and row7["gap"] == pytest.approx(0.3)
    assert np.isnan(curve.iloc[0]["accuracy"])  # empty bins are nan, not 0


def test_temperature_one_is_identity_and_argmax_is_kept():
    rng = np.random.default_rng(0)
    _, probs = _overconfident(rng, 50)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    hot = apply_temperature(probs, 3.0)
    np.testing.assert_array_equal(hot.argmax(1), probs.argmax(1))
    np.testing.assert_allclose(hot.sum(1), 1.0)
    assert (hot.max(1) <= probs.max(1) + 1e-12).all()  # T > 1 softens
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(probs, 0.0)


def test_fit_temperature_recovers_the_planted_temperature():
    rng = np.random.default_rng(1)
    y, probs = _overconfident(rng, 4000, true_t=2.5)
    assert fit_temperature(y, probs, labels=LABELS) == pytest.approx(2.5, rel=0.1)


def test_fit_on_logits_matches_fit_on_probabilities():
    rng = np.random.default_rng(2)
    y, probs = _overconfident(rng, 300)
    z = np.log(probs) + 7.0  # logits are defined up to a constant per row
    from_logits = fit_temperature(y, z, labels=LABELS, from_logits=True)
    assert fit_temperature(y, probs, labels=LABELS) == pytest.approx(from_logits, rel=1e-4)


def test_temperature_scaling_lowers_ece_on_overconfident_predictions():
    rng = np.random.default_rng(3)
    y_val, p_val = _overconfident(rng, 2000)
    y_test, p_test = _overconfident(rng, 2000)
    out = temperature_scaling(y_val, p_val, y_test, p_test, labels=LABELS)
    assert out["temperature"] > 1.5
    assert out["after"]["ece"] < 0.5 * out["before"]["ece"]
    assert out["after"]["nll"] < out["before"]["nll"]
    assert out["after"]["brier"] < out["before"]["brier"]
    assert out["before"]["ece"] == pytest.approx(
        expected_calibration_error(y_test, p_test, labels=LABELS)
    )
    assert out["n_val"] == 2000 and out["fitted_on"] == "val"
    assert out["reliability_after"]["count"].sum() == 2000


def test_degenerate_validation_set_warns():
    y = ["A", "B"]
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # perfect, infinitely confident
    with pytest.warns(UserWarning, match="not reliable: the validation NLL is ~0"):
        fit_temperature(y, probs, labels=LABELS)
    noise = np.random.default_rng(0).dirichlet([1, 1, 1], size=300)
    labels = np.array(LABELS, dtype=object)[np.random.default_rng(1).integers(0, 3, 300)]
    with pytest.warns(UserWarning, match="search bound"):  # scores unrelated to the labels
        fit_temperature(labels, noise, labels=LABELS)
