"""The lung segmenter: a U-Net (segmentation-models-pytorch) trained from scratch, its metadata,
its one-file checkpoint and its forward pass.

Input: (N, 1, S, S) float32 in [0, 1] (normalisation inside the model, as for classifiers);
output: (N, 1, S, S) logits of "lung". The checkpoint holds ``state_dict`` and ``cxrlab_segmenter``
(:class:`SegMeta`), so ``segment predict``, the probe and ``lungs: crop|mask`` need nothing else.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab import __version__
from cxrlab.errors import CheckpointError

#: Key of :class:`SegMeta` in a segmenter checkpoint.
SEG_META_KEY = "cxrlab_segmenter"
SEG_FORMAT = 1


@dataclass(frozen=True)
class SegMeta:
    """What is needed to apply a trained segmenter.

    Attributes:
        arch: segmentation-models-pytorch architecture (``Unet``).
        encoder: Its encoder name (built with ``encoder_weights=None``).
        image_size: Square input side; images are stretched to it, masks resized back.
        decoder_channels: U-Net decoder widths.
        threshold: Probability above which a pixel is lung.
        mean: Intensity normalisation inside the model.
        std: Its std.
    """

    arch: str = "Unet"
    encoder: str = "resnet18"
    image_size: int = 128
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    threshold: float = 0.5
    mean: float = 0.5
    std: float = 0.25
    cxrlab_version: str = __version__
    format: int = SEG_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegMeta:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "decoder_channels" in known:
            known["decoder_channels"] = tuple(known["decoder_channels"])
        return cls(**known)


def build_segmenter(meta: SegMeta):
    """A fresh (untrained, no downloaded weights) segmenter module for ``meta``."""
    import segmentation_models_pytorch as smp
    import torch
    from torch import nn

    net = getattr(smp, meta.arch)(
        encoder_name=meta.encoder,
        encoder_weights=None,
        in_channels=1,
        classes=1,
        decoder_channels=tuple(meta.decoder_channels),
    )

    class LungSegmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = net
            self.meta = meta
            self.register_buffer("mean", torch.tensor(meta.mean), persistent=False)
            self.register_buffer("std", torch.tensor(meta.std), persistent=False)

        def forward(self, x):
            return self.network((x - self.mean) / self.std)

    return LungSegmenter()


def save_segmenter(model, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write weights and metadata into one checkpoint, atomically."""
    import torch

    from cxrlab.io import atomic_path

    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        SEG_META_KEY: model.meta.to_dict(),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def resolve_segmenter(path: str | os.PathLike) -> Path:
    """A segmenter run directory (its best checkpoint) or a checkpoint file."""
    from cxrlab.rundir import RunDir

    path = Path(path)
    if path.is_dir():
        ckpt = RunDir(path).best_checkpoint
        if ckpt.is_file():
            return ckpt
        raise CheckpointError(
            f"--segmenter {path} holds no {ckpt.relative_to(path)}; pass the --out folder of "
            "`cxrlab segment train` or its checkpoint file."
        )
    if not path.is_file():
        raise CheckpointError(
            f"--segmenter {path} does not exist; pass the --out folder of `cxrlab segment train`."
        )
    return path


def load_segmenter(path: str | os.PathLike, *, device: str = "cpu"):
    """Load a segmenter (eval mode) from a run directory or checkpoint."""
    import torch

    ckpt_path = resolve_segmenter(path)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"--segmenter {ckpt_path} could not be read ({type(exc).__name__}); the file may be "
            "truncated. Train it again with `cxrlab segment train`."
        ) from None
    if not isinstance(ckpt, dict) or SEG_META_KEY not in ckpt:
        raise CheckpointError(
            f"--segmenter {ckpt_path} is not a cxrlab segmenter checkpoint (no {SEG_META_KEY!r}); "
            "classifier checkpoints cannot segment. Use the output of `cxrlab segment train`."
        )
    meta = SegMeta.from_dict(ckpt[SEG_META_KEY])
    model = build_segmenter(meta)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def lung_probabilities(model, images: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """(N, S, S) uint8 at the segmenter's size -> (N, S, S) float32 lung probabilities."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = x.to(device)[:, None].float() / 255.0
            out.append(torch.sigmoid(model(x))[:, 0].float().cpu().numpy())
    size = int(model.meta.image_size)
    return np.concatenate(out) if out else np.zeros((0, size, size), np.float32)


def segment_grays(model, grays: list[np.ndarray]) -> list[np.ndarray]:
    """Lung masks of full-size (H, W) uint8 images: (H, W) bool each, at each image's size."""
    import torch
    import torch.nn.functional as F

    from cxrlab.data.images import resize_square

    size = int(model.meta.image_size)
    if not grays:
        return []
    small = np.stack([resize_square(g, size) for g in grays])
    probs = lung_probabilities(model, small)
    masks = []
    for g, p in zip(grays, probs, strict=True):
        up = F.interpolate(torch.from_numpy(p)[None, None], size=g.shape, mode="bilinear")
        masks.append(up[0, 0].numpy() > model.meta.threshold)
    return masks


def dice_iou(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None):
    """Dice and IoU of two boolean masks (pixels where ``valid`` is False are left out).

    Both empty: 1.0 (nothing to find, nothing found).
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if valid is not None:
        v = np.asarray(valid, bool)
        pred, truth = pred & v, truth & v
    inter = np.count_nonzero(pred & truth)
    total = np.count_nonzero(pred) + np.count_nonzero(truth)
    union = np.count_nonzero(pred | truth)
    if total == 0:
        return 1.0, 1.0
    return 2.0 * inter / total, inter / union


def masks_for_files(model, paths, size: int) -> list[np.ndarray | None]:
    """The segmenter's lung masks of image files on a model's (size, size) grid (stretched like
    the image); None where a file cannot be read."""
    from cxrlab.data.images import read_gray, resize_square
    from cxrlab.errors import CxrlabError

    out: list[np.ndarray | None] = []
    for path in paths:
        try:
            gray = read_gray(path, max_side=max(4 * size, 1024))
        except CxrlabError:
            out.append(None)
            continue
        mask = segment_grays(model, [gray])[0]
        small = resize_square(mask.astype(np.uint8) * 255, size) >= 128
        out.append(small if small.any() else None)
    return out
