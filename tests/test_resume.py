"""A resumed training equals an uninterrupted one (CPU, bit for bit), and damaged runs are answered.

Kills: after each epoch boundary and in the middle of an epoch, by raising from a callback (the
process survives) and by SIGKILL in a subprocess (no clean-up runs). Every RNG that training
draws from (augmentation generator, shuffling generator, Python/NumPy/torch global states) is
saved in last.ckpt, so the resumed history.csv and final weights are identical (torch.equal).
"""

import os
import signal
import subprocess
import sys
import textwrap

import lightning as L
import pandas as pd
import pytest
import torch

from cxrlab.config import load_config
from cxrlab.errors import CheckpointError, RunDirError
from cxrlab.training import train

#: history.csv columns that must match exactly (the others are wall-clock timings).
COMPARED = ["epoch", "train_loss", "val_loss", "val_acc", "val_f1", "lr"]


#: Three short epochs of the small demo CNN at 32 px, small batches (several steps per epoch).
TINY = {"model": "small-cnn", "image_size": 32, "epochs": 3, "batch_size": 4, "progress": False}


def _config(data, out, tmp_path, **kw):
    return load_config(data=data, out=out, cache_dir=tmp_path / "cache", **{**TINY, **kw})


class Kill(L.Callback):
    """Raise at the start of ``epoch`` (a boundary kill) or before its batch ``batch``."""

    def __init__(self, epoch: int, batch: int | None = None):
        self.epoch, self.batch = epoch, batch

    def on_train_epoch_start(self, trainer, pl_module):
        if self.batch is None and trainer.current_epoch == self.epoch:
            raise RuntimeError("killed")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("killed")


def _outcome(run):
    history = pd.read_csv(run / "history.csv")[COMPARED]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return history, ckpt


def _assert_same_run(a, b):
    (ha, ca), (hb, cb) = _outcome(a), _outcome(b)
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    assert ca["epoch"] == cb["epoch"] and ca["global_step"] == cb["global_step"]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value, cb["state_dict"][key]), key
    assert ca["lr_schedulers"] == cb["lr_schedulers"]  # plateau counters, one-cycle step
    for sa, sb in zip(
        ca["optimizer_states"][0]["state"].values(),
        cb["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def uninterrupted(synth_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    result = train(_config(synth_dataset, tmp / "run", tmp))
    assert pd.read_csv(result.run_dir / "history.csv")["epoch"].tolist() == [0, 1, 2]
    return result.run_dir


@pytest.mark.parametrize(
    "kill",
    [Kill(1), Kill(2), Kill(1, batch=2), Kill(0, batch=1)],
    ids=["after-epoch-1", "after-epoch-2", "mid-epoch-2", "mid-epoch-1"],
)
def test_resumed_run_equals_uninterrupted_run(kill, uninterrupted, synth_dataset, tmp_path):
    cfg = _config(synth_dataset, tmp_path / "run", tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, callbacks=[kill])
    if kill.epoch > 0:
        assert (cfg.out / "checkpoints" / "last.ckpt").is_file()
    train(cfg.model_copy(update={"resume": True}))
    _assert_same_run(uninterrupted, cfg.out)


def test_resume_keeps_the_plateau_schedule(synth_dataset, tmp_path):
    """seed-cnn's ReduceLROnPlateau steps after last.ckpt is written: resume replays that step."""
    full = train(_config(synth_dataset, tmp_path / "full", tmp_path, model="seed-cnn"))
    cfg = _config(synth_dataset, tmp_path / "run", tmp_path, model="seed-cnn")
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, callbacks=[Kill(2)])
    train(cfg.model_copy(update={"resume": True}))
    _assert_same_run(full.run_dir, cfg.out)
    ckpt = torch.load(cfg.out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 2  # epochs 0 and 1 stepped, none lost


def test_the_rng_states_travel_in_last_ckpt(uninterrupted):
    ckpt = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    rng = ckpt["cxrlab_rng"]
    assert set(rng["global"]) == {"python", "numpy", "torch", "torch_cuda"}
    assert rng["augment"]["device"] == "cpu"
    assert ckpt["CachedDataModule"]["train_generator"]["device"] == "cpu"


_KILLER = """
import os, signal, sys
import lightning as L
from cxrlab.config import load_config
from cxrlab.training import train

data, out, cache, where = sys.argv[1:5]

class SigKill(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if where == "mid-epoch" and trainer.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)

if where == "setup":
    import cxrlab.rundir
    def die(self, classes):
        os.kill(os.getpid(), signal.SIGKILL)
    cxrlab.rundir.RunDir.write_classes = die

cfg = load_config(data=data, out=out, model="small-cnn", image_size=32, epochs=3, batch_size=4,
                  cache_dir=cache, progress=False, seed=0)
train(cfg, callbacks=[SigKill()])
"""


def _sigkilled(synth_dataset, tmp_path, where):
    out = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(_KILLER))
    cache = tmp_path / "cache"
    cmd = [sys.executable, str(script), str(synth_dataset), str(out), str(cache), where]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return _config(synth_dataset, out, tmp_path)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(uninterrupted, synth_dataset, tmp_path):
    cfg = _sigkilled(synth_dataset, tmp_path, "mid-epoch")
    assert not (cfg.out / "checkpoints" / "last.ckpt.tmp").exists()
    assert torch.load(cfg.out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    train(cfg.model_copy(update={"resume": True}))
    _assert_same_run(uninterrupted, cfg.out)


@pytest.mark.slow
@pytest.mark.parametrize("resume", [True, False], ids=["resume", "rerun"])
def test_killed_during_setup_is_resumable_or_rerunnable(
    resume, uninterrupted, synth_dataset, tmp_path
):
    cfg = _sigkilled(synth_dataset, tmp_path, "setup")
    assert (cfg.out / "config.yaml").is_file() and (cfg.out / "split.csv").is_file()
    assert not (cfg.out / "classes.json").exists()
    # Neither --resume nor a plain re-run (no --overwrite) is refused; both train from epoch 0.
    train(cfg.model_copy(update={"resume": resume}))
    _assert_same_run(uninterrupted, cfg.out)


def test_setup_leftovers_with_foreign_files_are_not_removed(synth_dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: small-cnn\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="unfinished run"):
        train(_config(synth_dataset, out, tmp_path))
    assert (out / "notes.txt").read_text() == "mine"


def test_truncated_last_checkpoint_is_named_with_a_way_out(uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    (run / "train_summary.json").unlink()
    last = run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    cfg = load_config(out=run, resume=True, data=_saved_data(run), progress=False)
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    message = str(info.value)
    assert str(last) in message and "damaged" in message
    assert "best.ckpt" in message and "--overwrite" in message


def test_truncated_last_checkpoint_through_the_cli(uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    (run / "train_summary.json").unlink()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 not a whole zip")
    cmd = [sys.executable, "-m", "cxrlab", "train", "--out", str(run), "--resume", "--no-evaluate"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "last.ckpt is damaged" in " ".join((proc.stderr + proc.stdout).split())


def _saved_data(run):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["data"]
