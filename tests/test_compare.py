"""Run comparison: McNemar's exact test by hand, Holm, identical test sets, `cxrlab compare`."""

import json
from math import comb

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxrlab.cli import app
from cxrlab.errors import DataError
from cxrlab.evaluation.compare import compare_runs, holm_adjust, mcnemar_exact

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]


def test_mcnemar_matches_hand_computed_exact_binomial():
    # 3 images only A gets right, 9 only B gets right, 10 both right, 2 both wrong
    y = ["COVID"] * 24
    a = ["COVID"] * 3 + ["Normal"] * 9 + ["COVID"] * 10 + ["Normal"] * 2
    b = ["Normal"] * 3 + ["COVID"] * 9 + ["COVID"] * 10 + ["Normal"] * 2
    out = mcnemar_exact(y, a, b)
    assert (out["b"], out["c"], out["n_discordant"]) == (3, 9, 12)
    # two-sided: 2 * P(X <= 3), X ~ Binomial(12, 1/2)
    expected = 2 * sum(comb(12, i) for i in range(4)) / 2**12
    assert expected == pytest.approx(0.14599609375)
    assert out["p_value"] == pytest.approx(expected)
    assert mcnemar_exact(y, b, a)["p_value"] == pytest.approx(expected)  # symmetric


def test_mcnemar_edge_cases():
    y = ["A", "B", "A"]
    assert mcnemar_exact(y, y, y)["p_value"] == 1.0  # no discordant pair
    # 5 vs 0 discordant: 2 * (1/2)^5
    out = mcnemar_exact(["A"] * 5, ["A"] * 5, ["B"] * 5)
    assert out["p_value"] == pytest.approx(2 / 32)
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact(["A"], ["A", "B"], ["A"])


def test_holm_hand_computed():
    # sorted .01, .03, .04 -> x3 = .03, x2 = .06, x1 = .04 -> monotone .06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _frame(y, probs, paths):
    frame = pd.DataFrame({"path": paths, "label": np.array(CLASSES, dtype=object)[y]})
    frame["predicted"] = np.array(CLASSES, dtype=object)[probs.argmax(1)]
    for j, c in enumerate(CLASSES):
        frame[c] = probs[:, j]
    return frame


