"""The figure of one radiograph under every preprocessing (as the model sees it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cxrlab.config import PreprocessConfig
from cxrlab.io import savefig

#: Panels: title -> preprocessing (lungs panels only with a segmenter).
PANELS: dict[str, dict] = {
    "none": {},
    "HE": {"method": "he"},
    "CLAHE (clip 2, 8x8)": {"method": "clahe"},
    "gamma (auto)": {"method": "gamma"},
    "complement": {"method": "complement"},
    "BCET": {"method": "bcet"},
    "letterbox": {"resize": "letterbox"},
    "lungs: crop": {"lungs": "crop"},
    "lungs: mask": {"lungs": "mask"},
}


def preprocess_figure(
    image: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = 256,
    segmenter: str | os.PathLike | None = None,
) -> Path:
    """Draw ``image`` under every preprocessing at ``size`` px into ``out`` (PNG or PDF)."""
    from cxrlab.data.images import load_for_model

    panels = []
    for title, spec in PANELS.items():
        if "lungs" in spec:
            if segmenter is None:
                continue
            spec = {**spec, "segmenter": segmenter}
        panels.append((title, load_for_model(image, size, PreprocessConfig(**spec))))
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.2 * cols, 2.7 * rows))
    for i, (title, pixels) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(np.asarray(pixels), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{Path(image).name} at {size} px, as the model sees it", fontsize=10)
    fig.tight_layout()
    return savefig(fig, out)
