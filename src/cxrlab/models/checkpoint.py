"""Load a trained classifier from a run directory or checkpoint file, without the training code."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cxrlab.errors import CheckpointError
from cxrlab.models.classifier import CHECKPOINT_FORMAT, CxrClassifier, ModelMeta, create_classifier

#: Key under which a checkpoint dictionary stores :class:`ModelMeta`.
META_KEY = "cxrlab_meta"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Turn a run directory or checkpoint path into the checkpoint file to load.

    A run directory resolves to ``checkpoints/best.ckpt`` (``last.ckpt`` if there is no best).
    """
    from cxrlab.rundir import RunDir

    path = Path(path)
    if path.is_dir():
        return RunDir.open(path).checkpoint()  # an ensemble folder says so
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Pass a run directory or a .ckpt file."
        )
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint dictionary, turning truncation and foreign files into CheckpointError."""
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be read as a checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). The file may be truncated "
            "or not a cxrlab checkpoint; retrain or copy it again."
        ) from None
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a cxrlab checkpoint (no {META_KEY!r} entry). Checkpoints written by "
            "`cxrlab train` carry the model's metadata; other files cannot be applied safely."
        )
    fmt = ckpt[META_KEY].get("format")
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {fmt!r} (written by cxrlab "
            f"{ckpt[META_KEY].get('cxrlab_version', '?')}); this cxrlab reads format "
            f"{CHECKPOINT_FORMAT}. Use the matching cxrlab version or retrain."
        )
    return ckpt


def load_classifier(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[CxrClassifier, ModelMeta]:
    """Load a trained :class:`CxrClassifier` in eval mode with its :class:`ModelMeta`.

    Args:
        path: A run directory or a ``.ckpt`` file written by ``cxrlab train``.
        map_location: Device to put the model on.
    """
    ckpt = read_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt[META_KEY])
    model = create_classifier(
        meta.model_name, meta.classes, image_size=meta.image_size, in_chans=meta.in_chans
    )
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit model {meta.model_name!r}: {exc}"
        ) from None
    if meta.preprocess:  # the decode path's preprocessing travels with the weights
        import dataclasses

        model.meta = dataclasses.replace(model.meta, preprocess=dict(meta.preprocess))
    return model.to(map_location).eval(), meta


def save_classifier(model: CxrClassifier, path: str | os.PathLike) -> Path:
    """Write a standalone checkpoint (weights + metadata) readable by :func:`load_classifier`.

    Training writes Lightning checkpoints with the same two entries; this is for exports,
    tests and models built outside ``cxrlab train``.
    """
    from cxrlab.io import atomic_path

    payload = {
        "state_dict": {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()},
        META_KEY: model.meta.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
