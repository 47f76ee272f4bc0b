"""Apply a run's trained model to its own split manifest: ``predictions/<split>.csv`` frames."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from cxrlab.errors import DataError
from cxrlab.inference.predictor import DEFAULT_BATCH, TorchPredictor
from cxrlab.rundir import RunDir

log = logging.getLogger(__name__)


def predictions_frame(paths, labels, classes, probs: np.ndarray) -> pd.DataFrame:
    """The predictions frame of docs/ARCHITECTURE.md from probabilities of known images.

    Columns ``path``, ``label`` (true class), ``predicted``, then one probability column per class
    in model output order.
    """
    classes = list(classes)
    frame = pd.DataFrame(
        {
            "path": np.asarray(paths, dtype=object),
            "label": np.asarray(labels, dtype=object),
            "predicted": np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
            if len(probs)
            else [],
        }
    )
    for j, name in enumerate(classes):
        frame[name] = probs[:, j]
    return frame


def predict_split(
    run_dir: str | os.PathLike | RunDir,
    split: str,
    *,
    device=None,
    batch_size: int = DEFAULT_BATCH,
    checkpoint: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Predict every image of one split of a run with its best checkpoint.

    Images come from the decode cache (the arrays training saw); the forward pass is the one
    :class:`~cxrlab.inference.predictor.Predictor` policy, so the rows equal ``cxrlab predict``
    on the same files. ``checkpoint`` names another checkpoint file to use instead (for instance
    the run's ``checkpoints/last.ckpt``); the split and cache stay the run's.

    Returns:
        The predictions frame (:func:`predictions_frame`).
    """
    from cxrlab.data.cache import build_cache
    from cxrlab.models.checkpoint import load_classifier

    run = RunDir.open(run_dir)
    manifest = run.read_split()
    if split not in set(manifest["split"]):
        raise DataError(f"{run.split} has no rows in split {split!r}.")
    model, meta = load_classifier(checkpoint or run.checkpoint())
    config = run.read_config()
    cache = build_cache(
        manifest["path"].tolist(),
        manifest["sha1"].tolist(),
        meta.image_size,
        cache_dir=config.get("cache_dir"),
        workers=config.get("decode_workers"),
        preprocess=meta.preprocess or None,
    )
    rows = np.flatnonzero((manifest["split"] == split).to_numpy() & cache.ok)
    predictor = TorchPredictor(model, device=device)
    probs, _ = predictor.predict_images(cache.images[rows], batch_size=batch_size)
    frame = predictions_frame(
        manifest["path"].to_numpy()[rows], manifest["label"].to_numpy()[rows], meta.classes, probs
    )
    log.info("Predicted %d %s images of %s", len(frame), split, run.path)
    return frame
