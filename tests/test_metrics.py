"""Metric maths: hand-computed cases (degenerate ones included) and agreement with scikit-learn."""

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from cxrlab.evaluation import metrics as M
from cxrlab.evaluation.metrics import UndefinedMetricWarning

LABELS = ["A", "B", "C"]
# Confusion matrix (rows true, columns predicted):
#   A: [2, 1, 0]   B: [0, 1, 1]   C: [0, 0, 1]
Y_TRUE = ["A", "A", "A", "B", "B", "C"]
Y_PRED = ["A", "A", "B", "B", "C", "C"]


def test_confusion_matrix_hand_computed():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, labels=LABELS)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.dtype == np.int64


def test_per_class_and_averages_hand_computed():
    p, r, f, s = M.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=LABELS)
    np.testing.assert_allclose(p, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(r, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(f, [0.8, 0.5, 2 / 3])  # 2TP / (2TP + FP + FN)
    assert s.tolist() == [3, 2, 1]
    # specificity TN / (TN + FP): A 3/3, B 3/4, C 4/5
    np.testing.assert_allclose(M.specificity(Y_TRUE, Y_PRED, labels=LABELS), [1.0, 0.75, 0.8])
    assert M.specificity(Y_TRUE, Y_PRED, labels=LABELS, average="macro") == pytest.approx(
        (1 + 0.75 + 0.8) / 3
    )
    assert M.accuracy(Y_TRUE, Y_PRED, labels=LABELS) == pytest.approx(4 / 6)
    mp, mr, mf, _ = M.precision_recall_fscore_support(
        Y_TRUE, Y_PRED, labels=LABELS, average="macro"
    )
    assert (mp, mr, mf) == pytest.approx((2 / 3, 13 / 18, 59 / 90))
    wp, wr, wf, _ = M.precision_recall_fscore_support(
        Y_TRUE, Y_PRED, labels=LABELS, average="weighted"
    )
    assert (wp, wr, wf) == pytest.approx((4.5 / 6, 4 / 6, (3 * 0.8 + 2 * 0.5 + 2 / 3) / 6))


def test_macro_f1_is_mean_of_per_class_f1_like_the_seed():
    # The seed reported sklearn macro averages: macro F1 = mean of per-class F1 (59/90), not the
    # harmonic mean of macro precision and macro recall.
    mp, mr, mf, _ = M.precision_recall_fscore_support(
        Y_TRUE, Y_PRED, labels=LABELS, average="macro"
    )
    assert mf == pytest.approx(59 / 90)
    assert abs(mf - 2 * mp * mr / (mp + mr)) > 0.03


def test_absent_class_gives_nan_warning_and_full_matrix():
    labels = LABELS + ["D"]
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, labels=labels)
    assert cm.shape == (4, 4) and cm[3].sum() == 0 and cm[:, 3].sum() == 0
    with pytest.warns(UndefinedMetricWarning, match=r"recall is undefined for class\(es\) \['D'\]"):
        p, r, f, s = M.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=labels)
    assert math.isnan(p[3]) and math.isnan(r[3]) and math.isnan(f[3]) and s[3] == 0
    with pytest.warns(UndefinedMetricWarning, match="count as 0 in the macro"):
        macro = M.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=labels, average="macro")
    # undefined classes count as 0 over all 4 labels, exactly like sklearn's default
    assert macro[:3] == pytest.approx((2 / 4, 13 / 24, 59 / 120))
    with pytest.warns(skm_warning()):
        sk = skm.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=labels, average="macro")
    assert macro[:3] == pytest.approx(sk[:3])
    # per class: undefined (nan), as sklearn with zero_division=nan
    sk_nan = skm.precision_recall_fscore_support(
        Y_TRUE, Y_PRED, labels=labels, zero_division=np.nan
    )
    np.testing.assert_allclose(p, sk_nan[0])
    np.testing.assert_allclose(r, sk_nan[1])


def test_single_class_predicted():
    y_pred = ["A"] * 6
    with pytest.warns(UndefinedMetricWarning, match="precision is undefined"):
        p, r, f, _ = M.precision_recall_fscore_support(Y_TRUE, y_pred, labels=LABELS)
    assert p[0] == pytest.approx(0.5) and math.isnan(p[1]) and math.isnan(p[2])
    assert r.tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(f, [2 / 3, 0.0, 0.0])  # F1 = 0 where the class exists but is missed
    # everything predicted A: A's specificity is 0/3, B's and C's are 1
    np.testing.assert_allclose(M.specificity(Y_TRUE, y_pred, labels=LABELS), [0.0, 1.0, 1.0])
    assert M.accuracy(Y_TRUE, y_pred) == 0.5
    with pytest.warns(UndefinedMetricWarning, match=r"\['B', 'C'\]"):
        ours = M.precision_recall_fscore_support(Y_TRUE, y_pred, labels=LABELS, average="macro")
    with pytest.warns(skm_warning()):
        sk = skm.precision_recall_fscore_support(Y_TRUE, y_pred, labels=LABELS, average="macro")
    assert ours[:3] == pytest.approx(sk[:3])
    assert ours[0] == pytest.approx(0.5 / 3)  # (0.5 + 0 + 0) / 3


