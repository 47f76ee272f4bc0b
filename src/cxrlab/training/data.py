"""Batches straight from the in-memory uint8 cache: no per-image decode, no worker processes.

Each batch is gathered with one fancy-indexing call (``__getitems__``) and travels to the device as
uint8 (4x less traffic than float32); conversion and augmentation happen there (see
:class:`~cxrlab.training.module.CxrLightningModule`).
"""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from cxrlab.training.rng import apply_generator_state, generator_state

logger = logging.getLogger(__name__)


def balanced_class_weights(labels: np.ndarray, k: int) -> np.ndarray:
    """Loss weights N / (K * n_c) from training label counts, (K,) float (scikit-learn's
    ``compute_class_weight("balanced")``); 0 for a class with no training image."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, counts.sum() / (k * np.maximum(counts, 1)), 0.0)
    return weights


def balanced_sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample draw weights 1 / n_class, so every class is drawn equally often on average."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


class CachedImages(Dataset):
    """Some rows of an in-memory uint8 image tensor, with integer labels.

    ``dataset[i]`` gives ``((S, S) uint8 tensor, label)``; ``dataset.__getitems__(indices)`` gives
    the whole batch as ``((B, S, S) uint8, (B,) int64)`` in one gather. Datasets of one split
    manifest share the same image tensor (no per-split copy).
    """

    def __init__(self, images: torch.Tensor, rows: np.ndarray, labels: np.ndarray):
        self.images = images
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[self.rows[i]], self.labels[i]

    def __getitems__(self, indices: list[int]):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[self.rows[idx]], self.labels[idx]


def _already_collated(batch):
    return batch


class CachedDataModule(L.LightningDataModule):
    """Train/val/test loaders over cached images.

    Args:
        images: (N, S, S) uint8 in-memory array of every image in the split manifest (shared,
            not copied, when already contiguous).
        splits: Split name per row of ``images`` ("train", "val", "test", or other to skip).
        labels: Integer class per row.
        batch_size: Batch size per device.
        seed: Seeds the shuffling generator.
        pin_memory: Pin batches for asynchronous host-to-device copies (CUDA).
        sampler: ``"shuffle"`` (each training image once per epoch) or ``"balanced"`` (draws with
            replacement, weight 1 / class count, as many draws per epoch as training images).
    """

    def __init__(
        self,
        images,
        splits,
        labels,
        *,
        batch_size: int,
        seed: int,
        pin_memory: bool,
        sampler: Literal["shuffle", "balanced"] = "shuffle",
    ):
        super().__init__()
        splits = np.asarray(splits)
        labels = np.asarray(labels)
        shared = torch.from_numpy(np.ascontiguousarray(images))
        self.datasets = {
            name: CachedImages(shared, np.flatnonzero(splits == name), labels[splits == name])
            for name in ("train", "val", "test")
        }
        self.batch_size = batch_size
        self.seed = seed
        self.pin_memory = pin_memory
        if sampler not in ("shuffle", "balanced"):
            raise ValueError(f"sampler must be 'shuffle' or 'balanced', got {sampler!r}.")
        self.sampler = sampler
        self._train_generator: torch.Generator | None = None
        self._resumed_generator: dict | None = None

    # -- resume: the shuffling generator's state travels in the checkpoint ------------------------
    def state_dict(self) -> dict:
        return {"train_generator": generator_state(self._train_generator)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resumed_generator = state_dict.get("train_generator")

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        if name == "train":
            apply_generator_state(generator, self._resumed_generator)
            self._train_generator = generator
        dataset = self.datasets[name]
        sampler = None
        if shuffle and self.sampler == "balanced" and len(dataset):
            weights = balanced_sample_weights(dataset.labels.numpy())
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double),
                num_samples=len(dataset),
                replacement=True,
                generator=generator,
            )
            shuffle = False
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=(shuffle or sampler is not None) and len(dataset) > self.batch_size,
            num_workers=0,
            pin_memory=self.pin_memory,
            collate_fn=_already_collated,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
