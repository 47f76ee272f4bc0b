"""Apply a trained model to image files and folders, streaming, one row per file.

Folders are walked lazily (sorted, recursive; lung-mask folders such as the release layout's
``<Class>/masks/`` are skipped and counted) and predicted batch by batch, so a folder of 100,000
files never has more than one batch of images in memory; :func:`predict_to_csv` writes rows as they
come into a temporary file that is renamed onto the destination at the end. A file that cannot be
read (not an image, empty, a DICOM without pixel data, ...) gives a row whose ``error`` column
says why; the rest of its batch still runs.

Output columns: ``path`` (absolute), ``predicted``, one probability per class named exactly as the
class in the model's output order, ``error`` (empty when fine), and ``cam`` (the overlay's path)
when CAMs were requested.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.data.dicom import DICOM_SUFFIXES, is_dicom
from cxrlab.data.images import IMAGE_SUFFIXES, MASK_DIRS, decode_many
from cxrlab.errors import ConfigError, DataError
from cxrlab.inference.predictor import Device, Predictor, load_predictor
from cxrlab.io import refuse_inside

logger = logging.getLogger(__name__)

#: File suffixes picked up when walking folders (suffix-less files are sniffed for DICM).
INPUT_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES

#: Columns that are not class probabilities.
RESERVED_COLUMNS = ("path", "predicted", "error", "cam")

#: Progress: ``True`` logs every few batches, ``False`` is silent, a callable receives the number
#: of files done so far after each batch.
Progress = bool | Callable[[int], None]

_LOG_EVERY = 20  # batches between progress log lines


@dataclass(frozen=True)
class PredictSummary:
    """What :func:`predict_to_csv` did.

    Attributes:
        out: The CSV written.
        n_files: Rows written (one per input file).
        n_errors: Rows whose ``error`` is not empty.
        n_mask_files: Files inside lung-mask folders that were skipped, not predicted.
        counts: Files per predicted class, in the model's class order (errors excluded).
        classes: Class names in output order.
        model_name: Architecture name.
        backend: ``"torch"``, ``"onnx"`` or ``"ensemble"``.
        cam_dir: Folder of CAM overlays, if requested.
        tta: Test-time views averaged per image (1: none).
    """

    out: Path
    n_files: int
    n_errors: int
    n_mask_files: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    model_name: str = ""
    backend: str = ""
    cam_dir: Path | None = None
    tta: int = 1


def iter_input_files(
    paths: Iterable[str | os.PathLike], *, skipped: Counter[str] | None = None
) -> Iterator[Path]:
    """Yield the files to predict: given files as they are, folders walked recursively and lazily.

    Inside folders only image suffixes (PNG, JPEG, TIFF, BMP, DICOM) and suffix-less files with the
    DICM preamble are taken; hidden files and folders are skipped, and so are lung-mask folders
    (:data:`~cxrlab.data.images.MASK_DIRS`: a release-layout dataset's ``masks/`` are not X-rays);
    the order is sorted by path, so a rerun writes rows in the same order. Explicitly named files
    are always taken (an unreadable one becomes an error row).

    Args:
        paths: Files and/or folders.
        skipped: If given, ``skipped["mask"]`` counts the image files left out in mask folders.

    Raises:
        DataError: A given path does not exist (checked before anything is yielded).
    """
    paths = [Path(p) for p in paths]
    # A broken link or a link loop given by name becomes an error row, not a lost batch.
    missing = [str(p) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        raise DataError(
            f"Input path(s) do not exist: {', '.join(missing)}. Pass image files or folders."
        )
    skipped = Counter() if skipped is None else skipped
    for path in paths:
        if path.is_dir():
            yield from _walk(path.absolute(), skipped)
        else:
            yield path.absolute()


def _is_input(file: Path) -> bool:
    suffix = file.suffix.lower()
    return suffix in INPUT_SUFFIXES or (suffix == "" and is_dicom(file))


def _walk(folder: Path, skipped: Counter[str]) -> Iterator[Path]:
    """Depth-first walk in sorted name order (files and subfolders interleaved, like ``sorted``).

    Only one folder's listing is held per level; symbolic links to folders are not followed.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        logger.warning("Skipping folder %s: %s", folder, exc)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            if entry.name.lower() in MASK_DIRS:
                skipped["mask"] += sum(1 for _ in _walk(Path(entry.path), Counter()))
                continue
            yield from _walk(Path(entry.path), skipped)
            continue
        try:
            is_file = entry.is_file()
        except OSError:  # a symbolic-link loop: is_file() follows it and fails
            is_file = entry.is_symlink()
        if is_file or (entry.is_symlink() and not os.path.exists(entry.path)):
            file = Path(entry.path)
            # Image-named links that lead nowhere become error rows (the reader says why).
            if file.suffix.lower() in INPUT_SUFFIXES or (is_file and _is_input(file)):
                yield file


def count_input_files(paths: Iterable[str | os.PathLike]) -> int:
    """Number of files :func:`iter_input_files` yields (a walk over names; nothing is decoded)."""
    return sum(1 for _ in iter_input_files(paths))


def iter_predictions(
    model_or_path: Any,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int = 32,
    device: Device | str | None = None,
    cam_dir: str | os.PathLike | None = None,
    progress: Progress = True,
    workers: int | None = None,
    skipped: Counter[str] | None = None,
    tta: int = 1,
) -> Iterator[dict[str, Any]]:
    """Predict files batch by batch, yielding one row (a dict) per file in input order.

    Args:
        model_or_path: A run directory, ``.ckpt``, ``.onnx``, classifier or predictor.
        paths: Files and/or folders (see :func:`iter_input_files`).
        batch_size: Files decoded and predicted together.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (see :func:`.runtime.load_predictor`).
        cam_dir: Write a Grad-CAM overlay PNG per image into this folder (PyTorch models only).
        progress: ``True`` logs progress, ``False`` is silent, a callable gets the files done.
        workers: Threads decoding images (``None``: up to 4, one per CPU).
        skipped: Counts files left out of the walk (see :func:`iter_input_files`).
        tta: Test-time views averaged per image (:mod:`cxrlab.inference.tta`; 1 = off). CAMs
            are drawn for the unaugmented image.

    Yields:
        Dicts with the columns described in this module's docstring.

    Raises:
        CheckpointError: The model cannot be loaded (missing, truncated, other format version).
        ConfigError: Invalid options (e.g. CAMs with an ONNX model, an output inside an input).
        DataError: An input path does not exist.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    inputs = [Path(p) for p in paths]
    predictor = load_predictor(model_or_path, device=device)
    clash = sorted(set(predictor.classes) & set(RESERVED_COLUMNS))
    if clash:
        raise ConfigError(
            f"Class name(s) {clash} collide with the prediction CSV's own columns "
            f"{list(RESERVED_COLUMNS)}; rename the classes when training."
        )
    cam = _CamWriter(predictor, Path(cam_dir), inputs) if cam_dir is not None else None
    from cxrlab.inference.tta import describe_tta, with_tta

    predictor = with_tta(predictor, tta)
    if tta > 1:
        logger.info("Test-time augmentation: the mean over %d views (%s)", tta,
                    "; ".join(describe_tta(tta)))  # fmt: skip
    size = predictor.image_size
    done = n_errors = 0
    skipped = Counter() if skipped is None else skipped
    for chunk_index, chunk in enumerate(
        _chunks(iter_input_files(inputs, skipped=skipped), batch_size)
    ):
        decoded = decode_many(chunk, size, workers=workers, preprocess=predictor.preprocess)
        ok = np.flatnonzero(decoded.ok).tolist()
        probs = np.empty((0, len(predictor.classes)))
        cam_paths: dict[int, str] = {}
        if ok:
            probs, _ = predictor.predict_images(decoded.images[ok], batch_size=len(ok))
            if cam is not None:
                cam_paths = cam.write(
                    decoded.images[ok], [chunk[i] for i in ok], probs, start=done, ok=ok
                )
        row_probs = dict(zip(ok, probs, strict=True))
        for i, path in enumerate(chunk):
            row = _row(path, predictor.classes, row_probs.get(i), decoded.errors.get(i, ""))
            if cam is not None:
                row["cam"] = cam_paths.get(i, "")
            n_errors += bool(row["error"])
            yield row
        done += len(chunk)
        if callable(progress):
            progress(done)
        elif progress and (chunk_index + 1) % _LOG_EVERY == 0:
            logger.info("Predicted %d files (%d errors)", done, n_errors)
    if skipped["mask"]:
        logger.info("Skipped %d file(s) in lung-mask folders (not radiographs)", skipped["mask"])
    if progress is True:
        logger.info("Predicted %d files (%d errors)", done, n_errors)


def predict_files(
    model_or_path: Any,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int = 32,
    device: Device | str | None = None,
    cam_dir: str | os.PathLike | None = None,
    progress: Progress = True,
    tta: int = 1,
):
    """Predict files and return all rows as a pandas DataFrame (for notebooks and small sets).

    Takes the same arguments as :func:`iter_predictions`; for large folders prefer
    :func:`predict_to_csv`, which never holds all rows.

    Returns:
        DataFrame with columns ``path``, ``predicted``, one per class, ``error`` (and ``cam``).
    """
    import pandas as pd

    predictor = load_predictor(model_or_path, device=device)
    rows = list(
        iter_predictions(
            predictor, paths, batch_size=batch_size, cam_dir=cam_dir, progress=progress, tta=tta
        )
    )
    return pd.DataFrame(rows, columns=_columns(predictor.classes, cam_dir is not None))


def predict_to_csv(
    model_or_path: Any,
    paths: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: Device | str | None = None,
    cam_dir: str | os.PathLike | None = None,
    progress: Progress = True,
    tta: int = 1,
) -> PredictSummary:
    """Predict files and stream the rows into ``out`` (CSV), written atomically at the end.

    Args:
        model_or_path: A run directory, ``.ckpt``, ``.onnx``, classifier or predictor.
        paths: Files and/or folders.
        out: Destination CSV; must not lie inside an input folder.
        batch_size: Files decoded and predicted together.
        device: ``"cpu"``, ``"cuda"`` or ``None``.
        cam_dir: Folder for Grad-CAM overlays (PyTorch models only); must not lie inside an input.
        progress: See :func:`iter_predictions`.
        tta: Test-time views averaged per image (1 = off; see :func:`iter_predictions`).

    Returns:
        A :class:`PredictSummary`.
    """
    from cxrlab.io import atomic_path

    inputs = [Path(p) for p in paths]
    out = Path(out)
    for folder in inputs:
        refuse_inside(out, folder, "--out")
    check_writable(out, "--out")
    predictor = load_predictor(model_or_path, device=device)
    columns = _columns(predictor.classes, cam_dir is not None)
    counts: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    n_files = n_errors = 0
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in iter_predictions(
            predictor,
            inputs,
            batch_size=batch_size,
            cam_dir=cam_dir,
            progress=progress,
            skipped=skipped,
            tta=tta,
        ):
            writer.writerow(_format(row, predictor.classes))
            n_files += 1
            if n_files % batch_size == 0:
                fh.flush()  # each finished batch reaches the disk (the file is still temporary)
            if row["error"]:
                n_errors += 1
            else:
                counts[row["predicted"]] += 1
    return PredictSummary(
        out=out,
        n_files=n_files,
        n_errors=n_errors,
        n_mask_files=skipped["mask"],
        counts={c: counts.get(c, 0) for c in predictor.classes},
        classes=tuple(predictor.classes),
        model_name=predictor.model_name,
        backend=predictor.backend,
        cam_dir=Path(cam_dir) if cam_dir is not None else None,
        tta=tta,
    )


def check_writable(out: Path, option: str) -> None:
    """ConfigError unless a file can be written at ``out``; checked before any work is done.

    Refuses a directory, and a folder where no file can be created (read-only, no permission,
    a file in the way), by creating and removing a temporary file beside ``out``.
    """
    import tempfile

    if out.is_dir():
        raise ConfigError(
            f"{option} {out} is a folder; give the path of the CSV file to write, e.g. "
            f"{option} {out / 'predictions.csv'}."
        )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{option} {out} cannot be written: the folder {parent} does not accept new files "
            f"({exc.strerror or exc}). Choose a writable location with {option}; nothing was "
            "predicted."
        ) from None


# --------------------------------------------------------------------------------------------
# helpers


def _columns(classes: tuple[str, ...], with_cam: bool) -> list[str]:
    return ["path", "predicted", *classes, "error", *(["cam"] if with_cam else [])]


def _chunks(items: Iterator[Path], size: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _row(path: Path, classes: tuple[str, ...], probs, error: str) -> dict[str, Any]:
    row: dict[str, Any] = {"path": str(path)}
    if probs is None:
        row["predicted"] = ""
        row.update({c: math.nan for c in classes})
        row["error"] = error or "not predicted"
    else:
        row["predicted"] = classes[int(np.argmax(probs))]
        row.update({c: float(p) for c, p in zip(classes, probs, strict=True)})
        row["error"] = ""
    return row


def _format(row: dict[str, Any], classes: tuple[str, ...]) -> dict[str, Any]:
    formatted = dict(row)
    for c in classes:
        p = row[c]
        formatted[c] = "" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.8g}"
    return formatted


class _CamWriter:
    """Writes one Grad-CAM overlay PNG per predicted image (PyTorch back-end only)."""

    def __init__(self, predictor: Predictor, folder: Path, inputs: list[Path]):
        if predictor.backend != "torch":
            what = "an ensemble" if predictor.backend == "ensemble" else "an ONNX file"
            raise ConfigError(
                "CAM overlays need one PyTorch model (gradients); pass a run directory or "
                f".ckpt instead of {what}, or drop --cam."
            )
        try:
            from cxrlab.explain.cam import compute_cams, overlay
        except ImportError as exc:
            raise ConfigError(
                f"CAM overlays are unavailable in this installation ({exc}); drop --cam."
            ) from None
        for source in inputs:
            refuse_inside(folder, source, "--cam")
        folder.mkdir(parents=True, exist_ok=True)
        self.predictor, self.folder = predictor, folder
        self.compute_cams, self.overlay = compute_cams, overlay

    def write(
        self, images: np.ndarray, paths: list[Path], probs: np.ndarray, *, start: int, ok: list[int]
    ) -> dict[int, str]:
        from PIL import Image

        from cxrlab.inference.predictor import to_unit_batch
        from cxrlab.io import atomic_path

        x = self.predictor.to_tensor(to_unit_batch(images))  # type: ignore[attr-defined]
        cams = self.compute_cams(self.predictor.model, x, method="gradcam", target="predicted")  # type: ignore[attr-defined]
        written: dict[int, str] = {}
        for j, (i, path) in enumerate(zip(ok, paths, strict=True)):
            image = self.overlay(self._source(path, images[j]), cams[j])
            label = self.predictor.classes[int(np.argmax(probs[j]))]
            target = self.folder / f"{start + i:06d}_{path.stem}.{_safe(label)}.png"
            with atomic_path(target) as tmp:
                Image.fromarray(image).save(tmp, format="PNG")
            written[i] = str(target)
        return written

    @staticmethod
    def _source(path: Path, fallback: np.ndarray) -> np.ndarray:
        """The image at its own resolution (long side at most :data:`CAM_MAX_SIDE`), so the
        overlay is drawn at the source's resolution, not the model's; the model-size image when
        the file cannot be read again."""
        from cxrlab.data.images import read_gray
        from cxrlab.errors import CxrlabError

        try:
            gray = read_gray(path, max_side=CAM_MAX_SIDE)
        except (CxrlabError, OSError, ValueError):
            return fallback
        if max(gray.shape) > CAM_MAX_SIDE:
            from PIL import Image

            scale = CAM_MAX_SIDE / max(gray.shape)
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            gray = np.asarray(Image.fromarray(gray).resize(size, Image.BILINEAR))
        return gray


#: Longest side of a ``--cam`` overlay, pixels (sources larger than this are reduced).
CAM_MAX_SIDE = 1024


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