def make_run(root, *, quality, pred_seed, split_seed=0, n=90, shuffle=False):
    """A run with a split.csv (sha1 + label per test image) and predictions/test.csv."""
    rng = np.random.default_rng(split_seed)
    y = np.repeat(np.arange(3), n // 3)
    paths = [f"/data/{CLASSES[t]}/images/{i}.png" for i, t in enumerate(y)]
    sha1 = [f"{split_seed:02d}{i:038d}" for i in range(n)]
    z = np.random.default_rng(pred_seed).normal(size=(n, 3))
    z[np.arange(n), y] += quality
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    frame = _frame(y, probs, paths)
    if shuffle:
        frame = frame.sample(frac=1.0, random_state=1)
    root.mkdir(parents=True)
    (root / "predictions").mkdir()
    frame.to_csv(root / "predictions" / "test.csv", index=False)
    split = pd.DataFrame(
        {"path": paths, "label": frame.sort_index()["label"], "sha1": sha1, "split": "test"}
    )
    train = pd.DataFrame(
        {
            "path": ["/data/x.png"],
            "label": ["COVID"],
            "sha1": [f"{rng.integers(1e9)}"],
            "split": "train",
        }
    )
    pd.concat([split, train]).to_csv(root / "split.csv", index=False)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def test_compare_two_runs(tmp_path):
    a = make_run(tmp_path / "good", quality=3.0, pred_seed=1)
    b = make_run(tmp_path / "weak", quality=0.5, pred_seed=2, shuffle=True)  # row order differs
    result = compare_runs([a, b], out=tmp_path / "cmp", n_boot=200, seed=0)
    assert list(result.runs) == ["good", "weak"]
    pair = result.pairs[0]
    ya = pd.read_csv(a / "predictions" / "test.csv")
    yb = pd.read_csv(b / "predictions" / "test.csv").set_index("path").loc[ya["path"]].reset_index()
    expected = mcnemar_exact(ya["label"], ya["predicted"], yb["predicted"])
    assert pair["mcnemar"]["b"] == expected["b"] and pair["mcnemar"]["p_value"] == pytest.approx(
        expected["p_value"]
    )
    acc_a = np.mean(ya["label"] == ya["predicted"])
    acc_b = np.mean(yb["label"] == yb["predicted"])
    diff = pair["difference"]["accuracy"]
    assert diff["value"] == pytest.approx(acc_a - acc_b)
    assert diff["ci_low"] > 0  # a clearly better model
    assert result.runs["good"]["metrics"]["accuracy"]["value"] == pytest.approx(acc_a)
    assert pair["mcnemar"]["p_value_holm"] == pytest.approx(pair["mcnemar"]["p_value"])
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["test_set"]["n"] == 90 and saved["pairs"][0]["run_a"] == "good"
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| good" in md and "McNemar p" in md
    tex = (tmp_path / "cmp" / "comparison.tex").read_text()
    assert "\\toprule" in tex and "$\\Delta$ Accuracy" in tex


def test_three_runs_give_three_pairs_with_holm(tmp_path):
    runs = [make_run(tmp_path / f"r{i}", quality=1.0 + i, pred_seed=i) for i in range(3)]
    result = compare_runs(runs, out=None, n_boot=50)
    assert [(p["run_a"], p["run_b"]) for p in result.pairs] == [
        ("r0", "r1"),
        ("r0", "r2"),
        ("r1", "r2"),
    ]
    raw = [p["mcnemar"]["p_value"] for p in result.pairs]
    assert [p["mcnemar"]["p_value_holm"] for p in result.pairs] == pytest.approx(holm_adjust(raw))
    assert result.files == {}


def test_compare_refuses_different_test_sets(tmp_path):
    a = make_run(tmp_path / "a", quality=2.0, pred_seed=1)
    b = make_run(tmp_path / "b", quality=2.0, pred_seed=2)
    c = make_run(tmp_path / "c", quality=2.0, pred_seed=3, split_seed=7)  # other images
    with pytest.raises(DataError) as err:
        compare_runs([a, b, c], out=tmp_path / "cmp", n_boot=10)
    msg = str(err.value)
    assert "identical test sets" in msg
    assert f"{a}, {b}" in msg and str(c) in msg
    assert not (tmp_path / "cmp").exists()


def test_compare_refuses_same_images_with_other_labels(tmp_path):
    a = make_run(tmp_path / "a", quality=2.0, pred_seed=1)
    b = make_run(tmp_path / "b", quality=2.0, pred_seed=2)
    split = pd.read_csv(b / "split.csv")
    split.loc[0, "label"] = "Normal"
    split.to_csv(b / "split.csv", index=False)
    with pytest.raises(DataError, match="identical test sets"):
        compare_runs([a, b], out=None, n_boot=10)


def test_compare_needs_two_distinct_runs(tmp_path):
    a = make_run(tmp_path / "a", quality=2.0, pred_seed=1)
    with pytest.raises(DataError, match="at least two"):
        compare_runs([a], out=None)
    with pytest.raises(DataError, match="given twice"):
        compare_runs([a, tmp_path / "a"], out=None)


def test_cli_compare(tmp_path, monkeypatch):
    a = make_run(tmp_path / "a", quality=2.0, pred_seed=1)
    b = make_run(tmp_path / "b", quality=1.0, pred_seed=2)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(a), str(b), "--n-boot", "50"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "McNemar" in result.output and (tmp_path / "comparison" / "comparison.md").is_file()
    c = make_run(tmp_path / "c", quality=1.0, pred_seed=2, split_seed=3)
    result = runner.invoke(app, ["compare", str(a), str(c), "--out", "x"])
    assert isinstance(result.exception, DataError)


def _config(run, **values):
    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(values))


def test_runs_with_other_training_seeds_on_one_test_set_compare_and_are_named(tmp_path):
    # Same split.csv (same test-set fingerprint), different training seeds and models.
    a = make_run(tmp_path / "a", quality=2.5, pred_seed=1)
    b = make_run(tmp_path / "b", quality=1.0, pred_seed=2)
    _config(a, model="resnet18", seed=0, data="/d", out=str(a))
    _config(b, model="densenet121", seed=7, data="/d", out=str(b))
    result = compare_runs([a, b], out=tmp_path / "cmp", n_boot=100)
    assert (result.runs["a"]["model"], result.runs["a"]["seed"]) == ("resnet18", 0)
    assert (result.runs["b"]["seed"], result.runs["b"]["split_seed"]) == (7, 7)
    from cxrlab.evaluation.compare import delong_table, runs_table

    table = runs_table(result)
    assert list(table.columns[:4]) == ["Run", "Model", "Seed", "Split seed"]
    assert table["Model"].tolist() == ["resnet18", "densenet121"]
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "densenet121" in md and "DeLong" in md
    # DeLong per class and macro, beside McNemar
    pair = result.pairs[0]
    from cxrlab.evaluation.delong import delong_ovr

    ya = pd.read_csv(a / "predictions" / "test.csv")
    yb = pd.read_csv(b / "predictions" / "test.csv")
    ref = delong_ovr(ya["label"], ya[CLASSES].to_numpy(), yb[CLASSES].to_numpy(), labels=CLASSES)
    assert pair["delong"]["macro"]["p_value"] == pytest.approx(ref["macro"]["p_value"])
    assert pair["delong"]["macro"]["difference"] > 0 and pair["delong"]["macro"]["p_value"] < 0.05
    assert set(pair["delong"]["per_class"]) == set(CLASSES)
    assert "macro_roc_auc" in pair["difference"]
    assert len(delong_table(result)) == 4  # 3 classes + macro
    assert "unknown" not in table.to_string()
