"""Decode one image file to 8-bit grayscale, whatever its PNG/JPEG/TIFF flavour.

RGB(A), palette, 16-bit and 32-bit images are converted, not rejected. Anything that cannot be
decoded raises :class:`~cxrlab.errors.ImageReadError` naming the file and the reason, so a folder of
20,000 files reports its few bad ones by path instead of dying inside PIL.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrlab.errors import CheckpointError, ConfigError, CxrlabError, ImageReadError

logger = logging.getLogger(__name__)

#: Suffixes treated as raster images when scanning folders.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

#: Folder names that hold lung masks, not radiographs (the release layout's ``<Class>/masks/``).
MASK_DIRS = frozenset({"masks", "mask"})

# Above this many pixels, decoding is done with PIL's draft/reduce to bound memory.
_MAX_PIXELS = 4096 * 4096


def _to_gray_array(im: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to a (H, W) uint8 array."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.uint8)
        return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    if mode != "L":
        im = im.convert("L")
    return np.asarray(im, dtype=np.uint8)


#: EXIF Orientation (tag 0x0112) -> the transpose that shows the image upright (as viewers do;
#: the table of PIL's ``ImageOps.exif_transpose``). 1 (or no tag) means stored upright.
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(im: Image.Image) -> int:
    """The EXIF Orientation of an opened image (1 when absent or unreadable).

    :func:`read_gray` applies it, so a JPEG stored sideways with a rotation tag is decoded the way
    every viewer shows it, for training, prediction and the web page alike; the dataset scan
    records the files it turned (problem kind ``exif_oriented``).
    """
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block: decode as stored
        return 1
    return value if value in _EXIF_TRANSPOSE else 1


def check_readable_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path; raise ImageReadError if it is missing or empty."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        what = "broken symbolic link" if path.is_symlink() else "file does not exist"
        raise ImageReadError(path, what) from None
    except OSError as exc:  # ELOOP: a symbolic-link loop; EACCES on a folder above
        raise ImageReadError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file (a folder, device or pipe)")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:  # EACCES: no read permission
        raise ImageReadError(path, f"cannot read the file ({exc.strerror or exc})") from None
    return path


def read_gray(path: str | os.PathLike, *, max_side: int | None = None) -> np.ndarray:
    """Read an image file as 8-bit grayscale.

    Args:
        path: A PNG, JPEG, TIFF or BMP file, or a DICOM file (``.dcm``/``.dicom`` suffix or the
            DICM preamble), which :func:`cxrlab.data.dicom.read_dicom_gray` decodes.
        max_side: If given, images larger than this are reduced while decoding (JPEG draft mode,
            PIL ``reduce``) so that a 10,000 x 10,000 file never needs its full size in memory.
            Files between PIL's decompression-bomb warning and error limits are then accepted.

    Returns:
        (H, W) uint8 array.

    Raises:
        ImageReadError: The file is missing, empty, not an image, truncated or corrupt.
    """
    path = check_readable_file(path)
    from cxrlab.data.dicom import is_dicom

    if is_dicom(path):
        from cxrlab.data.dicom import read_dicom_gray

        return read_dicom_gray(path, max_side=max_side)
    try:
        with warnings.catch_warnings():
            # With max_side the image is reduced, so only PIL's hard limit (DecompressionBombError,
            # twice the warning's pixel count) refuses it.
            action = "ignore" if max_side is not None else "error"
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            with Image.open(path) as im:
                orientation = exif_orientation(im)
                if max_side is not None and max(im.size) > max_side:
                    im.draft("L", (max_side, max_side))
                    factor = max(1, max(im.size) // max_side)
                    if factor > 1:
                        im = im.reduce(factor)
                elif im.width * im.height > _MAX_PIXELS * 4:
                    raise ImageReadError(
                        path, f"image is {im.width}x{im.height}; too large to decode in full"
                    )
                im.load()
                if orientation in _EXIF_TRANSPOSE:
                    im = im.transpose(_EXIF_TRANSPOSE[orientation])
                return _to_gray_array(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file PIL can identify") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, f"image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"truncated or corrupt image ({exc})") from None


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a (H, W) uint8 image to (size, size) uint8 with antialiased bilinear filtering.

    Non-square images are stretched, not cropped: the database's images are square, and
    cropping could cut off lung apices.
    """
    if gray.shape == (size, size):
        return gray
    im = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def load_for_model(path: str | os.PathLike, size: int, preprocess=None) -> np.ndarray:
    """Read ``path`` and bring it to the model's (size, size) uint8 grid.

    ``preprocess`` (a :class:`cxrlab.config.PreprocessConfig`, its metadata dict, or None for the
    plain stretch) is applied by :func:`cxrlab.data.preprocess.prepare`: the same for training
    (the cache), ``predict``, explanations, probes and the web page.
    """
    gray = read_gray(path, max_side=max(size * 4, 1024))
    if preprocess is None:
        return resize_square(gray, size)
    from cxrlab.data.preprocess import as_config, lung_mask_of, prepare

    config = as_config(preprocess)
    mask = lung_mask_of(gray, config) if config.lungs != "none" else None
    return prepare(gray, size, config, lung_mask=mask)


