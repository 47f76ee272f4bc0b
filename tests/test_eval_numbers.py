"""Numbers that survive review: strict JSON everywhere, the always-COVID model, temperature fits
that are not fits, operating points chosen on val and applied to test."""

import json

import numpy as np
import pandas as pd
import pytest

from cxrlab.evaluation import evaluate_run
from cxrlab.evaluation.calibration import T_BOUNDS, temperature_scaling
from cxrlab.evaluation.compare import compare_runs
from cxrlab.evaluation.cv_summary import summarize_cv, write_cv_summary
from cxrlab.evaluation.operating_points import (
    apply_operating_points,
    binary_summary,
    choose_thresholds,
    operating_points,
)
from cxrlab.io import write_json

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _reject(constant):
    raise ValueError(f"not strict JSON: {constant}")


def strict_load(path):
    return json.loads(path.read_text(), parse_constant=_reject)


def _write_split(run, frames):
    rows = [f[["path", "label"]].assign(split=s) for s, f in frames.items()]
    split = pd.concat(rows)
    split["sha1"] = [f"{i:040d}" for i in range(len(split))]
    split.to_csv(run / "split.csv", index=False)


def _frame(y, probs, split):
    frame = pd.DataFrame(
        {
            "path": [f"/d/{split}/{i}.png" for i in range(len(y))],
            "label": np.array(CLASSES, dtype=object)[y],
            "predicted": np.array(CLASSES, dtype=object)[probs.argmax(1)],
        }
    )
    for j, c in enumerate(CLASSES):
        frame[c] = probs[:, j]
    return frame


def always_covid_run(root):
    """20 images per class, every one predicted COVID (probabilities still rank somewhat)."""
    root.mkdir(parents=True)
    (root / "predictions").mkdir()
    rng = np.random.default_rng(0)
    frames = {}
    for split in ("val", "test"):
        y = np.repeat(np.arange(3), 20)
        probs = np.full((60, 3), 0.1) + rng.uniform(0, 0.05, (60, 3))
        probs[np.arange(60), y] += 0.1
        probs[:, 0] += 0.5
        probs /= probs.sum(1, keepdims=True)
        frames[split] = _frame(y, probs, split)
        frames[split].to_csv(root / "predictions" / f"{split}.csv", index=False)
    _write_split(root, frames)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def test_always_covid_run_reports_11_percent_and_undefined_cells(tmp_path):
    run = always_covid_run(tmp_path / "run")
    result = evaluate_run(run, n_boot=200, make_figures=False)
    m = strict_load(run / "metrics.json")
    assert m["metrics"]["macro_precision"]["value"] == pytest.approx(1 / 9)  # 11.1%, not 33.3%
    assert m["format"] == 2
    normal = m["per_class"]["Normal"]["precision"]
    assert normal["value"] is None and normal["ci_low"] is None
    assert (
        "never predicted" in normal["undefined"] or "predicted as the class" in normal["undefined"]
    )
    covid = m["per_class"]["COVID"]
    # recall 20/20 and precision 20/60: proportions, never a zero-width interval
    assert covid["recall"]["value"] == 1.0 and covid["recall"]["ci_low"] < 0.9
    assert covid["precision"]["method"] == "clopper-pearson"
    assert covid["precision"]["ci_low"] < 1 / 3 < covid["precision"]["ci_high"]
    # F1 of COVID is 0.5 in every stratified resample: no interval rather than 50.0 (50.0-50.0)
    assert covid["f1"]["value"] == pytest.approx(0.5) and covid["f1"]["ci_low"] is None
    assert "no_interval" in covid["f1"]
    assert m["intervals"]["metrics"]["accuracy"] == "clopper-pearson"
    assert m["intervals"]["per_class"]["f1"] == "bootstrap"
    assert "zero_division" in m["definitions"]["averages"]
    table = (run / "tables" / "per_class.md").read_text()
    assert "undefined" in table and "33.3 (" in table
    assert result.value("macro_precision") == pytest.approx(1 / 9)


