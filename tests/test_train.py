"""Training end to end on tiny synthetic data: run directory, resume, refusals, DDP on CPU."""

import os
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
import torch
import yaml

from cxrlab.config import load_config
from cxrlab.errors import CheckpointError, ConfigError, DataError, RunDirError
from cxrlab.inference.split import predict_split
from cxrlab.models import load_classifier
from cxrlab.training import train


def _config(data, out, tmp_path, **kw):
    base = dict(
        data=data, out=out, model="resnet18", image_size=32, epochs=2, batch_size=8,
        cache_dir=tmp_path / "cache", progress=False, seed=0,
    )  # fmt: skip
    base.update(kw)
    return load_config(**base)


@pytest.fixture(scope="module")
def trained_run(synth_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = _config(synth_dataset, tmp / "run", tmp)
    return cfg, train(cfg)


def test_run_directory_is_complete(trained_run):
    cfg, result = trained_run
    run = result.run_dir
    expected = ["config.yaml", "environment.json", "split.csv", "history.csv", "classes.json"]
    expected += ["train_summary.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"]
    for name in expected:
        assert (run / name).is_file(), name
    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert history[["train_loss", "val_loss", "val_f1"]].notna().all().all()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "resnet18" and saved["seed"] == 0 and saved["split"]["test"] == 0.15
    assert result.classes == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def test_lightning_checkpoint_loads_without_training_code(trained_run):
    _, result = trained_run
    model, meta = load_classifier(result.run_dir)
    assert meta.model_name == "resnet18" and meta.image_size == 32
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 4)


def test_predict_split_frame(trained_run):
    _, result = trained_run
    frame = predict_split(result.run_dir, "test", device="cpu")
    split = pd.read_csv(result.run_dir / "split.csv")
    assert len(frame) == (split["split"] == "test").sum()
    probs = frame[result.classes].to_numpy()
    assert abs(probs.sum(axis=1) - 1).max() < 1e-5
    assert list(frame.columns[:3]) == ["path", "label", "predicted"]


def test_predict_split_with_another_checkpoint(trained_run):
    _, result = trained_run
    last = result.run_dir / "checkpoints" / "last.ckpt"
    frame = predict_split(result.run_dir, "test", device="cpu", checkpoint=last)
    test_rows = pd.read_csv(result.run_dir / "split.csv").query("split == 'test'")
    assert frame["path"].tolist() == test_rows["path"].tolist()
    missing = result.run_dir / "checkpoints" / "epoch=99.ckpt"
    with pytest.raises(CheckpointError, match="epoch=99.ckpt"):
        predict_split(result.run_dir, "test", device="cpu", checkpoint=missing)


def test_finished_run_is_refused(trained_run):
    cfg, _ = trained_run
    with pytest.raises(RunDirError, match="finished run.*--resume"):
        train(cfg)
    with pytest.raises(ConfigError, match="original --epochs"):
        train(cfg.model_copy(update={"resume": True, "epochs": 5}))


class _Crash(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_from_last_checkpoint(synth_dataset, tmp_path):
    cfg = _config(synth_dataset, tmp_path / "run", tmp_path, model="seed-cnn", epochs=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[_Crash()])
    assert (cfg.out / "checkpoints" / "last.ckpt").is_file()
    assert not (cfg.out / "train_summary.json").exists()
    with pytest.raises(RunDirError, match="unfinished run"):
        train(cfg)
    resumed = train(cfg.model_copy(update={"resume": True}))
    history = pd.read_csv(resumed.run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert (cfg.out / "train_summary.json").is_file()


def test_last_checkpoint_is_rewritten_every_epoch(synth_dataset, tmp_path, monkeypatch):
    from cxrlab.training.module import CxrLightningModule

    def worse_each_epoch(self, batch, batch_idx):  # the best checkpoint stays at epoch 0
        self.log("val_f1", 1.0 - 0.1 * self.current_epoch, batch_size=len(batch[1]))

    monkeypatch.setattr(CxrLightningModule, "validation_step", worse_each_epoch)
    cfg = _config(synth_dataset, tmp_path / "run", tmp_path, epochs=3)
    train(cfg)
    load = lambda name: torch.load(cfg.out / "checkpoints" / name, weights_only=False)  # noqa: E731
    assert load("best.ckpt")["epoch"] == 0
    assert load("last.ckpt")["epoch"] == 2


def test_weight_ema_is_what_the_checkpoint_holds_and_resumes(synth_dataset, tmp_path):
    cfg = _config(synth_dataset, tmp_path / "run", tmp_path, epochs=3, ema_decay=0.9)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[_Crash()])
    resumed = train(cfg.model_copy(update={"resume": True}))
    assert resumed.epochs_run == 3
    ckpt = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=False)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    key = "model.network.fc.weight"
    assert not torch.equal(averaged[key], raw[key])  # the average, not the last step's weights
    model, _ = load_classifier(resumed.run_dir / "checkpoints/last.ckpt")
    assert torch.equal(model.state_dict()["network.fc.weight"], averaged[key])
    summary = yaml.safe_load((resumed.run_dir / "train_summary.json").read_text())
    assert summary["recipe"]["ema_decay"] == 0.9


