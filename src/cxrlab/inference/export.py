"""Export a trained classifier to ONNX, with the metadata needed to apply it without cxrlab.

The graph takes (N, 1, S, S) float32 in [0, 1] (the intensity normalisation is inside it) and
returns (N, K) logits. ``metadata_props`` carry the class names in output order (JSON), the input
size and channels, the normalisation constants (informational), the model name, the cxrlab version
and the input contract, so :class:`cxrlab.inference.predictor.OnnxPredictor` needs nothing else.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab import __version__
from cxrlab.errors import ConfigError
from cxrlab.inference import predictor as rt
from cxrlab.io import atomic_path

logger = logging.getLogger(__name__)

#: Lowest opset of PyTorch's default (torch.export-based) exporter; lower ones use TorchScript's.
DYNAMO_MIN_OPSET = 18

#: Largest |p_onnx - p_torch| accepted by the post-export check.
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ONNX file.
        opset: ONNX opset of the default domain.
        dynamic_batch: Whether the batch axis is symbolic.
        max_abs_diff: Largest probability difference between ONNX Runtime and PyTorch on a random
            check batch (``nan`` when the check was skipped).
        metadata: The ``metadata_props`` written.
    """

    path: Path
    opset: int
    dynamic_batch: bool
    max_abs_diff: float
    metadata: dict[str, str]


def onnx_metadata(meta: Any) -> dict[str, str]:
    """The ``metadata_props`` entries describing a :class:`~cxrlab.models.ModelMeta`."""
    return {
        rt.ONNX_META_CLASSES: json.dumps(list(meta.classes)),
        rt.ONNX_META_IMAGE_SIZE: str(int(meta.image_size)),
        rt.ONNX_META_IN_CHANS: str(int(meta.in_chans)),
        rt.ONNX_META_MEAN: repr(float(meta.mean)),
        rt.ONNX_META_STD: repr(float(meta.std)),
        rt.ONNX_META_MODEL_NAME: meta.model_name,
        rt.ONNX_META_VERSION: __version__,
        rt.ONNX_META_INPUT: (
            f"image: (N,{int(meta.in_chans)},S,S) float32 in [0,1], S={int(meta.image_size)}; "
            "normalisation (mean/std) is in the graph"
        ),
        rt.ONNX_META_OUTPUT: "logits: (N,K) float32; their softmax is in `classes` order",
        rt.ONNX_META_PREPROCESS: json.dumps(
            dict(getattr(meta, "preprocess", None) or {"method": "none"}), sort_keys=True
        ),
    }


def export_onnx(
    model_or_path: Any,
    out: str | os.PathLike,
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    check: bool = True,
) -> ExportResult:
    """Export a classifier to an ONNX file, atomically.

    Args:
        model_or_path: A :class:`~cxrlab.models.CxrClassifier`, a run directory, a ``.ckpt``, or
            an ensemble folder (one graph running every member, whose output is the log of the
            mean softmax, so its softmax is the ensemble's probability).
        out: Destination ``.onnx`` file (written whole or not at all).
        opset: ONNX opset (``None``: the exporter's default, 18 or later; below 18 the
            TorchScript-based exporter is used).
        dynamic_batch: Make the batch axis symbolic; otherwise the graph takes exactly one image.
        check: Run ONNX Runtime on a random batch and compare probabilities with PyTorch; a
            difference above :data:`PARITY_TOLERANCE` raises.

    Raises:
        CheckpointError: The checkpoint cannot be read.
        ConfigError: The exporter failed (e.g. an opset it does not support) or the check failed.
    """
    import onnx
    import torch

    from cxrlab.models import load_classifier
    from cxrlab.rundir import EnsembleDir

    if hasattr(model_or_path, "meta"):
        # A copy: the caller's model keeps its device and train/eval mode.
        model = copy.deepcopy(model_or_path)
    elif EnsembleDir.holds_ensemble(model_or_path):
        from cxrlab.inference.ensemble import ensemble_module

        model = ensemble_module(model_or_path)  # one graph: log(mean softmax) of the members
    else:
        model, _ = load_classifier(model_or_path)
    model = model.cpu().eval()
    meta = model.meta
    out = Path(out)
    size, chans = int(meta.image_size), int(meta.in_chans)
    example = torch.rand(
        2 if dynamic_batch else 1, chans, size, size, generator=torch.Generator().manual_seed(0)
    )

    # The torch.export-based exporter (PyTorch's default) emits opset 18 and later; older opsets,
    # for older runtimes, go through the TorchScript-based exporter.
    legacy = opset is not None and opset < DYNAMO_MIN_OPSET
    with tempfile.TemporaryDirectory(prefix="cxrlab-onnx-") as tmp:
        raw = Path(tmp) / "model.onnx"
        names = {"input_names": ["image"], "output_names": ["logits"], "opset_version": opset}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # exporter chatter, not the user's to fix
                if legacy:
                    axes = {"image": {0: "batch"}, "logits": {0: "batch"}}
                    torch.onnx.export(
                        model,
                        (example,),
                        str(raw),
                        dynamo=False,
                        dynamic_axes=axes if dynamic_batch else None,
                        **names,
                    )
                else:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    torch.onnx.export(
                        model,
                        (example,),
                        raw,
                        dynamic_shapes=({0: batch},) if dynamic_batch else None,
                        external_data=False,
                        optimize=True,
                        verbose=False,
                        **names,
                    )
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"ONNX export of {meta.model_name!r} failed ({type(exc).__name__}: {detail}). "
                f"Try another --opset (e.g. {DYNAMO_MIN_OPSET}) or report the model name and "
                "torch version."
            ) from exc
        proto = onnx.load(str(raw))
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)
    if opset is not None and opset_used != opset:
        raise ConfigError(
            f"--opset {opset} was requested but the exporter produced opset {opset_used}; "
            f"{out} was not written. Choose an opset this torch version supports."
        )

    metadata = onnx_metadata(meta)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"cxrlab {__version__} export of {meta.model_name}: input {rt.INPUT_CONTRACT}, "
        f"output logits over {list(meta.classes)}."
    )
    onnx.checker.check_model(proto)

    with atomic_path(out) as tmp_out:
        onnx.save(proto, str(tmp_out))
        diff = _parity(model, tmp_out, size, dynamic_batch) if check else float("nan")
    logger.info(
        "Exported %s to %s (opset %d, %s batch, max |p_onnx - p_torch| = %.2g)",
        meta.model_name,
        out,
        opset_used,
        "dynamic" if dynamic_batch else "fixed",
        diff,
    )
    return ExportResult(out, int(opset_used), dynamic_batch, diff, metadata)


def _parity(model: Any, path: Path, size: int, dynamic_batch: bool) -> float:
    """Largest probability difference between ONNX Runtime and PyTorch on random images.

    Both sides run through their :class:`~cxrlab.inference.predictor.Predictor`, so the check
    compares exactly what ``cxrlab predict`` computes with either file.
    """
    n = 3 if dynamic_batch else 1
    images = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)
    onnx_probs, _ = rt.OnnxPredictor(path, device="cpu").predict_images(images)
    torch_probs, _ = rt.TorchPredictor(model, device="cpu").predict_images(images)
    diff = float(np.abs(onnx_probs - torch_probs).max())
    if not diff <= PARITY_TOLERANCE:
        raise ConfigError(
            f"The exported graph disagrees with PyTorch (max probability difference {diff:.3g} > "
            f"{PARITY_TOLERANCE:g}); {path.name} was not written. Try another --opset."
        )
    return diff