def skm_warning():
    from sklearn.exceptions import UndefinedMetricWarning as SkWarning

    return SkWarning


def test_always_covid_model_gives_macro_precision_11_percent():
    # The example: a model that predicts COVID for every image of a balanced 3-class
    # test set. Leaving undefined precisions out gave 33.3%; scikit-learn's default gives 11.1%.
    classes = ["COVID", "Normal", "Viral Pneumonia"]
    y_true = [c for c in classes for _ in range(20)]
    y_pred = ["COVID"] * 60
    with pytest.warns(UndefinedMetricWarning, match=r"\['Normal', 'Viral Pneumonia'\]"):
        out = M.compute_metrics(y_true, y_pred=y_pred, labels=classes)
    assert out["macro_precision"] == pytest.approx(1 / 9)  # (1/3 + 0 + 0) / 3 = 11.1%
    assert round(100 * out["macro_precision"], 1) == 11.1
    assert out["macro_recall"] == pytest.approx(1 / 3)
    assert out["macro_f1"] == pytest.approx(0.5 / 3)  # F1(COVID) = 2/3*... = 0.5
    with pytest.warns(skm_warning()):
        sk = skm.precision_recall_fscore_support(y_true, y_pred, labels=classes, average="macro")
    assert (out["macro_precision"], out["macro_recall"], out["macro_f1"]) == pytest.approx(sk[:3])
    assert math.isnan(out["precision"][1]) and math.isnan(out["precision"][2])


def test_seed_like_case_agrees_with_sklearn_default():
    # Imbalanced 3 classes like the seed's test set, one small class rarely predicted.
    rng = np.random.default_rng(11)
    y = np.repeat([0, 1, 2], [120, 400, 40])
    confusion = np.array([[0.7, 0.25, 0.05], [0.1, 0.85, 0.05], [0.2, 0.7, 0.1]])
    pred = np.array([rng.choice(3, p=confusion[t]) for t in y])
    out = M.compute_metrics(y, y_pred=pred, labels=[0, 1, 2])
    for avg in ("macro", "weighted"):
        sk = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2], average=avg)
        assert (out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"]) == pytest.approx(
            sk[:3]
        )


@pytest.mark.parametrize("seed", range(6))
def test_random_degenerate_cases_agree_with_sklearn_default(seed):
    # Few samples, many classes: classes absent and never predicted happen often.
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 8)
    pred = rng.integers(0, 2, 8)
    labels = [0, 1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = M.compute_metrics(y, y_pred=pred, labels=labels)
        for avg in ("macro", "weighted"):
            sk = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg)
            assert (
                out[f"{avg}_precision"],
                out[f"{avg}_recall"],
                out[f"{avg}_f1"],
            ) == pytest.approx(sk[:3], nan_ok=True)


def test_specificity_undefined_when_every_sample_is_the_class():
    with pytest.warns(
        UndefinedMetricWarning, match="specificity is undefined for class\\(es\\) \\['A'\\]"
    ):
        spec = M.specificity(["A", "A"], ["A", "B"], labels=["A", "B"])
    assert math.isnan(spec[0]) and spec[1] == 0.5


def test_unknown_label_is_a_clear_error():
    with pytest.raises(ValueError, match=r"label\(s\) \['Z'\] that are not in labels"):
        M.confusion_matrix(["A", "Z"], ["A", "A"], labels=["A", "B"])


def test_roc_auc_hand_computed_with_ties():
    y = [1, 1, 0, 0]
    two = lambda s: np.c_[1 - np.asarray(s), s]  # noqa: E731  (class 1's score in column 1)
    # pairs (pos, neg): (.9,.5) (.9,.1) (.4,.5) (.4,.1) -> 3 of 4 ordered correctly
    auc = M.roc_auc_ovr(y, two([0.9, 0.4, 0.5, 0.1]), labels=[0, 1], average=None)
    np.testing.assert_allclose(auc, [0.75, 0.75])
    # a tie between a positive and a negative counts one half: (1 + .5 + 0 + 1) / 4
    auc = M.roc_auc_ovr(y, two([0.5, 0.4, 0.5, 0.1]), labels=[0, 1], average=None)
    assert auc[1] == pytest.approx(2.5 / 4)


def test_average_precision_hand_computed():
    y = [1, 0, 1, 0]
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # ranked: +, -, +, - -> precision at each positive: 1, 2/3 -> AP = (1 + 2/3) / 2
    ap = M.average_precision_ovr(y, np.c_[1 - s, s], labels=[0, 1], average=None)
    assert ap[1] == pytest.approx((1 + 2 / 3) / 2)