def decode_one(
    path: str | os.PathLike, size: int, preprocess=None
) -> tuple[np.ndarray | None, str]:
    """``(load_for_model(path, size, preprocess), "")``, or ``(None, reason)`` when the file
    cannot be used.

    The one error policy of every decode loop: a bad file (missing, empty, not an image, truncated,
    a DICOM without pixels, too large, or a decoder bug on this one file) gives its reason and
    never stops the files around it.
    """
    try:
        return load_for_model(path, size, preprocess), ""
    except (ConfigError, CheckpointError):
        raise  # a wrong option or segmenter is the run's problem, not this file's
    except CxrlabError as exc:
        return None, getattr(exc, "reason", None) or str(exc)
    except MemoryError:
        return None, "not enough memory to decode this image"
    except Exception as exc:  # a decoder bug on one file must not end a 100k-file run
        logger.debug("Unexpected error decoding %s", path, exc_info=True)
        return None, f"could not decode ({type(exc).__name__}: {exc})"


@dataclass
class Decoded:
    """Images decoded by :func:`decode_many`.

    Attributes:
        images: (N, S, S) uint8; rows that failed are zero.
        ok: (N,) bool, False where a file could not be decoded.
        errors: Row index -> reason, for the rows that failed.
    """

    images: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]


def decode_many(
    paths: Sequence[str | os.PathLike],
    size: int,
    *,
    workers: int | None = None,
    out: np.ndarray | None = None,
    preprocess=None,
) -> Decoded:
    """Decode many files for the model, in threads: the one decode loop of cxrlab.

    The decode cache (per worker process), ``cxrlab predict`` (per batch), explanations and
    probes, and the web upload all decode through here, with :func:`decode_one`'s error policy.

    Args:
        paths: Image files (PNG, JPEG, TIFF, BMP, DICOM).
        size: Side of the model's square input.
        workers: Decoding threads (default: up to 4, one per CPU; 1 decodes in this thread).
        out: Optional (N, size, size) uint8 array (e.g. a memmap) to decode into.
        preprocess: The model's preprocessing (:func:`load_for_model`); None: plain stretch.

    Returns:
        A :class:`Decoded`; the caller decides whether failed rows are skipped or fatal.
    """
    n = len(paths)
    images = np.zeros((n, size, size), dtype=np.uint8) if out is None else out
    ok = np.ones(n, dtype=bool)
    errors: dict[int, str] = {}
    if preprocess is not None:  # validated once per call, not once per image
        from cxrlab.data.preprocess import as_config

        preprocess = as_config(preprocess)
        preprocess = None if preprocess.is_identity() else preprocess

    def one(i: int) -> None:
        image, reason = decode_one(paths[i], size, preprocess)
        if image is None:
            ok[i] = False
            errors[i] = reason
            images[i] = 0
        else:
            images[i] = image

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    if workers == 1 or n <= 1:
        for i in range(n):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxrlab-decode") as pool:
            list(pool.map(one, range(n)))
    return Decoded(images, ok, dict(sorted(errors.items())))