def test_every_json_cxrlab_writes_is_strict(tmp_path):
    # metrics.json of an evaluated run (with empty reliability bins, undefined cells)
    runs = []
    for i in range(2):
        runs.append(always_covid_run(tmp_path / f"r{i}"))
    evaluate_run(runs[0], n_boot=100, make_figures=True)
    comparison = compare_runs(runs, out=tmp_path / "cmp", n_boot=50)
    summary = summarize_cv(runs, n_boot=50)
    write_cv_summary(summary, tmp_path / "cv")
    write_json(tmp_path / "direct.json", {"x": float("nan"), "y": [np.inf, np.float32(2)]})
    written = sorted(tmp_path.rglob("*.json"))
    names = {p.name for p in written}
    assert {"metrics.json", "comparison.json", "cv_summary.json", "direct.json"} <= names
    for path in written:
        if path.name == "classes.json":
            continue
        strict_load(path)  # raises on NaN / Infinity
    assert strict_load(tmp_path / "direct.json") == {"x": None, "y": [None, 2.0]}
    assert comparison.files["json"].is_file()


def test_temperature_on_a_bound_is_reported_not_applied():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=300)  # unrelated to the labels
    y = np.array(CLASSES, dtype=object)[rng.integers(0, 3, 300)]
    with pytest.warns(UserWarning, match="not applied"):
        out = temperature_scaling(y, probs, y, probs, labels=CLASSES)
    assert out["temperature"] is None and "after" not in out
    fit = out["fit"]
    assert fit["applied"] is False and fit["on_bound"] is True
    assert fit["temperature"] == pytest.approx(T_BOUNDS[1], rel=1e-2)
    assert fit["bounds"] == list(T_BOUNDS) and "bound" in fit["reason"]


def test_temperature_fit_inside_bounds_is_applied():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 1000)
    z = rng.normal(size=(1000, 3))
    z[np.arange(1000), y] += 1.0
    probs = np.exp(3 * z) / np.exp(3 * z).sum(1, keepdims=True)  # overconfident
    labels = np.array(CLASSES, dtype=object)[y]
    out = temperature_scaling(labels, probs, labels, probs, labels=CLASSES)
    fit = out["fit"]
    assert fit["applied"] and out["temperature"] == fit["temperature"] > 1.5
    assert fit["val_nll_after"] < fit["val_nll_before"] and not fit["on_bound"]


def test_thresholds_hand_computed():
    # val: positives .9 .8 .4, negatives .7 .3 .2 .1 (sorted candidates .1 .2 .3 .4 .7 .8 .9)
    score = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1])
    pos = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    t = choose_thresholds(score, pos)
    # spec >= 90%: t = .8 (spec 4/4, sens 2/3); t = .4 has spec 3/4
    assert t["spec90"]["threshold"] == 0.8 and t["spec90"]["val_sensitivity"] == pytest.approx(
        2 / 3
    )
    # sens >= 90%: the highest t with sens 3/3 is .4 (spec 3/4)
    assert t["sens95"]["threshold"] == 0.4 and t["sens95"]["val_specificity"] == 0.75
    # Youden: t = .8 -> 2/3 + 1 - 1 = .667; t = .4 -> 1 + .75 - 1 = .75 (max)
    assert t["youden"]["threshold"] == 0.4
    test = binary_summary([0.95, 0.5, 0.3, 0.6, 0.1], [1, 1, 1, 0, 0], 0.4)
    assert test["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert test["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert test["ppv"]["value"] == pytest.approx(2 / 3) and test["npv"]["value"] == 0.5
    assert test["sensitivity"]["method"] == "clopper-pearson"


def test_operating_points_chosen_on_val_applied_to_test_covid_first():
    rng = np.random.default_rng(3)
    labels = ["Normal", "COVID", "Viral Pneumonia"]

    def draw(n):
        y = rng.integers(0, 3, n)
        z = rng.normal(size=(n, 3))
        z[np.arange(n), y] += 2
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return np.array(labels, dtype=object)[y], p

    yv, pv = draw(300)
    yt, pt = draw(300)
    out = operating_points(yv, pv, yt, pt, labels=labels)
    assert list(out["classes"]) == ["COVID", "Normal", "Viral Pneumonia"]
    covid = out["classes"]["COVID"]
    assert covid["spec95"]["val_specificity"] >= 0.95
    assert covid["sens90"]["val_sensitivity"] >= 0.9
    # the test numbers are those of the val threshold on test, not re-chosen on test
    j = labels.index("COVID")
    thr = covid["spec95"]["threshold"]
    called = pt[:, j] >= thr
    assert covid["spec95"]["test"]["confusion"]["tp"] == int((called & (yt == "COVID")).sum())
    again = apply_operating_points(out, yt, pt, labels=labels)
    assert again["COVID"]["spec95"] == covid["spec95"]["test"]