def test_ranking_metrics_nan_for_absent_class():
    y = ["A", "B", "A", "B"]
    scores = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    with pytest.warns(
        UndefinedMetricWarning, match="roc_auc is undefined for class\\(es\\) \\['C'\\]"
    ):
        auc = M.roc_auc_ovr(y, scores, labels=LABELS, average=None)
    assert auc[:2].tolist() == [1.0, 1.0] and math.isnan(auc[2])
    with pytest.warns(UndefinedMetricWarning):
        assert M.roc_auc_ovr(y, scores, labels=LABELS) == 1.0


# Four two-class samples: (probabilities, truth) -> confidence, correct
#   [.9 .1] A -> .9 correct     [.9 .1] B -> .9 wrong
#   [.3 .7] B -> .7 correct     [.3 .7] B -> .7 correct
CAL_P = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
CAL_Y = ["A", "B", "B", "B"]


def test_ece_brier_nll_hand_computed():
    # bin of .9: accuracy .5 vs confidence .9 (weight 2/4); bin of .7: 1 vs .7 (weight 2/4)
    assert M.expected_calibration_error(CAL_Y, CAL_P, labels=["A", "B"]) == pytest.approx(
        0.5 * 0.4 + 0.5 * 0.3
    )
    # squared errors per sample: .02, 1.62, .18, .18
    assert M.brier_score(CAL_Y, CAL_P, labels=["A", "B"]) == pytest.approx(2.0 / 4)
    nll = -(math.log(0.9) + math.log(0.1) + 2 * math.log(0.7)) / 4
    assert M.negative_log_likelihood(CAL_Y, CAL_P, labels=["A", "B"]) == pytest.approx(nll)
    assert nll == pytest.approx(skm.log_loss(CAL_Y, CAL_P, labels=["A", "B"]))


def test_ece_one_bin_equals_accuracy_gap():
    # with a single bin ECE is |accuracy - mean confidence| = |.75 - .8|
    assert M.expected_calibration_error(CAL_Y, CAL_P, labels=["A", "B"], n_bins=1) == pytest.approx(
        0.05
    )


def _random_case(seed, n=300, k=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.0
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p = np.round(p, 2)  # create ties
    p /= p.sum(1, keepdims=True)
    return y, p, rng.integers(0, 4, n).astype(float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_weighted_and_unweighted(seed):
    y, p, w = _random_case(seed)
    labels = list(range(4))
    pred = p.argmax(1)
    for weight in (None, w):
        out = M.compute_metrics(y, p, labels=labels, sample_weight=weight)
        assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=weight))
        for avg in ("macro", "weighted"):
            sk = skm.precision_recall_fscore_support(
                y, pred, labels=labels, average=avg, sample_weight=weight
            )
            assert (
                out[f"{avg}_precision"],
                out[f"{avg}_recall"],
                out[f"{avg}_f1"],
            ) == pytest.approx(sk[:3])
        for j in labels:
            assert out["roc_auc"][j] == pytest.approx(
                skm.roc_auc_score(y == j, p[:, j], sample_weight=weight)
            )
            assert out["average_precision"][j] == pytest.approx(
                skm.average_precision_score(y == j, p[:, j], sample_weight=weight)
            )
        assert out["nll"] == pytest.approx(skm.log_loss(y, p, labels=labels, sample_weight=weight))
        np.testing.assert_allclose(
            out["confusion_matrix"],
            skm.confusion_matrix(y, pred, labels=labels, sample_weight=weight),
        )
    macro_auc = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert M.compute_metrics(y, p, labels=labels)["macro_roc_auc"] == pytest.approx(macro_auc)


def test_integer_weights_equal_repeated_rows():
    y, p, w = _random_case(5, n=60)
    w = w.astype(int)
    rep = np.repeat(np.arange(len(y)), w)
    a = M.compute_metrics(y, p, labels=range(4), sample_weight=w)
    b = M.compute_metrics(y[rep], p[rep], labels=range(4))
    for name in M.SCALAR_METRICS:
        assert a[name] == pytest.approx(b[name]), name


def test_batched_weights_match_one_at_a_time():
    y, p, _ = _random_case(7, n=80)
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, (5, len(y))).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # batched calls never warn
        batched = M.compute_metrics(y, p, labels=range(4), sample_weight=weights, warn=False)
    for b in range(5):
        one = M.compute_metrics(y, p, labels=range(4), sample_weight=weights[b], warn=False)
        for name in M.SCALAR_METRICS:
            assert batched[name][b] == pytest.approx(one[name], nan_ok=True), name
        np.testing.assert_allclose(batched["roc_auc"][b], one["roc_auc"])


def test_y_pred_defaults_to_argmax_and_shape_is_checked():
    y, p, _ = _random_case(3, n=20)
    assert M.compute_metrics(y, p, labels=range(4))["accuracy"] == pytest.approx(
        np.mean(p.argmax(1) == y)
    )
    with pytest.raises(ValueError, match="shape"):
        M.compute_metrics(y, p[:, :3], labels=range(4))
