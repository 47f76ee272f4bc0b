"""The LightningModule: loss, optimiser and schedule per recipe, device-side preprocessing."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from cxrlab.models.checkpoint import META_KEY
from cxrlab.models.classifier import CxrClassifier
from cxrlab.training.augment import augment_batch
from cxrlab.training.recipes import Recipe
from cxrlab.training.rng import (
    CHECKPOINT_KEY,
    apply_generator_state,
    collect_global_rng,
    generator_state,
    restore_global_rng,
)


class CxrLightningModule(L.LightningModule):
    """Trains a :class:`CxrClassifier` on uint8 batches.

    Batches arrive as ``((B, S, S) uint8, (B,) int64)``; :meth:`on_after_batch_transfer` turns them
    into (B, 1, S, S) float in [0, 1] on the device and augments training batches there.
    Validation metrics are torchmetrics objects, so under DDP they are reduced over all ranks.
    ``class_weights`` ((K,) floats, e.g. :func:`~cxrlab.training.data.balanced_class_weights`)
    weight the training loss only; the validation loss stays unweighted so checkpoints and early
    stopping compare the same quantity with and without weighting.
    """

    def __init__(
        self,
        model: CxrClassifier,
        recipe: Recipe,
        *,
        seed: int,
        channels_last: bool,
        class_weights=None,
    ):
        super().__init__()
        weights = None if class_weights is None else torch.as_tensor(class_weights).float()
        self.register_buffer("class_weights", weights, persistent=False)
        self.model = model
        self.recipe = recipe
        self.seed = seed
        self.channels_last = channels_last
        k = len(model.meta.classes)
        self.val_acc = MulticlassAccuracy(num_classes=k, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=k, average="macro")
        self._generator: torch.Generator | None = None
        self._resumed_rng: dict | None = None  # from the checkpoint, put back on_train_start
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    # -- data on the device -------------------------------------------------------------------
    def _augment_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            rank = self.global_rank if self._trainer is not None else 0
            self._generator = torch.Generator(device=device).manual_seed(self.seed * 1000 + rank)
            if self._resumed_rng is not None and self._single_process():
                apply_generator_state(self._generator, self._resumed_rng.get("augment"))
        return self._generator

    def _single_process(self) -> bool:
        # Under DDP only rank 0's states are in the checkpoint: the other ranks keep their seeds.
        return self._trainer is None or self.trainer.world_size == 1

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        x = images.unsqueeze(1).float().div_(255)
        if self.trainer.training:
            x = augment_batch(x, self.recipe.augment, self._augment_generator(x.device))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels

    # -- steps ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(
            logits,
            y,
            weight=None if self.class_weights is None else self.class_weights.to(logits.dtype),
            label_smoothing=self.recipe.label_smoothing,
        )
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y)
        )
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x).float()
        loss = F.cross_entropy(logits, y)
        self.val_acc.update(logits, y)
        self.val_f1.update(logits, y)
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, batch_size=len(y), prog_bar=True)
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=len(y), prog_bar=True)
        self.log("val_f1", self.val_f1, on_epoch=True, batch_size=len(y), prog_bar=True)

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        r = self.recipe
        params = self.model.parameters()
        if r.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay)
        elif r.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        else:
            opt = torch.optim.SGD(
                params, lr=r.lr, momentum=0.9, nesterov=True, weight_decay=r.weight_decay
            )
        if r.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=0.5, patience=10, min_lr=1e-5
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        if r.scheduler == "none":
            return opt
        steps = int(self.trainer.estimated_stepping_batches)
        if r.scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=r.lr,
                total_steps=max(steps, 1),
                pct_start=min(0.3, r.warmup_epochs / max(r.epochs, 1)) or 0.05,
                anneal_strategy="cos",
            )
        else:  # cosine with linear warm-up
            warm = int(steps * r.warmup_epochs / max(r.epochs, 1))
            sched = torch.optim.lr_scheduler.SequentialLR(
                opt,
                [
                    torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, total_iters=max(warm, 1)),
                    torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps - warm, 1)),
                ],
                milestones=[max(warm, 1)],
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints carry the model's metadata ---------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[META_KEY] = self.model.meta.to_dict()
        checkpoint[CHECKPOINT_KEY] = {
            "global": collect_global_rng(),
            "augment": generator_state(self._generator),
            "epoch_monitors": self._epoch_monitors(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_rng = checkpoint.get(CHECKPOINT_KEY)
        if self._resumed_rng is not None:
            self._resumed_rng["epoch"] = checkpoint.get("epoch")
        self._generator = None  # re-created from the saved state at the first training batch

    def on_train_start(self) -> None:
        # Last hook before the first resumed batch: nothing draws from the global RNGs after it.
        if self._resumed_rng is None:
            return
        self._replay_epoch_schedulers(self._resumed_rng)
        if self._single_process():
            restore_global_rng(self._resumed_rng["global"])

    # -- resume: the epoch-end scheduler step the checkpoint was written before -------------------
    def _epoch_monitors(self) -> dict[str, float]:
        """Values of the metrics epoch-interval schedulers monitor (val_loss for plateau)."""
        if self._trainer is None:
            return {}
        metrics = self.trainer.callback_metrics
        names = {c.monitor for c in self.trainer.lr_scheduler_configs if c.monitor}
        return {n: float(metrics[n]) for n in names if n in metrics}

    def _replay_epoch_schedulers(self, saved: dict) -> None:
        """Give epoch-interval schedulers the step of the checkpoint's epoch that they missed.

        last.ckpt is written when validation ends, before Lightning steps epoch-interval
        schedulers (ReduceLROnPlateau with val_loss): their saved state lacks that epoch's step,
        and a resumed fit starts with the next epoch, so without this the plateau counter would
        fall one epoch behind at every resume. The step is replayed only when the scheduler's
        ``last_epoch`` shows it is missing, with the monitored value saved beside the state.
        """
        epoch = saved.get("epoch")
        monitors = saved.get("epoch_monitors") or {}
        if epoch is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if config.interval != "epoch" or getattr(scheduler, "last_epoch", None) != epoch:
                continue
            if (epoch + 1) % config.frequency:
                continue
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if config.monitor in monitors:
                    scheduler.step(monitors[config.monitor])
            else:
                scheduler.step()
