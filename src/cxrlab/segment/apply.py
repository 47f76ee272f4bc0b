"""Apply a trained lung segmenter to files (masks and overlays) and export it to ONNX."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrlab.errors import ConfigError, CxrlabError
from cxrlab.io import atomic_path, refuse_inside

logger = logging.getLogger(__name__)

#: Overlay colour of the lungs (RGB) and its opacity.
OVERLAY_RGB = (255, 64, 64)
OVERLAY_ALPHA = 0.35
MASKS = "masks"
OVERLAYS = "overlays"


@dataclass
class SegmentFilesResult:
    masks_dir: Path
    overlays_dir: Path | None
    n_ok: int
    seconds: float
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.n_ok / self.seconds if self.seconds > 0 else float("nan")


def overlay_mask(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the radiograph with the lungs tinted and outlined."""
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    tint = np.array(OVERLAY_RGB, dtype=np.float32)
    rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * tint
    edge = mask & ~(
        np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    )
    rgb[edge] = tint
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def predict_files(
    segmenter: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    overlays: bool = True,
    device: str = "cpu",
) -> SegmentFilesResult:
    """Write ``out/masks/<stem>.png`` (0/255 at the image's size) and ``out/overlays/<stem>.png``.

    Files that cannot be read are reported by path, not fatal. Inputs are never written into.
    """
    from cxrlab.data.images import read_gray
    from cxrlab.inference.files import iter_input_files
    from cxrlab.segment.model import load_segmenter, segment_grays

    out = Path(out)
    inputs = [Path(p) for p in files]
    for p in inputs:
        if p.is_dir():
            refuse_inside(out, p, "--out")
    model = load_segmenter(segmenter, device=device)
    masks_dir, overlays_dir = out / MASKS, (out / OVERLAYS if overlays else None)
    masks_dir.mkdir(parents=True, exist_ok=True)
    if overlays_dir is not None:
        overlays_dir.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    n_ok, seconds, seen = 0, 0.0, set()
    for path in iter_input_files(inputs):
        try:
            gray = read_gray(path)
        except CxrlabError as exc:
            errors[str(path)] = getattr(exc, "reason", str(exc))
            continue
        t0 = time.perf_counter()
        mask = segment_grays(model, [gray])[0]
        seconds += time.perf_counter() - t0
        stem = path.stem if path.stem not in seen else f"{path.parent.name}_{path.stem}"
        seen.add(stem)
        _save_png(masks_dir / f"{stem}.png", mask.astype(np.uint8) * 255)
        if overlays_dir is not None:
            _save_png(overlays_dir / f"{stem}.png", overlay_mask(gray, mask))
        n_ok += 1
    logger.info("Segmented %d images (%.1f images/s)", n_ok, n_ok / seconds if seconds else 0)
    return SegmentFilesResult(masks_dir, overlays_dir, n_ok, seconds, errors)


def export_segmenter_onnx(
    segmenter: str | os.PathLike, out: str | os.PathLike, *, tolerance: float = 1e-4
) -> float:
    """Export to ONNX (input ``image`` (N,1,S,S) float32 in [0,1], output ``logits``
    (N,1,S,S)); metadata names the size and threshold. Returns the max probability difference
    between ONNX Runtime and PyTorch on random images (above ``tolerance``: nothing written).
    """
    import json
    import tempfile
    import warnings

    import onnx
    import onnxruntime as ort
    import torch

    from cxrlab.segment.model import load_segmenter

    model = load_segmenter(segmenter)
    size = int(model.meta.image_size)
    example = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="cxrlab-seg-onnx-") as tmp:
        raw = Path(tmp) / "seg.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(
                model, (example,), raw, input_names=["image"], output_names=["logits"],
                dynamic_shapes=({0: batch},), external_data=False, verbose=False,
            )  # fmt: skip
        proto = onnx.load(str(raw))
    for key, value in {
        "cxrlab_segmenter": json.dumps(model.meta.to_dict()),
        "input": f"image: (N,1,{size},{size}) float32 in [0,1]",
        "output": f"logits: (N,1,{size},{size}); lung where sigmoid > {model.meta.threshold}",
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(out)
    with atomic_path(out) as tmp_out:
        onnx.save(proto, str(tmp_out))
        session = ort.InferenceSession(str(tmp_out), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((2, 1, size, size), dtype=np.float32)
        (logits,) = session.run(None, {"image": x})
        with torch.inference_mode():
            ref = torch.sigmoid(model(torch.from_numpy(x))).numpy()
        diff = float(np.abs(1 / (1 + np.exp(-logits)) - ref).max())
        if not diff <= tolerance:
            raise ConfigError(
                f"The exported segmenter disagrees with PyTorch (max probability difference "
                f"{diff:.3g} > {tolerance:g}); {out} was not written."
            )
    return diff
