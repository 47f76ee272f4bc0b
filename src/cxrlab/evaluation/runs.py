"""What evaluation needs from a run directory: its classes, predictions and test-set identity."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cxrlab.errors import DataError, RunDirError
from cxrlab.evaluation.predictions import Predictions, read_predictions, write_predictions
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)

SPLITS = ("val", "test")


def ensure_predictions(
    run_dir: str | os.PathLike | RunDir,
    splits: tuple[str, ...] = SPLITS,
    *,
    device=None,
    batch_size: int = 64,
) -> dict[str, Path]:
    """Make sure ``predictions/<split>.csv`` exist and are newer than the checkpoint.

    Missing or stale files are computed with :func:`cxrlab.inference.split.predict_split` and
    written atomically. Without a checkpoint, existing files are used as they are.

    Returns:
        Split name -> predictions file, for each split that has (or got) one. ``test`` is required.

    Raises:
        RunDirError: There is no test predictions file and no checkpoint to compute it from.
    """
    run = RunDir.open(run_dir)
    checkpoint = run.find_checkpoint()
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

        why = "missing" if not path.is_file() else "older than the checkpoint"
        logger.info("Predicting the %s split of %s (%s is %s)", split, run.path, path.name, why)
        try:
            frame = predict_split(run, split, device=device, batch_size=batch_size)
        except DataError:
            if split == "test":
                raise
            logger.warning(
                "Could not predict the %s split of %s; calibration is skipped", split, run.path
            )
            continue
        write_predictions(path, frame)
        found[split] = path
    return found


def load_predictions(
    run_dir: str | os.PathLike, split: str, classes: list[str] | None
) -> Predictions:
    """Read ``predictions/<split>.csv`` validated against the run's classes."""
    return read_predictions(RunDir(run_dir).predictions(split), classes)
