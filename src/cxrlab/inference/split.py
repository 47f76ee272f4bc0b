"""Apply a run's trained model to its own split manifest: ``predictions/<split>.csv`` frames."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrlab.errors import DataError
from cxrlab.inference.predictor import DEFAULT_BATCH, Predictor, TorchPredictor
from cxrlab.inference.tta import tta_transforms
from cxrlab.rundir import EnsembleDir, RunDir

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
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    tta: int = 1,
) -> pd.DataFrame:
    """Predict every image of one split of a run with its best checkpoint.

    Images come from the decode cache (the arrays training saw); the forward pass is the one
    :class:`~cxrlab.inference.predictor.Predictor` policy, so the rows equal ``cxrlab predict``
    on the same files. ``checkpoint`` names another checkpoint file to use instead (for instance
    the run's ``checkpoints/last.ckpt``); the split and cache stay the run's.

    Args:
        run_dir: A run directory, or an ensemble folder whose members share one split.
        split: ``"train"``, ``"val"`` or ``"test"``.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        batch_size: Images per forward pass.
        checkpoint: One checkpoint (or run directory) to apply instead of the run's own; or a
            sequence of them: an ensemble averaging their probabilities
            (:class:`~cxrlab.inference.ensemble.EnsemblePredictor`). Members that are run
            directories must share the run's test set (same fingerprint).
        tta: Views per image averaged (:class:`~cxrlab.inference.tta.TTAPredictor`); 1 = off.

    Returns:
        The predictions frame (:func:`predictions_frame`).

    Raises:
        DataError: The split is empty, or a member was trained on another split.
        CheckpointError: A member cannot be loaded, or members differ in classes or input.
    """
    from cxrlab.data.cache import build_cache
    from cxrlab.inference.tta import with_tta

    tta_transforms(tta)
    run = RunDir.open(run_dir)
    manifest = run.read_split()
    if split not in set(manifest["split"]):
        raise DataError(f"{run.split} has no rows in split {split!r}.")
    predictor, metas, config = _models(run, checkpoint, device)
    meta = metas[0]
    cache = build_cache(
        manifest["path"].tolist(),
        manifest["sha1"].tolist(),
        meta.image_size,
        cache_dir=config.get("cache_dir"),
        workers=config.get("decode_workers"),
        preprocess=meta.preprocess or None,
    )
    rows = np.flatnonzero((manifest["split"] == split).to_numpy() & cache.ok)
    predictor = with_tta(predictor, tta)
    probs, _ = predictor.predict_images(cache.images[rows], batch_size=batch_size)
    frame = predictions_frame(
        manifest["path"].to_numpy()[rows], manifest["label"].to_numpy()[rows], meta.classes, probs
    )
    log.info("Predicted %d %s images of %s with %s%s", len(frame), split, run.path,
             predictor.model_name, f" (TTA x{tta})" if tta > 1 else "")  # fmt: skip
    return frame


def _models(run: RunDir, checkpoint, device) -> tuple[Predictor, list, dict]:
    """(the predictor, its members' ModelMeta, the config whose cache settings apply)."""
    from cxrlab.inference.ensemble import EnsemblePredictor, Member, ensemble_members
    from cxrlab.models.checkpoint import load_classifier

    single = isinstance(checkpoint, (str, os.PathLike))
    if single or (checkpoint is None and not isinstance(run, EnsembleDir)):
        model, meta = load_classifier(checkpoint or run.checkpoint())
        return TorchPredictor(model, device=device), [meta], run.read_config()
    if checkpoint is None:
        members = ensemble_members(run)
    else:
        from cxrlab.inference.ensemble import resolve_members

        members = resolve_members(list(checkpoint))
        if not members:
            raise DataError("checkpoint= is an empty list; name at least one member.")
        own = run.fingerprint()
        for m in members:
            if m.run_dir is not None and RunDir(m.run_dir).has_split():
                theirs = RunDir(m.run_dir).fingerprint()
                if (theirs["sha1"], theirs["n"]) != (own["sha1"], own["n"]):
                    raise DataError(
                        f"Member {m.run_dir} was trained on another split than {run.path} (its "
                        f"test set differs: {theirs['n']} vs {own['n']} images, fingerprints "
                        "differ), so some of the run's test images may be in its training set. "
                        "Ensemble members must share the run's split."
                    )
    loaded = [load_classifier(m.checkpoint) for m in members]
    predictor = EnsemblePredictor(
        [TorchPredictor(model, device=device) for model, _ in loaded],
        names=[m.label for m in members],
    )
    first: Member = members[0]
    config = RunDir(first.run_dir).read_config() if first.run_dir is not None else {}
    return predictor, [meta for _, meta in loaded], config or run.read_config()
