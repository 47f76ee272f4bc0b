"""What explanation and probes read from a run directory: model, split rows, images, masks."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrlab.data.images import load_for_model
from cxrlab.devices import resolve_device
from cxrlab.errors import CxrlabError, DataError, RunDirError
from cxrlab.explain.attention import MASK_MISSING, MASK_OK, MASK_UNREADABLE
from cxrlab.explain.regions import read_mask, shape_mismatch
from cxrlab.models import CxrClassifier, ModelMeta, load_classifier

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """A loaded run: model on its device, metadata and split manifest."""

    run_dir: Path
    model: CxrClassifier
    meta: ModelMeta
    split: pd.DataFrame
    device: torch.device


def read_split(run_dir: Path) -> pd.DataFrame:
    """The run's split.csv, with missing optional columns filled in."""
    path = run_dir / "split.csv"
    if not path.is_file():
        raise RunDirError(
            f"{run_dir} has no split.csv, so the images of its splits are unknown. Pass a run "
            "directory written by `cxrlab train` (or give images explicitly with --images)."
        )
    frame = pd.read_csv(path, keep_default_na=False, dtype={"source": str, "mask_path": str})
    for col in ("path", "label", "split"):
        if col not in frame.columns:
            raise RunDirError(f"{path} has no {col!r} column; it is not a cxrlab split manifest.")
    for col in ("source", "mask_path"):
        if col not in frame.columns:
            frame[col] = ""
    return frame


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device | None = None) -> Run:
    """Load a run's best checkpoint (on CUDA when present) and its split manifest."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(
            f"Run directory {run_dir} does not exist. Pass the --out of `cxrlab train`."
        )
    dev = resolve_device(device)
    model, meta = load_classifier(run_dir, map_location=dev)
    split = (
        read_split(run_dir)
        if (run_dir / "split.csv").is_file()
        else pd.DataFrame(columns=["path", "label", "source", "mask_path", "split"])
    )
    return Run(run_dir, model, meta, split, dev)


def split_rows(run: Run, split: str) -> pd.DataFrame:
    """Rows of one split; an empty or unknown split raises DataError naming the available ones."""
    if run.split.empty:
        read_split(run.run_dir)  # raises the missing-split.csv error
    rows = run.split[run.split["split"] == split].reset_index(drop=True)
    if rows.empty:
        have = ", ".join(sorted(set(run.split["split"]))) or "none"
        raise DataError(
            f"{run.run_dir / 'split.csv'} has no rows in split {split!r} (splits present: {have}). "
            "Choose another --split."
        )
    unknown = sorted(set(rows["label"]) - set(run.meta.classes))
    if unknown:
        raise DataError(
            f"{run.run_dir / 'split.csv'} has labels {unknown} that the model does not know "
            f"(classes {list(run.meta.classes)}); the run directory is inconsistent."
        )
    return rows


def load_images(paths: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Decode images exactly as for the model (``load_for_model``), in a few threads.

    Returns:
        ``(images (N, size, size) uint8, ok (N,) bool, errors {path: reason})``; rows that failed
        are zero and ``ok`` is False there (the caller reports and drops them).
    """
    images = np.zeros((len(paths), size, size), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)
    errors: dict[str, str] = {}

    def one(i: int) -> None:
        try:
            images[i] = load_for_model(paths[i], size)
        except CxrlabError as exc:
            ok[i] = False
            errors[str(paths[i])] = getattr(exc, "reason", str(exc))

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(paths))))
    if errors:
        first = next(iter(errors.items()))
        warnings.warn(
            f"{len(errors)} image(s) could not be read and are left out; first: {first[0]}: "
            f"{first[1]}",
            stacklevel=2,
        )
    return images, ok, errors


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
