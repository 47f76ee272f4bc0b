"""One predictor for a model: images in, class probabilities (and penultimate features) out.

Every caller that turns images into probabilities goes through :class:`Predictor`: the saved
predictions of ``cxrlab evaluate`` (:func:`cxrlab.inference.split.predict_split`), ``cxrlab
predict``, ``serve``, ``explain``, the shortcut probes and the ONNX parity check. Two back-ends:
a PyTorch checkpoint (:class:`TorchPredictor`) or an exported ONNX file (:class:`OnnxPredictor`),
which reads class names, input size and channels from the file's metadata and imports neither
PyTorch nor the training code.

Precision policy (one, for every caller): the forward pass runs in float32 (on CUDA with IEEE
fp32 convolutions and matmuls, not TF32, and never under bf16 autocast) and the softmax is taken in
float64 of the float32 logits. So a probability does not depend on where or by which command it
was computed: the saved predictions (and so metrics.json and ``compare``) equal ``cxrlab
predict`` on the same files to ~1e-7 on the CPU and ~1e-6 between CPU and GPU. Training runs in
bf16 on GPUs; prediction is decode-bound, so fp32 costs it little.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from cxrlab.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]

#: ONNX ``metadata_props`` keys written by :func:`cxrlab.inference.export.export_onnx`.
ONNX_META_CLASSES = "classes"
ONNX_META_IMAGE_SIZE = "image_size"
ONNX_META_IN_CHANS = "in_chans"
ONNX_META_MEAN = "mean"
ONNX_META_STD = "std"
ONNX_META_MODEL_NAME = "model_name"
ONNX_META_VERSION = "cxrlab_version"
ONNX_META_INPUT = "input"
ONNX_META_OUTPUT = "output"
#: The decode path's preprocessing (JSON, :func:`cxrlab.data.preprocess.to_metadata`), applied
#: before the graph; absent in older files, which means none.
ONNX_META_PREPROCESS = "preprocess"

#: The input contract of every exported graph (also stored in its metadata).
INPUT_CONTRACT = "(N,1,S,S) float32 in [0,1]"

#: Images per forward pass when the caller does not say.
DEFAULT_BATCH = 64


@runtime_checkable
class Predictor(Protocol):
    """What prediction, the web page and the benchmark need from a model.

    Attributes:
        classes: Class names in output order.
        image_size: Square input side ``S`` in pixels.
        in_chans: Channels the network takes (grayscale input is repeated to fill them).
        model_name: Registry name of the architecture.
        backend: ``"torch"``, ``"onnx"`` or ``"ensemble"``.
        preprocess: The preprocessing the model was trained with (metadata dict), or None for
            the plain stretch; pass it to :func:`cxrlab.data.images.decode_many`.
    """

    preprocess: dict[str, Any] | None
    classes: tuple[str, ...]
    image_size: int
    in_chans: int
    model_name: str
    backend: str

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 in [0, 1] -> (N, K) float64 probabilities (rows sum to 1)."""
        ...

    def predict_images(
        self, images: np.ndarray, *, batch_size: int = DEFAULT_BATCH, features: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, S, S) uint8 images -> ((N, K) float64 probabilities, (N, D) float32 features)."""
        ...


def to_unit_batch(images: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 -> (N, 1, S, S) float32 in [0, 1], as ``load_for_model(...) / 255``."""
    return np.ascontiguousarray(images, dtype=np.uint8)[:, None].astype(np.float32) / 255.0


