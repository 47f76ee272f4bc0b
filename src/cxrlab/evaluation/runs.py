"""What evaluation needs from a run directory: its classes, predictions and test-set identity."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cxrlab.errors import DataError, RunDirError
from cxrlab.evaluation.predictions import Predictions, read_predictions, write_predictions
from cxrlab.io import write_json
from cxrlab.rundir import EnsembleDir, RunDir

logger = logging.getLogger(__name__)

SPLITS = ("val", "test")


def ensure_predictions(
    run_dir: str | os.PathLike | RunDir,
    splits: tuple[str, ...] = SPLITS,
    *,
    device=None,
    batch_size: int = 64,
    tta: int | None = None,
) -> dict[str, Path]:
    """Make sure ``predictions/<split>.csv`` exist and are newer than the checkpoint.

    Missing or stale files are computed with :func:`cxrlab.inference.split.predict_split` and
    written atomically. Without a checkpoint, existing files are used as they are. For an
    ensemble folder the manifest (ensemble.json) plays the checkpoint's part.

    ``tta``: the test-time augmentation the predictions must have (``predictions/tta.json``
    records it; absent means 1); files made with another are recomputed. None accepts existing
    files whatever their TTA and computes missing ones without.

    Returns:
        Split name -> predictions file, for each split that has (or got) one. ``test`` is required.

    Raises:
        RunDirError: There is no test predictions file and no checkpoint to compute it from.
    """
    run = RunDir.open(run_dir)
    if isinstance(run, EnsembleDir):
        run.read_split()  # members from different splits: refused here, before any work
    checkpoint = run.model_file()
    if run.is_refit() and "val" in splits:
        # The refitted model trained on val: its val predictions would be in-sample.
        logger.info("%s was refitted on train+val; its val split is not predicted", run.path)
        splits = tuple(s for s in splits if s != "val")
    found: dict[str, Path] = {}
    for split in splits:
        path = run.predictions(split)
        fresh = path.is_file() and (
            checkpoint is None or path.stat().st_mtime >= checkpoint.stat().st_mtime
        )
        if fresh and checkpoint is not None and tta is not None:
            fresh = predictions_tta(run, split) == tta
        if fresh:
            found[split] = path
            continue
        if checkpoint is None:
            if split == "test":
                raise RunDirError(
                    f"{run.path} holds neither predictions/test.csv nor a checkpoint to compute "
                    "it from. Is it a finished cxrlab run directory?"
                )
            logger.info(
                "%s has no predictions/%s.csv and no checkpoint; skipping %s",
                run.path,
                split,
                split,
            )
            continue
        from cxrlab.inference.split import predict_split

        why = (
            "missing"
            if not path.is_file()
            else f"made with TTA x{predictions_tta(run, split)}"
            if path.stat().st_mtime >= checkpoint.stat().st_mtime
            else "older than the checkpoint"
        )
        logger.info("Predicting the %s split of %s (%s is %s)", split, run.path, path.name, why)
        try:
            frame = predict_split(run, split, device=device, batch_size=batch_size, tta=tta or 1)
        except DataError:
            if split == "test":
                raise
            logger.warning(
                "Could not predict the %s split of %s; calibration is skipped", split, run.path
            )
            continue
        write_predictions(path, frame)
        _record_tta(run, split, tta or 1)
        found[split] = path
    return found


def predictions_tta(run: RunDir, split: str) -> int:
    """The test-time views ``predictions/<split>.csv`` averaged (1 unless tta.json says more)."""
    record = run.predictions_tta
    if not record.is_file():
        return 1
    try:
        return int(json.loads(record.read_text()).get(split, 1))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0  # unreadable: never counts as matching, so the predictions are recomputed


def _record_tta(run: RunDir, split: str, tta: int) -> None:
    record = run.predictions_tta
    entries: dict = {}
    if record.is_file():
        try:
            entries = dict(json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            entries = {}
    entries[split] = int(tta)
    write_json(record, entries)


def load_predictions(
    run_dir: str | os.PathLike, split: str, classes: list[str] | None
) -> Predictions:
    """Read ``predictions/<split>.csv`` validated against the run's classes."""
    return read_predictions(RunDir(run_dir).predictions(split), classes)