def test_weight_ema_follows_the_weights_early_then_decays():
    from cxrlab.training.callbacks import WeightEMA

    ema = WeightEMA(0.99)
    avg, cur = torch.zeros(3), torch.ones(3)
    # After one update the average moves 9/11 of the way (warm-up), later at most 1 - decay.
    assert torch.allclose(ema._average(avg, cur, torch.tensor(1)), torch.full((3,), 9 / 11))
    assert torch.allclose(ema._average(avg, cur, torch.tensor(10**6)), torch.full((3,), 0.01))


def test_same_seed_same_weights(synth_dataset, tmp_path):
    a = train(_config(synth_dataset, tmp_path / "a", tmp_path, epochs=1, model="seed-cnn"))
    b = train(_config(synth_dataset, tmp_path / "b", tmp_path, epochs=1, model="seed-cnn"))
    sa = torch.load(a.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(b.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_out_inside_dataset_is_refused(synth_dataset, tmp_path):
    with pytest.raises(DataError, match="never writes into a dataset"):
        train(_config(synth_dataset, synth_dataset / "run", tmp_path))


def test_too_many_gpus_is_a_clear_error(synth_dataset, tmp_path):
    with pytest.raises(ConfigError, match="GPU"):
        train(_config(synth_dataset, tmp_path / "r", tmp_path, accelerator="gpu", devices=64))


def test_ddp_two_cpu_processes(synth_dataset, tmp_path):
    """Two-process DDP on CPU through the real CLI, as torchrun/SLURM would launch it."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "cxrlab", "train", "--data", str(synth_dataset), "--out", str(out),
        "--model", "seed-cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
        "--cache-dir", str(tmp_path / "cache"), "--no-evaluate",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = yaml.safe_load((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert (out / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.parametrize("model", ["seed-cnn", "small-cnn", "resnet18"])
def test_saved_config_holds_the_resolved_recipe(model, tmp_path):
    from cxrlab.training.recipes import resolve_recipe, resolved_config

    cfg = load_config(data=tmp_path, out=tmp_path / "r", model=model, lr=0.01)
    resolved = resolved_config(cfg)
    assert resolve_recipe(resolved) == resolve_recipe(cfg)
    dumped = resolved.to_yaml_dict()
    for name in ("epochs", "batch_size", "lr", "optimizer", "scheduler", "image_size", "augment"):
        assert dumped[name] is not None, name
    assert dumped["lr"] == 0.01


def test_resume_reads_the_resolved_config_yaml(synth_dataset, tmp_path):
    from cxrlab.cli.train import build_train_config

    cfg = _config(synth_dataset, tmp_path / "run", tmp_path, model="small-cnn", epochs=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[_Crash()])
    saved = yaml.safe_load((cfg.out / "config.yaml").read_text())
    assert saved["scheduler"] == "onecycle" and saved["epochs"] == 3
    resumed_cfg = build_train_config(config_file=None, out=cfg.out, resume=True)
    resumed = train(resumed_cfg)
    assert pd.read_csv(resumed.run_dir / "history.csv")["epoch"].tolist() == [0, 1, 2]


def test_failure_before_the_first_epoch_leaves_nothing(synth_dataset, tmp_path, monkeypatch):
    import cxrlab.models.classifier

    real = cxrlab.models.classifier.create_classifier

    def offline(*args, **kwargs):
        raise RuntimeError("cannot download pretrained weights (offline)")

    monkeypatch.setattr(cxrlab.models.classifier, "create_classifier", offline)
    out = tmp_path / "runs" / "run"
    cfg = _config(synth_dataset, out, tmp_path, model="small-cnn", epochs=1)
    with pytest.raises(RuntimeError, match="offline"):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # the folders this run created are gone

    kept = tmp_path / "mine"
    kept.mkdir()  # a folder the user made (empty, so training may use it): it stays
    with pytest.raises(RuntimeError, match="offline"):
        train(cfg.model_copy(update={"out": kept}))
    assert kept.is_dir() and not any(kept.iterdir())

    monkeypatch.setattr(cxrlab.models.classifier, "create_classifier", real)
    result = train(cfg)
    assert (result.run_dir / "train_summary.json").is_file()


def test_missing_logger_package_is_named(synth_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    for kind, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        cfg = _config(synth_dataset, tmp_path / kind, tmp_path, logger=kind)
        with pytest.raises(ConfigError, match=f"pip install {package}"):
            train(cfg)
        assert not cfg.out.exists()
