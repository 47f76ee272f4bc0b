"""Read what a scan needs from one image file: content hash, size, mode, decodability, phash.

:func:`probe_file` never raises for a bad file: it returns a :class:`FileProbe` whose ``kind`` says
what is wrong (``"unreadable"``: not even the header; ``"truncated"``: the header is fine but the
pixels do not decode). Raster images (PNG/JPEG/TIFF/BMP) have their header read by PIL, DICOM files
by pydicom; decoding always goes through :func:`cxrlab.data.images.read_gray`, the reader training
and prediction use, so a file the scan accepts with ``decode=True`` is one they can read.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cxrlab.data.dedupe import phash, phash_hex
from cxrlab.data.dicom import DICOM_SUFFIXES, is_dicom
from cxrlab.data.images import exif_orientation, read_gray
from cxrlab.errors import ImageReadError

# Images larger than this side are decoded with PIL's reduction when verifying / hashing.
DECODE_MAX_SIDE = 2048

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class FileProbe:
    """What :func:`probe_file` read from one file.

    Attributes:
        sha1: sha1 of the bytes ("" when not asked for).
        width: Columns.
        height: Rows.
        mode: PIL mode (``"L"``, ``"RGB"``, ``"I;16"``...), or for DICOM
            ``"DICOM <PhotometricInterpretation> <BitsStored>-bit"``.
        phash: Perceptual hash as hex ("" when not asked for).
        has_foreground: Whether any decoded pixel is non-zero (None when not decoded).
        kind: None when the file is fine, else ``"unreadable"`` or ``"truncated"``.
        detail: The reason when ``kind`` is set.
        orientation: EXIF Orientation (1: upright; else decoding turns it, and ``width`` and
            ``height`` are the upright image's).
    """

    sha1: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    phash: str = ""
    has_foreground: bool | None = None
    kind: str | None = None
    detail: str = ""
    orientation: int = 1


def probe_file(path: Path, *, want_sha1: bool, decode: bool, want_phash: bool) -> FileProbe:
    """Read one image file's header (and decode its pixels if asked); never raises for a bad file.

    Args:
        path: An image or DICOM file.
        want_sha1: Hash the file's bytes.
        decode: Decode the pixels with :func:`~cxrlab.data.images.read_gray` (reduced to
            :data:`DECODE_MAX_SIDE`), finding truncated and corrupt files.
        want_phash: Also compute the perceptual hash (implies decoding).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileProbe(kind="unreadable", detail=f"cannot read the file ({exc.strerror or exc})")
    if not data:
        return FileProbe(kind="unreadable", detail="file is empty (0 bytes)")
    sha1 = hashlib.sha1(data).hexdigest() if want_sha1 else ""
    if path.suffix.lower() in DICOM_SUFFIXES or (path.suffix == "" and is_dicom(path)):
        probe = _dicom_header(data, sha1, force=path.suffix.lower() in DICOM_SUFFIXES)
    else:
        probe = _raster_header(data, sha1)
    if probe.kind is not None or not (decode or want_phash):
        return probe
    try:
        gray = read_gray(path, max_side=DECODE_MAX_SIDE)
    except ImageReadError as exc:
        probe.kind = "truncated"
        probe.detail = exc.reason
        return probe
    probe.has_foreground = bool(gray.any())
    if want_phash:
        probe.phash = phash_hex(phash(gray))
    return probe


def map_threads(fn: Callable, items: Sequence, workers: int) -> list:
    """``[fn(x) for x in items]`` on a thread pool (PIL decoding and hashlib release the GIL)."""
    if workers <= 1 or len(items) < 8:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxrlab-scan") as pool:
        return list(pool.map(fn, items, chunksize=16))


def _raster_header(data: bytes, sha1: str) -> FileProbe:
    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = exif_orientation(im)
            width, height = (im.height, im.width) if orientation >= 5 else im.size
            return FileProbe(
                sha1=sha1, width=width, height=height, mode=im.mode, orientation=orientation
            )
    except UnidentifiedImageError:
        return FileProbe(sha1=sha1, kind="unreadable", detail="not an image file PIL can identify")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        return FileProbe(sha1=sha1, kind="unreadable", detail=f"corrupt image header ({exc})")


def _dicom_header(data: bytes, sha1: str, *, force: bool) -> FileProbe:
    import pydicom
    from pydicom.errors import InvalidDicomError

    def bad(detail: str) -> FileProbe:
        return FileProbe(sha1=sha1, kind="unreadable", detail=detail)

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        bits = int(ds.get("BitsStored", 0) or 0)
    except InvalidDicomError:
        return bad("not a DICOM file (no DICM preamble)")
    except Exception as exc:  # pydicom raises a zoo of types on corrupt headers
        return bad(f"corrupt DICOM header ({type(exc).__name__}: {exc})")
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        return bad(
            "DICOM file has no pixel data (a structured report, presentation state or other "
            "non-image object); remove it from the class folder"
        )
    if rows <= 0 or cols <= 0:
        return bad(f"DICOM header gives an empty image ({cols}x{rows})")
    mode = f"DICOM {photometric} {bits}-bit" if bits else f"DICOM {photometric}"
    return FileProbe(sha1=sha1, width=cols, height=rows, mode=mode)
