"""What explanation and probes read from a run directory: model, split rows, images, masks."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.data.images import decode_many
from cxrlab.errors import CxrlabError, DataError
from cxrlab.explain.attention import MASK_MISSING, MASK_OK, MASK_UNREADABLE
from cxrlab.explain.regions import read_mask, shape_mismatch
from cxrlab.inference.predictor import TorchPredictor
from cxrlab.models import CxrClassifier, ModelMeta, load_classifier
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """A loaded run: its directory, the model behind the one predictor, metadata and manifest."""

    run_dir: Path
    predictor: TorchPredictor
    split: pd.DataFrame

    @property
    def model(self) -> CxrClassifier:
        return self.predictor.model

    @property
    def meta(self) -> ModelMeta:
        return self.predictor.meta

    @property
    def device(self):
        return self.predictor.device


def read_split(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's split.csv (:meth:`cxrlab.rundir.RunDir.read_split`)."""
    return RunDir(run_dir).read_split()


def load_run(run_dir: str | os.PathLike, *, device=None) -> Run:
    """Load a run's best checkpoint into a predictor (on CUDA when present) and its manifest."""
    run = RunDir.open(run_dir)
    model, _ = load_classifier(run.path)
    split = (
        run.read_split()
        if run.has_split()
        else pd.DataFrame(columns=["path", "label", "source", "mask_path", "split"])
    )
    return Run(run.path, TorchPredictor(model, device=device), split)


def split_rows(run: Run, split: str) -> pd.DataFrame:
    """Rows of one split; an empty or unknown split raises DataError naming the available ones."""
    where = RunDir(run.run_dir).split
    if run.split.empty:
        read_split(run.run_dir)  # raises the missing-split.csv error
    rows = run.split[run.split["split"] == split].reset_index(drop=True)
    if rows.empty:
        have = ", ".join(sorted(set(run.split["split"]))) or "none"
        raise DataError(
            f"{where} has no rows in split {split!r} (splits present: {have}). "
            "Choose another --split."
        )
    unknown = sorted(set(rows["label"]) - set(run.meta.classes))
    if unknown:
        raise DataError(
            f"{where} has labels {unknown} that the model does not know "
            f"(classes {list(run.meta.classes)}); the run directory is inconsistent."
        )
    return rows


def load_images(
    paths: Sequence[str], size: int, preprocess=None
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Decode images for the model (:func:`cxrlab.data.images.decode_many`), warning on failures.

    Returns:
        ``(images (N, size, size) uint8, ok (N,) bool, errors {path: reason})``; rows that failed
        are zero and ``ok`` is False there (the caller reports and drops them).
    """
    decoded = decode_many(paths, size, preprocess=preprocess)
    errors = {str(paths[i]): reason for i, reason in decoded.errors.items()}
    if errors:
        first = next(iter(errors.items()))
        warnings.warn(
            f"{len(errors)} image(s) could not be read and are left out; first: {first[0]}: "
            f"{first[1]}",
            stacklevel=2,
        )
    return decoded.images, decoded.ok, errors


def load_masks(rows: pd.DataFrame, size: int) -> tuple[list[np.ndarray | None], list[str]]:
    """Lung masks of split rows on the model's grid, with a status per row.

    A row without ``mask_path`` gets ``None``/"missing", an unreadable mask ``None``/"unreadable"
    (warned once with the first path). Masks whose size or aspect differs from the image's
    (``width``/``height`` columns) are resized like the image and reported in one warning.
    """
    masks: list[np.ndarray | None] = []
    status: list[str] = []
    mismatched: list[str] = []
    unreadable: list[str] = []
    has_shape = {"width", "height"} <= set(rows.columns)
    for _, row in rows.iterrows():
        mpath = str(row.get("mask_path", "") or "")
        if not mpath:
            masks.append(None)
            status.append(MASK_MISSING)
            continue
        try:
            mask, raw_shape = read_mask(mpath, size)
        except CxrlabError as exc:
            masks.append(None)
            status.append(MASK_UNREADABLE)
            unreadable.append(f"{mpath}: {getattr(exc, 'reason', exc)}")
            continue
        if has_shape and str(row["width"]) not in ("", "nan"):
            problem = shape_mismatch(raw_shape, (int(row["height"]), int(row["width"])))
            if problem:
                mismatched.append(f"{mpath} {problem}")
        masks.append(mask)
        status.append(MASK_OK)
    if mismatched:
        warnings.warn(
            f"{len(mismatched)} lung mask(s) differ in size from their images and were resized to "
            f"the model's grid like the images (stretch to a square); first: {mismatched[0]}.",
            stacklevel=2,
        )
    if unreadable:
        warnings.warn(
            f"{len(unreadable)} lung mask(s) could not be read and are left out of the lung "
            f"statistics; first: {unreadable[0]}",
            stacklevel=2,
        )
    return masks, status


def fill_masks(
    masks: list, status: list, paths: list[str], size: int, segmenter, preprocess=None
) -> dict:
    """Give rows without a usable file mask the segmenter's mask (in place).

    Masks are stretched to the model's grid; a model whose preprocessing changes the geometry
    (letterbox, lungs crop) sees images they do not align with, which is warned and recorded.

    Returns:
        Where each mask came from: ``segmenter`` (checkpoint and sha1, or None), ``counts`` of
        ``file`` / ``segmenter`` / ``none`` and ``per_image`` (path -> origin).
    """

    per_image = ["file" if m is not None else "none" for m in masks]
    info: dict[str, Any] = {"segmenter": None}
    need = [i for i, m in enumerate(masks) if m is None]
    if segmenter is not None and need:
        from cxrlab.io import file_sha1
        from cxrlab.segment.model import load_segmenter, masks_for_files, resolve_segmenter

        ckpt = resolve_segmenter(segmenter)
        model = load_segmenter(ckpt)
        for i, mask in zip(need, masks_for_files(model, [paths[i] for i in need], size),
                           strict=True):  # fmt: skip
            if mask is not None:
                masks[i], status[i], per_image[i] = mask, MASK_OK, "segmenter"
        info["segmenter"] = {"checkpoint": str(ckpt.resolve()), "sha1": file_sha1(ckpt)}
    elif segmenter is not None:
        info["segmenter"] = {"checkpoint": str(segmenter), "used": False}
    info["counts"] = {k: per_image.count(k) for k in ("file", "segmenter", "none")}
    pre = preprocess or {}
    if pre.get("resize", "stretch") != "stretch" or pre.get("lungs", "none") == "crop":
        info["geometry_warning"] = (
            f"the model's preprocessing (resize: {pre.get('resize')}, lungs: {pre.get('lungs')}) "
            "changes the image geometry; lung masks are stretched to the square and do not align "
            "with what the model sees, so lung-based statistics are approximate"
        )
        warnings.warn(f"Lung masks: {info['geometry_warning']}.", stacklevel=2)
    info["per_image"] = dict(zip(paths, per_image, strict=True))
    return info
