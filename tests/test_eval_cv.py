"""Cross-validation: summarize_cv by hand, run_cv orchestration and resumption (training faked)."""

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxrlab.cli import app
from cxrlab.config import load_config, save_config
from cxrlab.errors import ConfigError, DataError, RunDirError
from cxrlab.evaluation.cv_summary import summarize_cv
from cxrlab.evaluation.metrics import compute_metrics
from cxrlab.training.cv import run_cv
from cxrlab.training.recipes import resolved_config

CLASSES = ["COVID", "Normal"]
N_IMAGES = 40
# Small n_boot and tiny validation sets are deliberate here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:n_boot=.*fewer than 1000:UserWarning"),
    pytest.mark.filterwarnings("ignore:The fitted temperature:UserWarning"),
]


def _write_run(run_dir, fold, seed, folds=2):
    """What a finished training of (fold, seed) leaves behind, with predictions already made."""
    y = np.arange(N_IMAGES) % 2
    test_rows = np.flatnonzero((np.arange(N_IMAGES) // 2) % folds == fold)  # both classes per fold
    rng = np.random.default_rng(100 * fold + seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"fake")
    old = time.time() - 60
    os.utime(ckpt, (old, old))
    (run_dir / "classes.json").write_text(json.dumps(CLASSES))
    (run_dir / "predictions").mkdir(exist_ok=True)
    for split, rows in (("test", test_rows), ("val", test_rows[:6])):
        p1 = np.clip(0.5 + (2 * y[rows] - 1) * rng.uniform(-0.2, 0.45, len(rows)), 0.01, 0.99)
        frame = pd.DataFrame(
            {"path": [f"/d/img{i}.png" for i in rows], "label": np.array(CLASSES)[y[rows]]}
        )
        frame["predicted"] = np.where(p1 > 0.5, "Normal", "COVID")
        frame["COVID"], frame["Normal"] = 1 - p1, p1
        frame.to_csv(run_dir / "predictions" / f"{split}.csv", index=False)
    (run_dir / "train_summary.json").write_text("{}")


@pytest.fixture
def cv_runs(tmp_path):
    dirs = []
    for fold in range(2):
        for seed in range(2):
            d = tmp_path / "cv" / f"fold{fold}-seed{seed}"
            _write_run(d, fold, seed)
            dirs.append(d)
    return dirs


def test_summarize_cv_hand_checked(cv_runs):
    summary = summarize_cv(cv_runs, n_boot=200, seed=0)
    accs = []
    for d in cv_runs:
        f = pd.read_csv(d / "predictions" / "test.csv")
        accs.append(float(np.mean(f["label"] == f["predicted"])))
    acc = summary["metrics"]["accuracy"]
    assert acc["values"] == pytest.approx(accs)
    assert acc["mean"] == pytest.approx(np.mean(accs))
    assert acc["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert (acc["min"], acc["max"]) == (min(accs), max(accs))
    assert summary["n_runs"] == 4 and summary["classes"] == CLASSES
    assert [(r["fold"], r["seed"]) for r in summary["runs"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # pooled: 4 runs x 20 test images = 80 predictions of 40 distinct images (2 seeds each)
    assert summary["pooled"]["n_predictions"] == 80 and summary["pooled"]["n_images"] == 40
    frames = pd.concat(pd.read_csv(d / "predictions" / "test.csv") for d in cv_runs)
    assert acc["pooled"]["value"] == pytest.approx(np.mean(frames["label"] == frames["predicted"]))
    assert acc["pooled"]["ci_low"] <= acc["pooled"]["value"] <= acc["pooled"]["ci_high"]
    assert "resampling_unit" in summary["pooled"]["bootstrap"]
    auc = compute_metrics(frames["label"], frames[CLASSES].to_numpy(), labels=CLASSES)["roc_auc"]
    assert summary["per_class"]["Normal"]["roc_auc"]["pooled"]["value"] == pytest.approx(auc[1])


def test_summarize_cv_refuses_mixed_classes(cv_runs):
    (cv_runs[1] / "classes.json").write_text(json.dumps(["COVID", "Normal", "Viral Pneumonia"]))
    with pytest.raises(DataError, match="fold0-seed1.*lacks probability column.*'Viral Pneumonia'"):
        summarize_cv(cv_runs, n_boot=10)


@pytest.fixture
def fake_train(monkeypatch):
    calls = []

    def train(config, progress=None):
        calls.append(config)
        _write_run(config.out, config.split.fold, config.seed, folds=config.split.folds)
        save_config(resolved_config(config), config.out / "config.yaml")  # as train() does

    monkeypatch.setattr("cxrlab.training.train", train)
    return calls


def _config(tmp_path, **kw):
    (tmp_path / "data").mkdir(exist_ok=True)
    kw = {"epochs": 1, **kw}
    return load_config(data=tmp_path / "data", out=tmp_path / "cv", model="resnet18", **kw)


def test_run_cv_trains_each_fold_and_seed_then_resumes(tmp_path, fake_train):
    cfg = _config(tmp_path)
    result = run_cv(cfg, folds=2, seeds=2, n_boot=50, make_figures=False)
    assert [(c.split.folds, c.split.fold, c.seed, c.out.name) for c in fake_train] == [
        (2, 0, 0, "fold0-seed0"), (2, 0, 1, "fold0-seed1"),
        (2, 1, 0, "fold1-seed0"), (2, 1, 1, "fold1-seed1"),
    ]  # fmt: skip
    assert all(not c.resume and not c.overwrite and c.epochs == 1 for c in fake_train)
    assert len(result.trained) == 4 and result.skipped == []
    for d in result.run_dirs:
        assert (d / "metrics.json").is_file() and (d / "tables" / "metrics.md").is_file()
    for ext in ("json", "md", "tex"):
        assert (tmp_path / "cv" / f"cv_summary.{ext}").is_file()
    saved = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert saved["folds"] == 2 and saved["seeds"] == [0, 1] and saved["n_runs"] == 4
    assert "Mean ± SD" in (tmp_path / "cv" / "cv_summary.md").read_text()
    assert "$\\pm$" in (tmp_path / "cv" / "cv_summary.tex").read_text()

    again = run_cv(
        cfg, folds=2, seeds=2, n_boot=50, make_figures=False
    )  # everything finished: nothing retrained
    assert len(fake_train) == 4 and len(again.skipped) == 4
    assert again.summary["metrics"] == result.summary["metrics"]


def test_run_cv_resumes_interrupted_runs(tmp_path, fake_train):
    cfg = _config(tmp_path)
    interrupted = tmp_path / "cv" / "fold0-seed0"
    (interrupted / "checkpoints").mkdir(parents=True)
    (interrupted / "checkpoints" / "last.ckpt").write_bytes(b"x")
    crashed = tmp_path / "cv" / "fold1-seed0"
    crashed.mkdir(parents=True)
    (crashed / "config.yaml").write_text("model: resnet18\n")
    evaluated_only = tmp_path / "cv" / "fold0-seed1"
    _write_run(evaluated_only, 0, 1)  # trained, never evaluated: evaluate without retraining
    run_cv(cfg, folds=2, seeds=[0], n_boot=20, make_figures=False)
    flags = {c.out.name: (c.resume, c.overwrite) for c in fake_train}
    assert flags == {"fold0-seed0": (True, False), "fold1-seed0": (False, True)}
    assert not (evaluated_only / "metrics.json").exists()  # seed 1 is not part of this CV


def test_run_cv_refuses_runs_trained_with_other_options(tmp_path, fake_train):
    run_cv(_config(tmp_path), folds=2, seeds=[0], n_boot=20, make_figures=False)
    # Another --epochs into the same folder: the finished runs are not reported as 2-epoch runs.
    asked = r"fold0-seed0 was trained with other options.*epochs: 1 there, 2 now"
    with pytest.raises(RunDirError, match=asked):
        run_cv(_config(tmp_path, epochs=2), folds=2, seeds=[0], n_boot=20, make_figures=False)
    # An interrupted run is not resumed under other options either (the learning rate here).
    finished = tmp_path / "cv" / "fold0-seed0"
    (finished / "train_summary.json").unlink()
    (finished / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(RunDirError, match=r"fold0-seed0 .*lr: 0\.002 there, 0\.01 now"):
        run_cv(_config(tmp_path, lr=0.01), folds=2, seeds=[0], n_boot=20, make_figures=False)
    assert len(fake_train) == 2
    # What does not change the computation may differ: where the cache lives, progress output.
    again = _config(tmp_path, cache_dir=tmp_path / "cache", progress=False)
    run_cv(again, folds=2, seeds=[0], n_boot=20, make_figures=False)
    assert [c.out.name for c in fake_train] == ["fold0-seed0", "fold1-seed0", "fold0-seed0"]
    assert fake_train[-1].resume


def test_run_cv_validates_options(tmp_path, fake_train):
    cfg = _config(tmp_path)
    with pytest.raises(ConfigError, match="at least 2"):
        run_cv(cfg, folds=1, seeds=1)
    with pytest.raises(ConfigError, match="distinct"):
        run_cv(cfg, folds=2, seeds=[1, 1])
    assert fake_train == []


def test_cli_cv(tmp_path, fake_train):
    (tmp_path / "data").mkdir()
    args = ["cv", "--data", str(tmp_path / "data"), "--model", "resnet18", "--folds", "2",
            "--seeds", "1", "--out", str(tmp_path / "cv"), "--epochs", "3", "--split-by", "source",
            "--n-boot", "20", "--no-figures"]  # fmt: skip
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert [c.split.method for c in fake_train] == ["source", "source"]
    assert fake_train[0].epochs == 3
    assert "Pooled (95% CI)" in result.output and "cv_summary.json" in result.output
