"""DeLong's paired AUC test: hand-computed placements, brute force, R pROC's reference values."""

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from cxrlab.evaluation.delong import delong_covariance, delong_ovr, delong_test

# pROC's aSAH data set (Turck et al. 2010, Intensive Care Med 36:107-115; shipped with R's pROC):
# 113 patients, outcome Poor = 1 (41), s100b (a biomarker) and wfns (a 1-5 clinical grade, ties).
ASAH_POOR = [
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0,
    0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0,
    0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0,
    0,
]  # fmt: skip
ASAH_S100B = [
    0.13, 0.14, 0.1, 0.04, 0.13, 0.1, 0.47, 0.16, 0.18, 0.1, 0.12, 0.1, 0.44, 0.71,
    0.04, 0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11,
    0.13, 0.19, 0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.5, 0.46,
    0.16, 0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.1,
    0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.3, 0.03, 0.09, 0.04, 0.23, 0.7, 0.09,
    0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.1, 0.08, 0.11, 0.33, 0.11, 0.28,
    0.07, 0.1, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.1, 0.15, 0.08, 0.14, 0.1, 0.07,
    0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.5,
    0.48,
]  # fmt: skip
ASAH_WFNS = [
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2,
    1, 1, 3, 4, 2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1,
    2, 2, 2, 1, 5, 1, 1, 2, 5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4,
    2, 1, 4, 5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1,
    1,
]  # fmt: skip
# Reference values from R's pROC, quoted from its own test suite (xrobin/pROC,
# tests/testthat/test-roc.test.R and test-cov.R):
#   roc.test(r.wfns, r.s100b)  ->  Z = 2.20898359144091, p = 0.0271757822291882
#   cov(r.s100b, r.wfns)       ->  0.00119615567376754
# and pROC's documentation of roc.test: AUC(s100b) = 0.7314, AUC(wfns) = 0.8237.
PROC_Z_WFNS_VS_S100B = 2.20898359144091
PROC_P = 0.0271757822291882
PROC_COV = 0.00119615567376754


def test_delong_reproduces_r_proc_on_asah():
    y = np.array(ASAH_POOR, dtype=bool)
    assert (len(y), int(y.sum())) == (113, 41)
    auc, cov = delong_covariance(y, np.vstack([ASAH_S100B, ASAH_WFNS]))
    assert auc == pytest.approx([0.7313686, 0.8236789], abs=5e-8)
    assert cov[0, 1] == pytest.approx(PROC_COV, rel=1e-9)
    out = delong_test(y, np.array(ASAH_WFNS, float), np.array(ASAH_S100B))
    assert out["z"] == pytest.approx(PROC_Z_WFNS_VS_S100B, rel=1e-9)
    assert out["p_value"] == pytest.approx(PROC_P, rel=1e-9)
    assert out["ci_low"] < out["difference"] < out["ci_high"]


def test_placements_hand_computed():
    # positives .9, .4; negatives .6, .1 -> V10 = [1, .5], V01 = [.5, 1], AUC = .75,
    # var = var(V10)/m + var(V01)/n = .125/2 + .125/2 = .125 (ddof 1)
    auc, cov = delong_covariance([1, 1, 0, 0], [[0.9, 0.4, 0.6, 0.1]])
    assert auc[0] == pytest.approx(0.75) and cov[0, 0] == pytest.approx(0.125)
    identical = delong_test([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], [0.9, 0.4, 0.6, 0.1])
    assert identical["p_value"] == 1.0 and identical["difference"] == 0.0


def _brute_force(y, preds):
    pos, neg = preds[:, y], preds[:, ~y]
    v10, v01 = [], []
    for a, b in zip(pos, neg, strict=True):
        psi = (a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])
        v10.append(psi.mean(1))
        v01.append(psi.mean(0))
    v10, v01 = np.array(v10), np.array(v01)
    return v10.mean(1), np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_with_ties_and_sklearn_auc(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(150) < 0.3
    a = np.round(y + rng.normal(size=150), 1)
    b = np.round(0.5 * a + rng.normal(size=150), 1)
    auc, cov = delong_covariance(y, np.vstack([a, b]))
    ref_auc, ref_cov = _brute_force(y, np.vstack([a, b]))
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10)
    assert auc[0] == pytest.approx(roc_auc_score(y, a))


def test_ovr_per_class_equals_binary_and_macro_is_consistent():
    rng = np.random.default_rng(2)
    labels = ["COVID", "Normal", "Viral Pneumonia"]
    t = rng.integers(0, 3, 240)
    za, zb = rng.normal(size=(240, 3)), rng.normal(size=(240, 3))
    za[np.arange(240), t] += 2.0
    zb[np.arange(240), t] += 1.0
    pa = np.exp(za) / np.exp(za).sum(1, keepdims=True)
    pb = np.exp(zb) / np.exp(zb).sum(1, keepdims=True)
    y = np.array(labels, dtype=object)[t]
    out = delong_ovr(y, pa, pb, labels=labels)
    for j, c in enumerate(labels):
        binary = delong_test(t == j, pa[:, j], pb[:, j])
        assert out["per_class"][c]["p_value"] == pytest.approx(binary["p_value"])
        assert out["per_class"][c]["auc_a"] == pytest.approx(roc_auc_score(t == j, pa[:, j]))
    macro = out["macro"]
    assert macro["difference"] == pytest.approx(
        np.mean([out["per_class"][c]["difference"] for c in labels])
    )
    assert macro["p_value"] < 0.05 and macro["difference"] > 0  # A is clearly better
    assert macro["p_value"] == pytest.approx(2 * norm.sf(abs(macro["z"])))
    assert math.isfinite(macro["se"]) and macro["se"] > 0


def test_refuses_too_few_positives():
    with pytest.raises(ValueError, match="2 positives"):
        delong_test([1, 0, 0], [0.2, 0.1, 0.3], [0.1, 0.2, 0.3])
    out = delong_ovr(
        ["A", "A", "B", "B", "A"],
        np.eye(3)[[0, 0, 1, 1, 0]],
        np.eye(3)[[0, 1, 1, 1, 0]],
        labels=["A", "B", "C"],
    )
    assert "undefined" in out["per_class"]["C"] and out["macro"]["n_classes"] == 2