class _Batched:
    """:meth:`predict_images` in batches on top of a back-end's ``_forward``."""

    classes: tuple[str, ...]

    def predict_images(
        self, images: np.ndarray, *, batch_size: int = DEFAULT_BATCH, features: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities (and penultimate features) of uint8 images, in batches.

        Args:
            images: (N, S, S) uint8 at the model's input size (what the decode cache and
                :func:`cxrlab.data.images.load_for_model` give).
            batch_size: Images per forward pass (results do not depend on it beyond ~1e-7).
            features: Also return the penultimate features (PyTorch back-end only).

        Returns:
            ``(probs, feats)``: (N, K) float64 rows summing to 1, and (N, D) float32 features
            (None unless ``features``).
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        probs, feats = [], []
        for start in range(0, len(images), batch_size):
            p, f = self._forward(to_unit_batch(images[start : start + batch_size]), features)
            probs.append(p)
            if f is not None:
                feats.append(f)
        k = len(self.classes)
        p = np.concatenate(probs) if probs else np.zeros((0, k))
        if not features:
            return p, None
        return p, (np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, False)[0]

    def _forward(self, x: np.ndarray, features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError


def classifier_head(model: Any, num_classes: int | None = None):
    """The last ``nn.Linear`` producing ``num_classes`` outputs (default: the model's classes).

    Its input is the penultimate feature vector (timm's ``fc`` / ``classifier`` / ``head.fc``
    after global pooling, the seed CNN's 128-d dense block): exactly what the logits are computed
    from, which the source probe reads.

    Raises:
        ConfigError: The model has no such layer (its penultimate features cannot be located).
    """
    from torch import nn

    if num_classes is None:
        num_classes = len(model.meta.classes)
    heads = [
        m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if not heads:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear layer with {num_classes} outputs, so its "
            "penultimate features cannot be located; the source probe needs a linear "
            "classifier head."
        )
    return heads[-1]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, computed in float64 for stability."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _expand_channels(x: np.ndarray, in_chans: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, in_chans):
        raise ValueError(f"expected (N, 1, S, S) float32 input, got shape {x.shape}")
    if x.shape[1] == 1 and in_chans > 1:
        x = np.repeat(x, in_chans, axis=1)
    return x


class TorchPredictor(_Batched):
    """A :class:`~cxrlab.models.CxrClassifier` in eval mode on one device.

    The model is moved to ``device`` and put in eval mode (in place). The forward pass follows
    this module's precision policy (float32; on CUDA no TF32, no autocast).

    Args:
        model: The classifier (its ``meta`` supplies classes and input size).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
    """

    backend = "torch"

    def __init__(self, model: Any, *, device: Device | str | None = None):
        import torch

        from cxrlab.devices import resolve_device

        device = resolve_device(device)
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was requested but PyTorch sees no CUDA device; use --device cpu."
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = model.meta
        self.classes = tuple(self.meta.classes)
        self.image_size = int(self.meta.image_size)
        self.in_chans = int(self.meta.in_chans)
        self.model_name = self.meta.model_name
        self.preprocess = _active_preprocess(dict(getattr(self.meta, "preprocess", None) or {}))

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, device: Device | str | None = None
    ) -> TorchPredictor:
        """Load a run directory or ``.ckpt`` file (CheckpointError if unreadable)."""
        from cxrlab.models import load_classifier

        model, _ = load_classifier(path)
        return cls(model, device=device)

    def to_tensor(self, x: np.ndarray):
        """Numpy (N, 1, S, S) batch -> a float32 tensor on the model's device."""
        import torch

        return torch.from_numpy(_expand_channels(x, self.in_chans)).to(self.device)

    def _forward(self, x: np.ndarray, features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        store: list[torch.Tensor] = []
        handle = None
        if features:
            handle = classifier_head(self.model, len(self.classes)).register_forward_pre_hook(
                lambda _m, args: store.append(args[0].detach().float().flatten(1).cpu())
            )
        try:
            with torch.inference_mode(), ieee_fp32(self.device):
                logits = self.model(self.to_tensor(x))
        finally:
            if handle is not None:
                handle.remove()
        probs = softmax(logits.float().cpu().numpy())
        return probs, (torch.cat(store).numpy() if features else None)


@contextlib.contextmanager
def ieee_fp32(device) -> Iterator[None]:
    """Run cuDNN convolutions and CUDA matmuls in full fp32 rather than TF32.

    With TF32, probabilities on a GPU differ from the CPU's by ~1e-3; in full fp32 by ~1e-6, so a
    predictions CSV does not depend on where it was computed. A no-op on the CPU.
    """
    import torch

    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        old = conv.fp32_precision
        old_mm = torch.backends.cuda.matmul.fp32_precision
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
            torch.backends.cuda.matmul.fp32_precision = old_mm
    else:
        old = torch.backends.cudnn.allow_tf32
        old_mm = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old
            torch.backends.cuda.matmul.allow_tf32 = old_mm


class OnnxPredictor(_Batched):
    """An ONNX file written by :func:`cxrlab.inference.export.export_onnx`, run by ONNX Runtime.

    Args:
        path: The ``.onnx`` file.
        device: ``"cpu"`` (default), or ``"cuda"`` when onnxruntime-gpu is installed.
        threads: Intra-op threads (``None``: ONNX Runtime's default, one per physical core).
    """

    backend = "onnx"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: Device | str | None = None,
        threads: int | None = None,
    ):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(
                f"ONNX file {self.path} does not exist. Export one with "
                "`cxrlab export RUN_DIR --onnx model.onnx`."
            )
        providers = ["CPUExecutionProvider"]
        if device is not None and str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    "--device cuda was requested for an ONNX model but this onnxruntime has no "
                    "CUDA provider (install onnxruntime-gpu) ; use --device cpu."
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=session_options(threads), providers=providers
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf types
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"{self.path} could not be loaded by ONNX Runtime ({detail}). The file may be "
                "truncated or not an ONNX model; export it again with "
                "`cxrlab export RUN_DIR --onnx FILE`."
            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.classes = tuple(json.loads(meta[ONNX_META_CLASSES]))
            self.image_size = int(meta[ONNX_META_IMAGE_SIZE])
            self.in_chans = int(meta.get(ONNX_META_IN_CHANS, "1"))
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.path} lacks cxrlab metadata ({type(exc).__name__}: {exc}); it was not "
                "written by `cxrlab export`, so its class names and input size are unknown. "
                "Re-export it from the run directory with `cxrlab export RUN_DIR --onnx FILE`."
            ) from None
        self.model_name = meta.get(ONNX_META_MODEL_NAME, "onnx")
        try:
            pre = json.loads(meta.get(ONNX_META_PREPROCESS) or "{}")
        except ValueError:
            raise CheckpointError(
                f"{self.path}: its {ONNX_META_PREPROCESS!r} metadata is not JSON; re-export it."
            ) from None
        self.preprocess = _active_preprocess(pre)
        self.metadata = dict(meta)
        self.input_name = self.session.get_inputs()[0].name

    def _forward(self, x: np.ndarray, features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if features:
            raise ConfigError(
                f"{self.path} is an ONNX graph that outputs logits only; penultimate features "
                "(the source probe) need the run directory or its .ckpt."
            )
        (logits,) = self.session.run(None, {self.input_name: _expand_channels(x, self.in_chans)})
        return softmax(logits), None


def _active_preprocess(pre: dict[str, Any]) -> dict[str, Any] | None:
    """``pre`` when it changes decoding, else None (the plain stretch)."""
    from cxrlab.data.preprocess import as_config

    return None if not pre or as_config(pre).is_identity() else pre


def session_options(threads: int | None = None):
    """ONNX Runtime session options used for prediction and the benchmark.

    Full graph optimisation (constant folding, Conv+BatchNorm+ReLU fusion, layout transforms) and
    sequential execution, which suits a chain-shaped CNN.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's to fix
    return options


def load_predictor(
    model_or_path: Any, *, device: Device | str | None = None, threads: int | None = None
) -> Predictor:
    """Turn a model, run directory, checkpoint or ONNX file into a :class:`Predictor`.

    Args:
        model_or_path: A :class:`Predictor`, a :class:`~cxrlab.models.CxrClassifier`, a run
            directory, a ``.ckpt`` file, an ``.onnx`` file, or an ensemble folder
            (``cxrlab ensemble create``; an :class:`~cxrlab.inference.ensemble.EnsemblePredictor`).
            ONNX files never import PyTorch.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (PyTorch: CUDA when available; ONNX: CPU).
        threads: ONNX Runtime intra-op threads (ignored for PyTorch).

    Raises:
        CheckpointError: The file is missing, truncated, from another checkpoint format, or an
            ONNX file without cxrlab metadata.
    """
    if isinstance(model_or_path, Predictor):
        return model_or_path
    if hasattr(model_or_path, "meta") and callable(model_or_path):
        return TorchPredictor(model_or_path, device=device)
    path = Path(model_or_path)
    from cxrlab.rundir import EnsembleDir

    if EnsembleDir.holds_ensemble(path):
        from cxrlab.inference.ensemble import load_ensemble

        return load_ensemble(path, device=device)
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor(path, device=device, threads=threads)
    return TorchPredictor.from_checkpoint(path, device=device)
