"""Image/mask pairs for the lung segmenter: discovery, checks and loading.

Two layouts are read: a folder with ``images/`` and ``masks/`` (and optionally ``ignore/``, as
``../shared/data/lung-masks``), and the COVID-19 Radiography Database's ``<Class>/images/`` +
``<Class>/masks/``. A mask is paired with the image of the same stem. Every pair is checked
before training: the mask exists, has the image's aspect ratio (a mask of the same shape at
another resolution, as the database's 256 px masks for 299 px images, is resized), is binary
(0 and 255, or 0 and 1) and is not empty. A bad pair stops the run with one paragraph naming the
file(s): a segmenter trained on misaligned masks would be quietly wrong.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrlab.data.images import IMAGE_SUFFIXES, MASK_DIRS, read_gray
from cxrlab.errors import DataError

logger = logging.getLogger(__name__)

#: Fraction of mask pixels allowed strictly between 0 and the top value (resampling edges)
#: before a mask is refused as not binary.
NON_BINARY_TOLERANCE = 0.01


@dataclass(frozen=True)
class Pair:
    """One image and its lung mask.

    Attributes:
        image: The radiograph.
        mask: Its lung mask (same stem).
        group: Patient or image id; pairs of one group never straddle splits.
        ignore: Optional mask of pixels left out of the loss and the metrics.
    """

    image: Path
    mask: Path
    group: str
    ignore: Path | None = None


def _images_in(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def _pair_folders(root: Path) -> list[tuple[Path, Path]]:
    """(images folder, masks folder) pairs under ``root``."""
    found = []
    for base in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        masks = next((base / m for m in sorted(MASK_DIRS) if (base / m).is_dir()), None)
        if masks is not None and (base / "images").is_dir():
            found.append((base / "images", masks))
    return found


def find_pairs(root: str | os.PathLike) -> list[Pair]:
    """All image/mask pairs under ``root``, checked for missing masks.

    Raises:
        DataError: No ``images/`` + ``masks/`` folders, or images without a mask (or masks
            without an image), named.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root} is not a folder of image/mask pairs.")
    folders = _pair_folders(root)
    if not folders:
        raise DataError(
            f"--data {root} holds no images/ and masks/ folders (expected DIR/images/ + "
            "DIR/masks/, or the database's <Class>/images/ + <Class>/masks/). Point --data at "
            "a folder of image/mask pairs with the same file stems."
        )
    groups: dict[str, str] = {}
    pairs_csv = root / "pairs.csv"
    if pairs_csv.is_file():
        table = pd.read_csv(pairs_csv, dtype=str, keep_default_na=False)
        if {"file", "patientid"} <= set(table.columns):
            groups = {
                Path(f).stem: f"patient:{p}"
                for f, p in zip(table.file, table.patientid, strict=True)
            }
    pairs: list[Pair] = []
    for images_dir, masks_dir in folders:
        images, masks = _images_in(images_dir), _images_in(masks_dir)
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            parts = []
            if no_mask:
                parts.append(
                    f"{len(no_mask)} image(s) in {images_dir} have no mask in {masks_dir} "
                    f"(e.g. {images[no_mask[0]].name})"
                )
            if no_image:
                parts.append(
                    f"{len(no_image)} mask(s) in {masks_dir} have no image (e.g. "
                    f"{masks[no_image[0]].name})"
                )
            raise DataError(
                "Masks do not match their images: " + "; ".join(parts) + ". Every image needs a "
                "mask with the same file stem; remove the unpaired files or fix their names."
            )
        ignore_dir = images_dir.parent / "ignore"
        ignores = _images_in(ignore_dir) if ignore_dir.is_dir() else {}
        for stem, image in images.items():
            group = groups.get(stem, f"{images_dir.parent.name}/{stem}")
            pairs.append(Pair(image, masks[stem], group, ignores.get(stem)))
    if len(pairs) < 3:
        raise DataError(f"--data {root} holds {len(pairs)} image/mask pair(s); at least 3 needed.")
    return pairs


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a lung mask as (H, W) bool, checked to be binary and not empty.

    Args:
        path: A mask image: 0 outside the lungs, 255 (or 1) inside.
        shape: The image's (H, W); a mask of the same aspect ratio at another resolution is
            resized (nearest neighbour) to it, another aspect ratio is refused.

    Raises:
        DataError: The mask is not binary, is empty, or does not fit the image.
    """
    path = Path(path)
    raw = read_gray(path)
    top = 1 if raw.max() == 1 else 255
    between = np.count_nonzero((raw != 0) & (raw != top)) / raw.size
    if between > NON_BINARY_TOLERANCE:
        raise DataError(
            f"Mask {path} is not binary: {between:.1%} of its pixels are neither 0 nor {top} "
            f"(values {int(raw.min())}..{int(raw.max())}). Lung masks must be 0 outside and 255 "
            "(or 1) inside; threshold it (e.g. at 128) and save it as PNG, not JPEG."
        )
    mask = raw >= (top + 1) // 2
    if not mask.any():
        raise DataError(
            f"Mask {path} is empty (no lung pixel). A segmenter cannot learn from it and Dice is "
            "undefined on it; remove the pair or draw the mask."
        )
    if shape is not None and mask.shape != tuple(shape):
        h, w = shape
        mh, mw = mask.shape
        if abs(mh / mw - h / w) > 0.02:
            raise DataError(
                f"Mask {path} is {mw}x{mh} but its image is {w}x{h}: the aspect ratios differ, so "
                "the mask cannot be aligned with the image. Give each image the mask drawn on it."
            )
        im = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
        mask = np.asarray(im) >= 128
    return mask


def load_pair(pair: Pair, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pair at (size, size): image uint8, mask uint8 (0/1), valid uint8 (0 where ignored).

    The image is stretched to the square, as :func:`cxrlab.data.images.resize_square` does for
    the classifier; the mask follows (bilinear, then thresholded at one half).
    """
    from cxrlab.data.images import resize_square

    gray = read_gray(pair.image)
    mask = read_mask(pair.mask, gray.shape)
    image = resize_square(gray, size)
    small = resize_square(mask.astype(np.uint8) * 255, size) >= 128
    valid = np.ones((size, size), dtype=np.uint8)
    if pair.ignore is not None:
        ign = resize_square(read_gray(pair.ignore), size) >= 128
        valid[ign] = 0
    return image, small.astype(np.uint8), valid


def split_pairs(
    pairs: list[Pair], *, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> dict[str, list[int]]:
    """Split pair indices into train/val/test by group (patient), reproducibly."""
    groups = sorted({p.group for p in pairs})
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_test = max(1, round(test * len(order)))
    n_val = max(1, round(val * len(order)))
    which = {g: "test" for g in order[:n_test]}
    which.update({g: "val" for g in order[n_test : n_test + n_val]})
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, p in enumerate(pairs):
        out[which.get(p.group, "train")].append(i)
    if not out["train"]:
        raise DataError(f"Only {len(groups)} groups: too few to split into train/val/test.")
    return out
