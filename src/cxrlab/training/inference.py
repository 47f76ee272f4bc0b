"""Apply a run's trained model to its own split manifest: ``predictions/<split>.csv`` frames."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrlab.devices import resolve_device
from cxrlab.errors import DataError, RunDirError

log = logging.getLogger(__name__)


@torch.inference_mode()
def predict_arrays(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class probabilities of uint8 images.

    Args:
        model: A :class:`~cxrlab.models.CxrClassifier` (any device; moved to ``device``).
        images: (N, S, S) uint8.
        batch_size: Images per forward pass.
        device: Where to run (default: CUDA when available).

    Returns:
        (N, K) float64 probabilities (softmax of the logits, computed in float32).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        x = x.to(device, non_blocking=True).unsqueeze(1).float().div_(255)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    k = len(model.meta.classes) if hasattr(model, "meta") else 0
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, k))


def predict_split(
    run_dir: str | os.PathLike,
    split: str,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    checkpoint: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Predict every image of one split of a run with its best checkpoint.

    ``checkpoint`` names another checkpoint file to use instead (for instance the run's
    ``checkpoints/last.ckpt``, the model after the final epoch); the split and cache stay the run's.

    Returns:
        The predictions frame of docs/ARCHITECTURE.md: ``path``, ``label``, ``predicted``, then one
        probability column per class in model output order.
    """
    import yaml

    from cxrlab.data.cache import build_cache
    from cxrlab.models.checkpoint import load_classifier

    run_dir = Path(run_dir)
    split_path = run_dir / "split.csv"
    if not split_path.is_file():
        raise RunDirError(f"{run_dir} has no split.csv; is it a cxrlab run directory?")
    manifest = pd.read_csv(split_path, keep_default_na=False)
    if split not in set(manifest["split"]):
        raise DataError(f"{split_path} has no rows in split {split!r}.")
    model, meta = load_classifier(checkpoint or run_dir)
    config = (
        yaml.safe_load((run_dir / "config.yaml").read_text())
        if (run_dir / "config.yaml").exists()
        else {}
    )
    cache = build_cache(
        manifest["path"].tolist(),
        manifest["sha1"].tolist(),
        meta.image_size,
        cache_dir=config.get("cache_dir"),
        workers=config.get("decode_workers"),
    )
    rows = np.flatnonzero((manifest["split"] == split).to_numpy() & cache.ok)
    probs = predict_arrays(model, cache.images[rows], batch_size=batch_size, device=device)
    classes = list(meta.classes)
    frame = pd.DataFrame(
        {
            "path": manifest["path"].to_numpy()[rows],
            "label": manifest["label"].to_numpy()[rows],
            "predicted": np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
            if len(rows)
            else [],
        }
    )
    for j, name in enumerate(classes):
        frame[name] = probs[:, j]
    log.info("Predicted %d %s images of %s", len(frame), split, run_dir)
    return frame
