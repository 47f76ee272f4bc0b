"""Image enhancement, letterboxing and lung cropping: pure functions on uint8 arrays.

The enhancements compared by Rahman et al. 2021 (Comput Biol Med 132:104319): histogram
equalisation (``he``), CLAHE (``clahe``), gamma correction (``gamma``), the complement
(``complement``) and the balance contrast enhancement technique (``bcet``, Guo 1991). HE and CLAHE
are OpenCV's (``cv2.equalizeHist``, ``cv2.createCLAHE``); the others are one line of numpy each.

:func:`prepare` is what the one decode path (:func:`cxrlab.data.images.load_for_model`) applies
after reading a file, in this order: lungs crop (bounding box of the segmenter's mask plus a margin,
at the file's resolution) -> resize (stretch to the square, or letterbox: longer side to S, aspect
kept) -> enhancement (on the resized image, before padding, so padding stays black) -> lungs mask
(zero outside the lungs) -> padding. The configuration travels in the decode-cache key
(:func:`preprocess_key`) and in the model's metadata, so prediction applies what training applied.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.config import PreprocessConfig
from cxrlab.errors import ConfigError

logger = logging.getLogger(__name__)

#: Target (min, max, mean) of BCET's output (Guo 1991's usual choice: full range, mean 110).
BCET_TARGET = (0.0, 255.0, 110.0)
#: Bounds of the automatic gamma.
AUTO_GAMMA_RANGE = (0.25, 4.0)


def _check(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected a (H, W) uint8 image, got {gray.dtype} {gray.shape}")
    return gray


@functools.lru_cache(maxsize=1)
def _cv2():
    """OpenCV, single-threaded: the decode loop already spreads images over threads and
    processes, and OpenCV's own pool only adds overhead on small images."""
    import cv2

    cv2.setNumThreads(1)
    return cv2


def equalize_hist(gray: np.ndarray) -> np.ndarray:
    """Global histogram equalisation (``cv2.equalizeHist``): the CDF mapped to 0..255."""
    return _cv2().equalizeHist(np.ascontiguousarray(_check(gray)))


