"""Penultimate features: what the classifier head sees, for probes of what the model encodes.

The features are the input of the network's last :class:`torch.nn.Linear` whose output width is
the number of classes (timm's ``fc`` / ``classifier`` / ``head.fc`` after global pooling, the
seed CNN's 128-d dense block), captured with a forward pre-hook in the same pass that computes
the probabilities, so they are exactly what the logits are computed from.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxrlab.devices import resolve_device
from cxrlab.errors import ConfigError


def classifier_head(model: nn.Module, num_classes: int | None = None) -> nn.Linear:
    """The last ``nn.Linear`` producing ``num_classes`` outputs (default: the model's classes).

    Raises:
        ConfigError: The model has no such layer (its penultimate features cannot be located).
    """
    if num_classes is None:
        num_classes = len(model.meta.classes)
    heads = [
        m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if not heads:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear layer with {num_classes} outputs, so its "
            "penultimate features cannot be located; the source probe needs a linear "
            "classifier head."
        )
    return heads[-1]


@torch.inference_mode()
def predict_with_features(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    features: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities and penultimate features of uint8 images in one pass.

    Args:
        model: A :class:`~cxrlab.models.CxrClassifier` (moved to ``device``, put in eval mode).
        images: (N, S, S) uint8 (scaled to [0, 1] here, as ``load_for_model(...) / 255``).
        batch_size: Images per forward pass.
        device: Where to run (default: CUDA when available). On CUDA the forward pass runs in
            bf16 autocast where supported, as :func:`cxrlab.training.inference.predict_arrays`.
        features: Also capture the penultimate features.

    Returns:
        ``(probs, feats)``: (N, K) float64 softmax probabilities and (N, D) float32 features
        (None when ``features`` is False).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    k = len(model.meta.classes)
    store: list[torch.Tensor] = []
    handle = None
    if features:
        head = classifier_head(model, k)
        handle = head.register_forward_pre_hook(
            lambda _m, args: store.append(args[0].detach().float().flatten(1).cpu())
        )
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
    probs = []
    try:
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = x.to(device).unsqueeze(1).float().div_(255)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(x)
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    finally:
        if handle is not None:
            handle.remove()
    p = np.concatenate(probs).astype(np.float64) if probs else np.zeros((0, k))
    if not features:
        return p, None
    f = torch.cat(store).numpy() if store else np.zeros((0, 0), dtype=np.float32)
    return p, f
