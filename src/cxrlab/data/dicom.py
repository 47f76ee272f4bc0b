"""Decode a DICOM file to 8-bit grayscale the way a radiology viewer would display it.

The display pipeline follows DICOM PS3.3 C.11: stored values -> Modality LUT (or Rescale Slope /
Intercept) -> VOI LUT (or Window Center / Width; min-max of the image when neither is present) ->
MONOCHROME1 inverted, so bone is always bright. 12- and 16-bit data end up in 0-255. Multi-frame
files give their first frame (with a warning); RGB and palette-colour files are converted to
luminance. Anything that cannot be decoded raises :class:`~cxrlab.errors.ImageReadError` naming
the file and, for compressed transfer syntaxes without a decoder, the package that would decode it.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from cxrlab.data.images import check_readable_file
from cxrlab.errors import ImageReadError

logger = logging.getLogger(__name__)

#: Suffixes treated as DICOM when scanning folders (suffix-less files are sniffed instead).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})

# Above this many pixels a frame is refused unless ``max_side`` asks for a reduced decode.
_MAX_PIXELS = 16384 * 16384

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a DICOM file: a ``.dcm``/``.dicom`` suffix or the DICM preamble.

    Files that cannot be opened count as not DICOM (the image reader then reports them).
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom_gray(path: str | os.PathLike, *, max_side: int | None = None) -> np.ndarray:
    """Read a DICOM image as display-ready 8-bit grayscale.

    Args:
        path: A DICOM file (Part 10 with the DICM preamble, or a bare dataset named ``*.dcm``).
        max_side: If given, frames larger than this are block-averaged down by an integer factor
            (as :func:`cxrlab.data.images.read_gray` does for PNG/JPEG) before the LUTs are applied.

    Returns:
        (H, W) uint8 array: 0 is black, 255 white, whatever the photometric interpretation.

    Raises:
        ImageReadError: The file is missing, empty, not DICOM, has no pixel data, uses a
            compressed transfer syntax no installed package decodes, or is corrupt.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = check_readable_file(path)
    other = other_format(path)
    if other is not None:
        raise ImageReadError(
            path,
            f"not a DICOM file: it is {other}, named {path.suffix or 'without a suffix'}; give it "
            "its real suffix (or convert it)",
        )
    force = path.suffix.lower() in DICOM_SUFFIXES
    try:
        # Deferring large elements keeps the pixel data on disk until the frame is decoded.
        ds = pydicom.dcmread(path, force=force, defer_size="1 MB")
    except InvalidDicomError:
        raise ImageReadError(path, "not a DICOM file (no DICM preamble)") from None
    except Exception as exc:  # pydicom raises a zoo of types on corrupt headers
        raise ImageReadError(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from None
    if not any(k in ds for k in _PIXEL_KEYWORDS) and not _has_dicom_identity(ds):
        raise ImageReadError(
            path,
            "not a valid DICOM file: its header holds no DICOM image or object identity (no SOP "
            "Class UID, Modality or pixel data), so it is damaged or not DICOM at all",
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise ImageReadError(
            path,
            "DICOM file has no pixel data (a structured report, presentation state or other "
            "non-image object); pass the image series instead",
        )
    _infer_missing_transfer_syntax(ds)
    try:
        return _to_display(ds, path, max_side)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode this DICOM frame") from None
    except Exception as exc:
        raise ImageReadError(
            path, f"corrupt DICOM pixel data ({type(exc).__name__}: {exc})"
        ) from None


#: Leading bytes of formats that are sometimes named ``.dcm`` by mistake.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
)


def other_format(path: str | os.PathLike) -> str | None:
    """What a supposed DICOM file really is when its first bytes say so ("a PNG image"), else None.

    A DICOM Part 10 file starts with a 128-byte preamble (any bytes) and ``DICM``; such files are
    never reported as another format, even when the preamble happens to match one.
    """
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if len(head) == 132 and head[128:132] == b"DICM":
        return None
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _has_dicom_identity(ds) -> bool:
    """Whether a parsed dataset names what it is (a real object rather than parsed garbage)."""
    meta = getattr(ds, "file_meta", None)
    return any(k in ds for k in ("SOPClassUID", "Modality")) or bool(
        meta is not None and "MediaStorageSOPClassUID" in meta
    )


def _infer_missing_transfer_syntax(ds) -> None:
    """Give a bare dataset (no file meta header) the transfer syntax it was read with.

    pydicom reads such files (``force=True``) by guessing the encoding, but refuses to decode
    their pixels without a (0002,0010) Transfer Syntax UID; the encoding it guessed is that one.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    logger.debug("%s has no file meta header; read as %s", ds.filename, meta.TransferSyntaxUID)


def _to_display(ds, path: Path, max_side: int | None) -> np.ndarray:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise ImageReadError(path, f"DICOM header gives an empty image ({rows}x{cols})")
    if max_side is None and rows * cols > _MAX_PIXELS:
        raise ImageReadError(path, f"image is {cols}x{rows}; too large to decode in full")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        warnings.warn(
            f"{path}: DICOM file holds {frames} frames; using the first one only.",
            stacklevel=3,
        )
    arr = _decode_first_frame(ds, path, frames)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()

    if arr.ndim == 3 or photometric in ("PALETTE COLOR", "RGB") or photometric.startswith("YBR"):
        return _color_to_gray(ds, arr, photometric, max_side)
    arr = _reduce(arr, max_side)
    return _monochrome_to_gray(ds, arr, photometric)


def _decode_first_frame(ds, path: Path, frames: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        # YBR is converted to RGB here (raw=False); only frame 0 is decoded.
        return pixel_array(ds, index=0 if frames > 1 else None)
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        if syntax is not None and syntax.is_compressed:
            raise ImageReadError(path, _missing_decoder(syntax, exc)) from None
        raise


def _missing_decoder(syntax, exc: Exception) -> str:
    from pydicom.pixels import get_decoder

    name = getattr(syntax, "name", str(syntax))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {name} ({syntax}) is not supported by pydicom"
    if decoder.is_available:
        # A decoder exists but failed: corrupt data rather than a missing package.
        return f"compressed pixel data ({name}) could not be decoded: {exc}"
    options = "; ".join(decoder.missing_dependencies) or "no plugin known"
    return (
        f"compressed pixel data in transfer syntax {name} ({syntax}) needs a decoder that is not "
        f"installed. Install one of: {options} (e.g. `pip install pylibjpeg pylibjpeg-libjpeg "
        "pylibjpeg-openjpeg` or `pip install python-gdcm`), or convert the file with "
        "`gdcmconv --raw`"
    )


def _reduce(arr: np.ndarray, max_side: int | None) -> np.ndarray:
    """Block-average (H, W[, C]) by an integer factor so the long side is about ``max_side``."""
    if max_side is None or max(arr.shape[:2]) <= max_side:
        return arr
    factor = max(1, max(arr.shape[:2]) // max_side)
    if factor == 1:
        return arr
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    blocks = arr[: h * factor, : w * factor].reshape(h, factor, w, factor, *arr.shape[2:])
    reduced = blocks.mean(axis=(1, 3), dtype=np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        # Stay in the stored integer domain so LUTs (which index by value) still apply.
        return np.round(reduced).astype(arr.dtype)
    return reduced.astype(arr.dtype)


def _monochrome_to_gray(ds, arr: np.ndarray, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        # Map the LUT's own output range (not its nominal bit depth: many files state 16 bits
        # and fill 12) onto 0-255. Applying the LUT to its input domain lets pydicom parse it.
        entries, first = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor[:2])
        domain = np.arange(first, first + (entries or 65536))
        lut = np.asarray(apply_voi_lut(domain, ds, index=0, prefer_lut=True), dtype=np.float64)
        scaled = _scale(out, float(lut.min()), float(lut.max()))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        scaled = _window(values, center, width, function)
    else:
        values = np.asarray(values, dtype=np.float64)
        scaled = _scale(values, float(values.min()), float(values.max()))
    gray = np.round(scaled).astype(np.uint8)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing of ``values`` onto [0, 255] (float64)."""
    x = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-12)))
    if function == "LINEAR_EXACT":
        width = max(width, 1e-12)
        return np.clip((x - center) / width + 0.5, 0.0, 1.0) * 255.0
    # LINEAR (the default): width must be >= 1; centre and width are offset by 0.5.
    width = max(width, 1.0)
    if width == 1.0:
        return np.where(x <= center - 0.5, 0.0, 255.0)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0) * 255.0


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float64)
    return np.clip((x - lo) * (255.0 / (hi - lo)), 0.0, 255.0)


def _first(value) -> float:
    """First value of a possibly multi-valued DS element (several windows: use the first)."""
    try:
        return float(value[0])
    except (TypeError, IndexError):
        return float(value)


def _color_to_gray(ds, arr: np.ndarray, photometric: str, max_side: int | None) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    arr = _reduce(arr, max_side)
    if arr.ndim == 2:
        rgb = np.asarray(arr, dtype=np.float64)
        gray = rgb
    else:
        rgb = np.asarray(arr[..., :3], dtype=np.float64)
        # ITU-R BT.601 luma, as PIL's convert("L") uses.
        gray = rgb @ np.array([0.299, 0.587, 0.114])
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":
        bits = 16 if float(rgb.max(initial=0)) > 255 else 8
    if bits <= 8:
        return np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.round(_scale(gray, float(gray.min()), float(gray.max()))).astype(np.uint8)
