"""Coverage of cxrlab's 95% intervals over simulated test sets (vectorised, seconds).

Proportions (Clopper-Pearson) are checked on 2000 simulated sets per case, including a
sensitivity of 0.98 with n = 50 and classes of n = 20; the bootstrap (macro F1 of three classes
of 20: 200 sets; ROC AUC of a class of 20 positives against 80: 600 sets), 500 resamples each. Every
case must cover the true value in at least 93% of the sets.
"""

import numpy as np
import pytest
from scipy.stats import norm

from cxrlab.evaluation.bootstrap import (
    bca_interval,
    bootstrap_samples,
    jackknife_values,
    percentile_interval,
)
from cxrlab.evaluation.intervals import clopper_pearson, proportion_interval
from cxrlab.evaluation.metrics import compute_metrics_codes, ranking_from_codes

N_SETS = 2000
N_BOOT_SETS = 200
N_AUC_SETS = 600  # AUC coverage of the two methods differs by ~2 points: more sets to see it
N_BOOT = 500


@pytest.mark.parametrize(
    ("p", "n"),
    [
        (0.98, 50),  # sensitivity near 1
        (0.85, 20),  # small class
        (0.50, 20),
        (0.95, 20),
        (0.70, 100),  # accuracy-like
        (0.02, 50),  # near 0
        (0.995, 200),
    ],
)
def test_clopper_pearson_coverage(p, n):
    rng = np.random.default_rng(int(p * 1000) + n)
    x = rng.binomial(n, p, size=N_SETS)
    low, high = clopper_pearson(x, n)
    coverage = np.mean((low <= p) & (p <= high))
    assert coverage >= 0.93, (p, n, coverage)
    assert np.all(high > low)  # never zero width, also at 0/n and n/n


def test_boundary_proportions_are_not_zero_width():
    low, high = proportion_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(0.8316, abs=1e-4)  # (alpha/2)^(1/n)
    low, high = proportion_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 20))
    assert proportion_interval(0, 0) != proportion_interval(0, 0)  # (nan, nan)


def test_wilson_would_undercover_the_near_one_case():
    # Why Clopper-Pearson: the exact coverage of the Wilson interval at p = 0.98, n = 50.
    from scipy.stats import binom

    z, n, p = norm.ppf(0.975), 50, 0.98
    x = np.arange(n + 1)
    ph = x / n
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    wilson = binom.pmf(x, n, p)[(centre - half <= p) & (p <= centre + half)].sum()
    low, high = clopper_pearson(x, n)
    exact = binom.pmf(x, n, p)[(low <= p) & (p <= high)].sum()
    assert wilson < 0.93 <= exact


def _coverage(truth, sets):
    hits = [low <= truth <= high for low, high in sets]
    return float(np.mean(hits))


def test_bootstrap_coverage_macro_f1_small_classes():
    confusion = np.array([[0.8, 0.15, 0.05], [0.1, 0.85, 0.05], [0.15, 0.15, 0.7]])
    counts = np.array([20, 20, 20])
    expected = counts[:, None] * confusion
    tp = np.diag(expected)
    truth = np.mean(2 * tp / (expected.sum(0) + expected.sum(1)))
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(3), counts)
    sets = []
    for i in range(N_BOOT_SETS):
        p = np.array([rng.choice(3, p=confusion[c]) for c in t])

        def fn(w, p=p):
            return {"f1": compute_metrics_codes(t, p, None, w, k=3)["macro_f1"]}

        samples = bootstrap_samples(fn, t, n_boot=N_BOOT, seed=i)["f1"]
        point = fn(np.ones((1, len(t))))["f1"][0]
        sets.append(bca_interval(samples, point, jackknife_values(fn, len(t))["f1"]))
    assert _coverage(truth, sets) >= 0.93


def test_bootstrap_coverage_auc_small_class():
    d = 1.5
    truth = norm.cdf(d / np.sqrt(2))  # binormal AUC
    rng = np.random.default_rng(1)
    t = np.repeat([1, 0], [20, 80])
    sets, percentile = [], []
    for i in range(N_AUC_SETS):
        score = rng.normal(size=100) + d * (t == 1)
        scores = np.c_[-score, score]

        def fn(w, scores=scores):
            return {"auc": ranking_from_codes(t, scores, w)["roc_auc"][:, 1]}

        samples = bootstrap_samples(fn, t, n_boot=N_BOOT, seed=i)["auc"]
        point = fn(np.ones((1, len(t))))["auc"][0]
        sets.append(bca_interval(samples, point, jackknife_values(fn, len(t))["auc"]))
        percentile.append(percentile_interval(samples))
    assert _coverage(truth, sets) >= 0.93
    assert _coverage(truth, percentile) < _coverage(truth, sets)  # why BCa
