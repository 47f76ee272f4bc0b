"""Callbacks: per-epoch history CSV, checkpoints written atomically, weight EMA, progress bar."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, WeightAveraging
from torch import Tensor

from cxrlab.io import write_csv


class AtomicModelCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose files appear whole: written to a temporary name, then renamed."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class WeightEMA(WeightAveraging):
    """Exponential moving average of the weights (and BatchNorm statistics), with warm-up.

    Lightning's :class:`WeightAveraging` keeps the average, validates with it (so the best
    checkpoint is chosen on the averaged weights) and writes it as the checkpoint's
    ``state_dict``; the raw weights travel alongside for ``--resume``. The effective decay after
    ``n`` updates is ``min(decay, (1 + n) / (10 + n))``, as in timm's ``ModelEmaV3``: early on the
    average follows the weights closely instead of remembering the random initialisation, which
    matters for short runs of a few hundred steps.
    """

    def __init__(self, decay: float):
        self.decay = decay
        super().__init__(use_buffers=True, avg_fn=self._average)

    def _average(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        n = float(num_averaged)
        decay = min(self.decay, (1 + n) / (10 + n))
        return averaged + (current - averaged) * (1 - decay)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None  # after every optimiser step


class HistoryCSV(L.Callback):
    """Appends one row per epoch to ``history.csv``: losses, validation metrics, LR, images/s."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.exists():
            self.rows = pd.read_csv(self.path).to_dict("records")
        self._start = 0.0
        self._seen = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._seen += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._start
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        row = {
            "epoch": trainer.current_epoch,
            "train_loss": metrics.get("train_loss"),
            "val_loss": metrics.get("val_loss"),
            "val_acc": metrics.get("val_acc"),
            "val_f1": metrics.get("val_f1"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "epoch_seconds": seconds,
            "train_images_per_s": self._seen * trainer.world_size / seconds if seconds else None,
        }
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            write_csv(self.path, pd.DataFrame(self.rows))


class EpochProgressBar(RichProgressBar):
    """Lightning's Rich progress bar counting epochs from 1: "Epoch 3/3" in the last of three.

    (Lightning's own shows the 0-based index over ``max_epochs - 1``: "Epoch 2/2".)
    """

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"
        return description
