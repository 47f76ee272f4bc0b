"""evaluate_run and `cxrlab evaluate`: files written, predictions computed when missing or stale."""

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxrlab.cli import app
from cxrlab.errors import RunDirError
from cxrlab.evaluation import (
    apply_temperature,
    evaluate_run,
    fit_temperature,
    negative_log_likelihood,
    read_predictions,
)
from cxrlab.evaluation.runs import ensure_predictions
from cxrlab.rundir import RunDir

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def _predictions(rng, split, n, *, overconfident=2.0):
    y = rng.integers(0, 4, n)
    z = rng.normal(size=(n, 4))
    z[np.arange(n), y] += 1.5
    p = np.exp(overconfident * z)
    p /= p.sum(1, keepdims=True)
    frame = pd.DataFrame(
        {
            "path": [f"/data/{CLASSES[t]}/images/{split}-{i}.png" for i, t in enumerate(y)],
            "label": [CLASSES[t] for t in y],
            "predicted": [CLASSES[j] for j in p.argmax(1)],
        }
    )
    for j, c in enumerate(CLASSES):
        frame[c] = p[:, j]
    return frame


def make_run(root, *, n_test=120, seed=0, history=True, probe=False):
    """A run directory as training leaves it, minus the checkpoint: predictions, split, history."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "predictions").mkdir()
    rows = []
    for split, n in (("val", n_test // 2), ("test", n_test)):
        frame = _predictions(rng, split, n)
        frame.to_csv(root / "predictions" / f"{split}.csv", index=False)
        rows.append(
            frame[["path", "label"]].assign(split=split, sha1=[f"{split}{i:04d}" for i in range(n)])
        )
    pd.concat(rows).to_csv(root / "split.csv", index=False)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    if history:
        pd.DataFrame(
            {"epoch": [0, 1, 2], "train_loss": [1.2, 0.9, 0.7], "val_loss": [1.1, 1.0, 0.9]}
        ).to_csv(root / "history.csv", index=False)
    if probe:
        probe = {
            "run_dir": str(root),
            "split": "test",
            "clean": {"accuracy": 0.9},
            "probes": {"lungs_removed": {"accuracy": 0.85}, "border_only": {"accuracy": 0.7}},
            "shortcut_suspected": True,
            "summary": "Accuracy stays at 85% with the lungs removed: shortcut suspected.",
        }
        (root / "probe.json").write_text(json.dumps(probe))
    return root


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run", probe=True)


def test_evaluate_run_writes_everything(run_dir):
    with pytest.warns(UserWarning, match="fewer than 1000"):
        result = evaluate_run(run_dir, n_boot=100, seed=3)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert json.dumps(m) == json.dumps(json.loads(json.dumps(result.metrics)))  # file == result
    assert m["classes"] == CLASSES and m["n"] == 120
    assert sum(m["n_per_class"].values()) == 120
    assert m["bootstrap"] == {
        "method": "stratified BCa bootstrap",
        "n_boot": 100,
        "seed": 3,
        "confidence": 0.95,
    }
    assert (
        m["test_set_hash"] == RunDir(run_dir).fingerprint()["sha1"]
        and m["test_set"]["key"] == "sha1"
    )
    acc = m["metrics"]["accuracy"]
    test = read_predictions(run_dir / "predictions" / "test.csv", CLASSES)
    assert acc["value"] == pytest.approx(np.mean(test.y_true == test.y_pred))
    assert acc["ci_low"] < acc["value"] < acc["ci_high"]
    cal = m["calibration"]
    val = read_predictions(run_dir / "predictions" / "val.csv", CLASSES)
    assert cal["temperature"] == pytest.approx(
        fit_temperature(val.y_true, val.probs, labels=CLASSES)
    )
    scaled = apply_temperature(test.probs, cal["temperature"])
    assert cal["after"]["nll"] == pytest.approx(
        negative_log_likelihood(test.y_true, scaled, labels=CLASSES)
    )
    assert cal["before"]["ece"] == m["metrics"]["ece"]["value"]
    assert (
        sum(cal["reliability"]["after"]["count"]) == 120
        and len(cal["reliability"]["before"]["count"]) == 15
    )
    assert np.array(m["confusion_matrix"]["counts"]).shape == (4, 4)
    for rel in (
        "tables/metrics.md",
        "tables/metrics.tex",
        "tables/per_class.md",
        "tables/per_class.tex",
    ):
        assert (run_dir / rel).stat().st_size > 0, rel
    for name in (
        "confusion_matrix",
        "confusion_matrix_normalized",
        "roc",
        "pr",
        "reliability",
        "training_curves",
    ):
        for ext in ("png", "pdf"):
            assert (run_dir / "figures" / f"{name}.{ext}").is_file(), name
    md = (run_dir / "tables" / "metrics.md").read_text()
    assert "Accuracy (%)" in md and "Temperature (fitted on val)" in md
    assert "Lung Opacity" in (run_dir / "tables" / "per_class.tex").read_text()
    assert result.probe == {
        "split": "test",
        "shortcut_suspected": True,
        "clean_accuracy": 0.9,
        "lungs_removed_accuracy": 0.85,
        "border_only_accuracy": 0.7,
        "summary": "Accuracy stays at 85% with the lungs removed: shortcut suspected.",
    }
    assert result.value("accuracy") == acc["value"]


def test_evaluate_without_val_or_history(tmp_path):
    run = make_run(tmp_path / "run", history=False)
    (run / "predictions" / "val.csv").unlink()
    with pytest.warns(UserWarning):
        result = evaluate_run(run, n_boot=20, make_figures=False)
    cal = result.metrics["calibration"]
    assert cal["temperature"] is None and "skipped" in cal["note"] and "ece" in cal["before"]
    assert "Temperature" not in (run / "tables" / "metrics.md").read_text()
    assert not (run / "figures").exists()
    assert result.probe is None


def test_missing_run_and_missing_predictions(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        evaluate_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="neither predictions/test.csv nor a checkpoint"):
        evaluate_run(tmp_path / "empty")


def test_predictions_computed_when_missing_or_stale(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    calls = []

    def fake_predict_split(run_dir, split, *, device=None, batch_size=64, tta=1):
        calls.append((split, device))
        return _predictions(np.random.default_rng(9), split, 40)

    monkeypatch.setattr("cxrlab.inference.split.predict_split", fake_predict_split)
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"not read: classes come from classes.json")
    # both prediction files are older than the checkpoint -> recomputed
    old = time.time() - 100
    for split in ("val", "test"):
        os.utime(run / "predictions" / f"{split}.csv", (old, old))
    found = ensure_predictions(run, device="cpu")
    assert calls == [("val", "cpu"), ("test", "cpu")]
    assert len(read_predictions(found["test"])) == 40
    # now fresh: nothing recomputed
    ensure_predictions(run)
    assert len(calls) == 2
    (run / "predictions" / "test.csv").unlink()
    ensure_predictions(run, ("test",))
    assert calls[-1] == ("test", None)


def test_cli_evaluate(run_dir):
    result = CliRunner().invoke(
        app,
        ["evaluate", str(run_dir), "--n-boot", "50", "--seed", "1", "--no-figures"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "Accuracy (%)" in result.output and "Sensitivity" in result.output
    assert "70.16% accuracy" in result.output  # the seed's published numbers, as a note
    assert "lungs_removed_accuracy" in result.output and "shortcut suspected" in result.output
    assert json.loads((run_dir / "metrics.json").read_text())["bootstrap"]["n_boot"] == 50