def clahe(gray: np.ndarray, *, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (``cv2.createCLAHE``)."""
    cv2 = _cv2()
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid),) * 2)
    return op.apply(np.ascontiguousarray(_check(gray)))


def auto_gamma(gray: np.ndarray) -> float:
    """The gamma that maps the image's mean intensity to mid-grey: log(0.5) / log(mean / 255).

    Clipped to :data:`AUTO_GAMMA_RANGE`; 1 for a black or white image.
    """
    mean = float(_check(gray).mean()) / 255.0
    if not 0.0 < mean < 1.0:
        return 1.0
    return float(np.clip(math.log(0.5) / math.log(mean), *AUTO_GAMMA_RANGE))


def gamma_correct(gray: np.ndarray, gamma: float | str = "auto") -> np.ndarray:
    """out = round(255 (in / 255) ** gamma); ``gamma="auto"`` uses :func:`auto_gamma`."""
    gray = _check(gray)
    g = auto_gamma(gray) if gamma == "auto" else float(gamma)
    table = np.round(255.0 * (np.arange(256) / 255.0) ** g).astype(np.uint8)
    return table[gray]


def complement(gray: np.ndarray) -> np.ndarray:
    """The negative image, 255 - in."""
    return 255 - _check(gray)


def bcet(gray: np.ndarray, target: tuple[float, float, float] = BCET_TARGET) -> np.ndarray:
    """Balance contrast enhancement (Guo 1991): the parabola y = a (x - b)^2 + c that maps the
    image's min, max and mean to ``target`` = (L, H, E).

    A constant image is returned unchanged; where no such parabola exists (the denominator
    vanishes) a linear min-max stretch is used.
    """
    gray = _check(gray)
    # Statistics from the 256-bin histogram and the parabola as a lookup table: the same numbers
    # as on every pixel, at a fraction of the cost.
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    present = np.flatnonzero(hist)
    lo, hi = float(present[0]), float(present[-1])
    if hi <= lo:
        return gray.copy()
    n = hist.sum()
    e, s = float(hist @ levels) / n, float(hist @ levels**2) / n
    L, H, E = target
    den = 2.0 * (hi * (E - L) - e * (H - L) + lo * (H - E))
    if abs(den) < 1e-9:
        y = (levels - lo) * (H - L) / (hi - lo) + L
    else:
        b = (hi**2 * (E - L) - s * (H - L) + lo**2 * (H - E)) / den
        a = (H - L) / ((hi - lo) * (hi + lo - 2 * b))
        c = L - a * (lo - b) ** 2
        y = a * (levels - b) ** 2 + c
    return np.clip(np.round(y), 0, 255).astype(np.uint8)[gray]


def enhance(gray: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Apply ``config.method`` to a (H, W) uint8 image."""
    method = config.method
    if method == "none":
        return gray
    if method == "he":
        return equalize_hist(gray)
    if method == "clahe":
        return clahe(gray, clip_limit=config.clip_limit, tile_grid=config.tile_grid)
    if method == "gamma":
        return gamma_correct(gray, config.gamma)
    if method == "complement":
        return complement(gray)
    if method == "bcet":
        return bcet(gray)
    raise ConfigError(f"Unknown preprocessing {method!r}.")  # unreachable: validated by config


def _resize(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = shape
    if gray.shape == (h, w):
        return gray
    im = Image.fromarray(gray, mode="L").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def letterbox_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) of an image of ``shape`` scaled so that its longer side is ``size``."""
    h, w = shape
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def pad_center(gray: np.ndarray, size: int) -> np.ndarray:
    """Centre a (h, w) uint8 image (h, w <= size) on a black (size, size) canvas."""
    h, w = gray.shape
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = gray
    return out


def lung_box(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), bottom/right exclusive, of the mask's pixels plus ``margin``
    (a fraction of the box's height and width on each side), clipped to the image; None if empty.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dh, dw = round(margin * (bottom - top)), round(margin * (right - left))
    h, w = mask.shape
    return max(0, top - dh), min(h, bottom + dh), max(0, left - dw), min(w, right + dw)


def prepare(
    gray: np.ndarray,
    size: int,
    config: PreprocessConfig | None = None,
    *,
    lung_mask: np.ndarray | None = None,
) -> np.ndarray:
    """One decoded (H, W) uint8 image -> the model's (size, size) uint8 input under ``config``.

    Args:
        gray: The file's pixels (:func:`cxrlab.data.images.read_gray`).
        size: The model's square side.
        config: The preprocessing (None: stretch, no enhancement).
        lung_mask: (H, W) bool lungs, needed when ``config.lungs`` is not "none". An empty mask
            leaves the whole image (with a warning in the log).
    """
    from cxrlab.data.images import resize_square

    gray = _check(gray)
    if config is None or config.is_identity():
        return resize_square(gray, size)
    mask = None
    if config.lungs != "none":
        if lung_mask is None or lung_mask.shape != gray.shape:
            raise ConfigError(
                f"preprocess.lungs: {config.lungs} needs a lung mask of the image's shape "
                f"{gray.shape}; set preprocess.segmenter."
            )
        box = lung_box(lung_mask, config.lung_margin)
        if box is None:
            logger.warning("The segmenter found no lung; the whole image is used")
        else:
            top, bottom, left, right = box
            if config.lungs == "crop":
                gray = gray[top:bottom, left:right]
            else:
                mask = np.asarray(lung_mask, dtype=bool)
    shape = (size, size) if config.resize == "stretch" else letterbox_shape(gray.shape, size)
    out = enhance(_resize(gray, shape), config)
    if mask is not None:
        small = _resize(mask.astype(np.uint8) * 255, shape) >= 128
        out = np.where(small, out, 0).astype(np.uint8)
    return pad_center(out, size) if out.shape != (size, size) else out


def as_config(value: Any) -> PreprocessConfig | None:
    """A :class:`PreprocessConfig` from one, its dict (model metadata) or None."""
    if value is None or isinstance(value, PreprocessConfig):
        return value
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("{") else {"method": value}
    try:
        config = PreprocessConfig(**{k: v for k, v in value.items() if k != "segmenter_sha1"})
    except Exception as exc:
        raise ConfigError(f"Invalid preprocessing {value!r}: {exc}") from None
    if value.get("segmenter_sha1") and config.lungs != "none":
        _check_segmenter(config, value["segmenter_sha1"])
    return config


@functools.lru_cache(maxsize=16)
def _segmenter_sha1(path: str, mtime: float) -> str:
    from cxrlab.io import file_sha1

    return file_sha1(path)


def _check_segmenter(config: PreprocessConfig, expected: str) -> None:
    """The model's lungs crop must use the very segmenter it was trained with."""
    from cxrlab.segment.model import resolve_segmenter

    ckpt = resolve_segmenter(config.segmenter)
    if _segmenter_sha1(str(ckpt), os.stat(ckpt).st_mtime) != expected:
        raise ConfigError(
            f"The model was trained with lungs: {config.lungs} using the segmenter {ckpt} "
            f"(sha1 {expected[:12]}), but that file has changed since. Its lung crops would "
            "differ from training's; restore that segmenter or retrain the model."
        )


def to_metadata(config: PreprocessConfig | None) -> dict[str, Any]:
    """The dict stored in model metadata (and ONNX metadata_props): the config, plus the
    segmenter checkpoint's sha1 when lungs are cropped or masked."""
    config = config or PreprocessConfig()
    d = config.model_dump(mode="json")
    if config.lungs != "none" and config.segmenter is not None:
        from cxrlab.io import file_sha1
        from cxrlab.segment.model import resolve_segmenter

        d["segmenter"] = str(Path(config.segmenter).resolve())
        d["segmenter_sha1"] = file_sha1(resolve_segmenter(config.segmenter))
    return d


def preprocess_key(config: PreprocessConfig | None) -> str:
    """A canonical text for the decode-cache key; "" for the identity (old keys unchanged)."""
    if config is None or config.is_identity():
        return ""
    d = to_metadata(config)
    d.pop("segmenter", None)  # the checkpoint's content (segmenter_sha1) matters, not its place
    return json.dumps(d, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _segmenter(path: str, mtime: float):
    from cxrlab.segment.model import load_segmenter

    logger.info("Loading lung segmenter %s", path)
    return load_segmenter(path)


def load_config_segmenter(config: PreprocessConfig):
    """The segmenter named by ``config`` (loaded once per process)."""
    from cxrlab.segment.model import resolve_segmenter

    if config.segmenter is None:
        raise ConfigError(
            f"preprocess.lungs: {config.lungs} needs preprocess.segmenter (--segmenter)."
        )
    ckpt = resolve_segmenter(config.segmenter)
    return _segmenter(str(ckpt), os.stat(ckpt).st_mtime)


def lung_mask_of(gray: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The segmenter's (H, W) bool lung mask of one decoded image."""
    from cxrlab.segment.model import segment_grays

    return segment_grays(load_config_segmenter(config), [gray])[0]
