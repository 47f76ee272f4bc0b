"""``--refit``: a fresh model on train+val for the epochs chosen on val becomes the run's model."""

from __future__ import annotations

import json

import pandas as pd
import torch

from cxrlab.config import load_config
from cxrlab.evaluation.evaluate import evaluate_run
from cxrlab.rundir import RunDir
from cxrlab.training import train


def test_refit_trains_on_train_and_val_for_the_chosen_epochs(synth_dataset, tmp_path):
    cfg = load_config(
        data=synth_dataset, out=tmp_path / "run", model="small-cnn", image_size=32, epochs=3,
        batch_size=16, cache_dir=tmp_path / "cache", progress=False, seed=0, refit=True,
    )  # fmt: skip
    result = train(cfg)
    run = RunDir(result.run_dir)
    assert result.refit_checkpoint == run.refit_checkpoint
    assert run.checkpoint() == run.refit_checkpoint and run.is_refit()
    assert not run.refit_last_checkpoint.exists()  # renamed when whole

    history = pd.read_csv(run.history)
    chosen = int(history.loc[history["val_f1"].idxmax(), "epoch"]) + 1  # first best, as the ckpt
    summary = json.loads(run.summary.read_text())["refit"]
    assert summary["epochs"] == chosen
    assert len(pd.read_csv(run.refit_history)) == chosen
    split = run.read_split()
    assert summary["train_images"] == int(split["split"].isin(["train", "val"]).sum())
    refit_state = torch.load(run.refit_checkpoint, map_location="cpu", weights_only=False)
    best_state = torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)
    assert refit_state["epoch"] == chosen - 1
    key = next(iter(best_state["state_dict"]))
    assert not torch.equal(refit_state["state_dict"][key], best_state["state_dict"][key])

    metrics = evaluate_run(run.path, n_boot=20, make_figures=False).metrics
    assert not run.predictions("val").exists()  # in-sample for the refitted model
    assert "refitted on train+val" in metrics["calibration"]["note"]


def test_cli_refit_flag(synth_dataset, tmp_path, cxrlab_cli):
    out = tmp_path / "run"
    done = cxrlab_cli(
        "train", "--data", synth_dataset, "--out", out, "--model", "small-cnn",
        "--image-size", "32", "--epochs", "1", "--cache-dir", tmp_path / "cache", "--refit",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert RunDir(out).is_refit()
    assert "refit: true" in RunDir(out).config.read_text()
