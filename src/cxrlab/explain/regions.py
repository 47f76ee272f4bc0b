"""Image regions the shortcut probes keep or black out: lung masks and their documented fallbacks.

Masks are brought to the model's grid exactly as images are
(:func:`cxrlab.data.images.resize_square`, a stretch with bilinear filtering) and thresholded at
128. Where a dataset has no lung masks, :func:`central_lung_region` stands in for them: two
ellipses covering the typical lung fields of a frontal (PA/AP) radiograph, centred at 31 % and
69 % of the width and 48 % of the height, with semi-axes of 17 % of the width and 34 % of the
height (so they span x 14-48 % and 52-86 %, y 14-82 %). :func:`border_frame` is the outer 12 % of
the side on every edge, where burnt-in text, markers, collimation edges and scanner borders live.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from cxrlab.data.images import read_gray, resize_square

logger = logging.getLogger(__name__)

#: Fallback lung fields: (centre x, centre y, semi-axis x, semi-axis y) as fractions of the side.
CENTRAL_LUNG_ELLIPSES: tuple[tuple[float, float, float, float], ...] = (
    (0.31, 0.48, 0.17, 0.34),
    (0.69, 0.48, 0.17, 0.34),
)
#: Width of the border frame kept by the border-only probe, as a fraction of the side.
BORDER_FRACTION = 0.12
#: Mask pixels at or above this value (after resizing) count as lung.
MASK_THRESHOLD = 128


def central_lung_region(size: int) -> np.ndarray:
    """The fallback lung region for images without masks.

    Args:
        size: Side of the square grid in pixels.

    Returns:
        (size, size) bool, True inside either ellipse of :data:`CENTRAL_LUNG_ELLIPSES`.
    """
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    region = np.zeros((size, size), dtype=bool)
    for cx, cy, ax, ay in CENTRAL_LUNG_ELLIPSES:
        region |= ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
    return region


def border_frame(size: int, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """The outer frame of a square grid.

    Args:
        size: Side in pixels.
        fraction: Frame width as a fraction of the side (rounded, at least one pixel).

    Returns:
        (size, size) bool, True within ``round(fraction * size)`` pixels of any edge.
    """
    if not 0 < fraction < 0.5:
        raise ValueError(f"fraction must be in (0, 0.5); got {fraction}.")
    width = max(1, round(fraction * size))
    frame = np.zeros((size, size), dtype=bool)
    frame[:width, :] = frame[-width:, :] = True
    frame[:, :width] = frame[:, -width:] = True
    return frame


def load_mask(
    path: str | os.PathLike,
    size: int,
    *,
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a lung mask and bring it to the model's (size, size) grid as the image was.

    Args:
        path: Mask image, lungs bright (255) on black (any format
            :func:`~cxrlab.data.images.read_gray` reads).
        size: Side of the model's grid.
        image_shape: (height, width) of the image the mask belongs to. A mask of another size or
            aspect is still resized to the grid (both are stretched to a square), with a warning,
            since its outline may then not match the image's lungs.

    Returns:
        (size, size) bool, True inside the lungs (resized value >= 128).

    Raises:
        ImageReadError: The mask file is missing or cannot be decoded.
    """
    mask, raw_shape = read_mask(path, size)
    problem = shape_mismatch(raw_shape, image_shape)
    if problem:
        warnings.warn(
            f"Lung mask {path} {problem}; it was resized to the model's grid like the image, but "
            "check that the mask belongs to this image.",
            stacklevel=2,
        )
    return mask


def read_mask(path: str | os.PathLike, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_mask` without the check: ``(mask (size, size) bool, original (H, W))``."""
    gray = read_gray(path)
    return resize_square(gray, size) >= MASK_THRESHOLD, gray.shape


def shape_mismatch(mask_shape: tuple[int, int], image_shape: tuple[int, int] | None) -> str | None:
    """Describe how a mask's (H, W) differs from its image's, or None when they match."""
    if image_shape is None:
        return None
    h, w = (int(v) for v in mask_shape)
    ih, iw = (int(v) for v in image_shape)
    if (h, w) == (ih, iw):
        return None
    aspect = " and aspect" if abs(h / w - ih / iw) > 1e-3 else ""
    return f"is {w}x{h} but its image is {iw}x{ih} (another size{aspect})"
