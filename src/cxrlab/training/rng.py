"""Random-number states that a resumed training must restore to repeat the uninterrupted run.

A training draws from four kinds of generator: the augmentation ``torch.Generator`` of
:class:`~cxrlab.training.module.CxrLightningModule`, the shuffling/sampling generator of
:class:`~cxrlab.training.data.CachedDataModule`, and the global Python, NumPy and torch (CPU and
CUDA) states (dropout, for one, draws from torch's). Each is saved in every checkpoint and put back
by ``--resume``, so on the CPU a run stopped after any epoch and resumed gives the same history
and weights as one that ran through (docs/reliability.md).

States are stored as tensors and plain Python values only, so a checkpoint stays loadable with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

#: Checkpoint key of the global states (written by the LightningModule).
CHECKPOINT_KEY = "cxrlab_rng"


def collect_global_rng() -> dict[str, Any]:
    """The global Python, NumPy and torch (CPU and every CUDA device) random states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_global_rng(state: dict[str, Any]) -> None:
    """Put back states from :func:`collect_global_rng` (CUDA ones when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("torch_cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def generator_state(generator: torch.Generator | None) -> dict[str, Any] | None:
    """A generator's state with its device type, or None."""
    if generator is None:
        return None
    return {"device": generator.device.type, "state": generator.get_state()}


def apply_generator_state(generator: torch.Generator, saved: dict[str, Any] | None) -> bool:
    """Restore ``saved`` into ``generator`` when it was taken on the same device type."""
    if saved is None or saved["device"] != generator.device.type:
        return False
    generator.set_state(saved["state"])
    return True
