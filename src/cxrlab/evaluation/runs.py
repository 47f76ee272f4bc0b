"""What evaluation needs from a run directory: its classes, predictions and test-set identity."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab.errors import CheckpointError, DataError, RunDirError
from cxrlab.evaluation.predictions import Predictions, read_predictions, write_predictions

logger = logging.getLogger(__name__)

SPLITS = ("val", "test")


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """Return ``run_dir`` as a Path, or raise :class:`RunDirError` if it is not a directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(
            f"Run directory {run_dir} does not exist. Pass a folder written by `cxrlab train` "
            "(or one holding predictions/test.csv)."
        )
    return run_dir


def find_checkpoint(run_dir: Path) -> Path | None:
    """The run's best (else last) checkpoint, or None when it has none."""
    from cxrlab.models.checkpoint import resolve_checkpoint

    try:
        return resolve_checkpoint(run_dir)
    except CheckpointError:
        return None


def run_classes(run_dir: Path, checkpoint: Path | None = None) -> list[str] | None:
    """The run's classes in model output order: ``classes.json``, else the checkpoint's metadata.

    Returns None when neither exists (the predictions file's columns are used then).
    """
    path = run_dir / "classes.json"
    if path.is_file():
        try:
            classes = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(
                f"{path} is not valid JSON ({exc}); restore it or delete it."
            ) from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise RunDirError(f"{path} must hold a JSON list of class names, got {classes!r}.")
        return classes
    if checkpoint is not None:
        from cxrlab.models.checkpoint import read_checkpoint

        return list(read_checkpoint(checkpoint)["cxrlab_meta"]["classes"])
    return None


def predictions_path(run_dir: Path, split: str) -> Path:
    return run_dir / "predictions" / f"{split}.csv"


def ensure_predictions(
    run_dir: str | os.PathLike,
    splits: tuple[str, ...] = SPLITS,
    *,
    device=None,
    batch_size: int = 64,
) -> dict[str, Path]:
    """Make sure ``predictions/<split>.csv`` exist and are newer than the checkpoint.

    Missing or stale files are computed with the lead's
    :func:`cxrlab.training.inference.predict_split` and written atomically. Without a checkpoint,
    existing files are used as they are.

    Returns:
        Split name -> predictions file, for each split that has (or got) one. ``test`` is required.

    Raises:
        RunDirError: There is no test predictions file and no checkpoint to compute it from.
    """
    run_dir = check_run_dir(run_dir)
    checkpoint = find_checkpoint(run_dir)
    found: dict[str, Path] = {}
    for split in splits:
        path = predictions_path(run_dir, split)
        fresh = path.is_file() and (
            checkpoint is None or path.stat().st_mtime >= checkpoint.stat().st_mtime
        )
        if fresh:
            found[split] = path
            continue
        if checkpoint is None:
            if split == "test":
                raise RunDirError(
                    f"{run_dir} holds neither predictions/test.csv nor a checkpoint to compute it "
                    "from. Is it a finished cxrlab run directory?"
                )
            logger.info(
                "%s has no predictions/%s.csv and no checkpoint; skipping %s", run_dir, split, split
            )
            continue
        from cxrlab.training.inference import predict_split

        why = "missing" if not path.is_file() else "older than the checkpoint"
        logger.info("Predicting the %s split of %s (%s is %s)", split, run_dir, path.name, why)
        try:
            frame = predict_split(run_dir, split, device=device, batch_size=batch_size)
        except DataError:
            if split == "test":
                raise
            logger.warning(
                "Could not predict the %s split of %s; calibration is skipped", split, run_dir
            )
            continue
        write_predictions(path, frame)
        found[split] = path
    return found


def load_predictions(run_dir: Path, split: str, classes: list[str] | None) -> Predictions:
    """Read ``predictions/<split>.csv`` validated against the run's classes."""
    return read_predictions(predictions_path(run_dir, split), classes)


def fingerprint_test_set(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A hash of the run's test set: the sorted (key, label) pairs of its test rows.

    The key is the image's ``sha1`` when split.csv records it (so the same images moved to another
    folder still match), else its path. Without split.csv the rows of predictions/test.csv are used.

    Returns:
        ``{"sha1", "n", "key": "sha1" | "path", "from": "split.csv" | "predictions/test.csv"}``.
    """
    run_dir = Path(run_dir)
    split_path = run_dir / "split.csv"
    if split_path.is_file():
        manifest = pd.read_csv(split_path, keep_default_na=False, dtype=str)
        if "split" not in manifest.columns or "label" not in manifest.columns:
            raise DataError(
                f"{split_path} lacks the split/label columns of a cxrlab split manifest."
            )
        rows = manifest[manifest["split"] == "test"]
        source = "split.csv"
    else:
        pred = predictions_path(run_dir, "test")
        if not pred.is_file():
            raise RunDirError(f"{run_dir} has neither split.csv nor predictions/test.csv.")
        rows = pd.read_csv(pred, keep_default_na=False, dtype=str, usecols=["path", "label"])
        source = "predictions/test.csv"
    key = "sha1" if "sha1" in rows.columns and (rows["sha1"] != "").all() else "path"
    lines = sorted(f"{k}\t{label}" for k, label in zip(rows[key], rows["label"], strict=True))
    digest = hashlib.sha1("\n".join(lines).encode("utf-8")).hexdigest()
    return {"sha1": digest, "n": int(len(lines)), "key": key, "from": source}


def path_to_sha1(run_dir: Path) -> dict[str, str]:
    """Map image path -> sha1 from the run's split.csv ({} when unavailable)."""
    split_path = run_dir / "split.csv"
    if not split_path.is_file():
        return {}
    manifest = pd.read_csv(split_path, keep_default_na=False, dtype=str)
    if "sha1" not in manifest.columns:
        return {}
    return dict(zip(manifest["path"], manifest["sha1"], strict=True))
