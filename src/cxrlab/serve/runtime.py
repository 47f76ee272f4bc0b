"""Inference back-ends behind one small interface: a PyTorch checkpoint or an exported ONNX file.

Both take what :func:`cxrlab.data.images.load_for_model` produces, scaled to [0, 1], and return
class probabilities in the model's output order. The ONNX back-end reads class names, input size
and channels from the file's metadata and imports neither PyTorch nor the training code, so a
deployment needs only ``onnxruntime``, NumPy and Pillow (plus pydicom for DICOM input).
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

#: ONNX ``metadata_props`` keys written by :func:`cxrlab.serve.export.export_onnx`.
ONNX_META_CLASSES = "classes"
ONNX_META_IMAGE_SIZE = "image_size"
ONNX_META_IN_CHANS = "in_chans"
ONNX_META_MEAN = "mean"
ONNX_META_STD = "std"
ONNX_META_MODEL_NAME = "model_name"
ONNX_META_VERSION = "cxrlab_version"
ONNX_META_INPUT = "input"
ONNX_META_OUTPUT = "output"

#: The input contract of every exported graph (also stored in its metadata).
INPUT_CONTRACT = "(N,1,S,S) float32 in [0,1]"


@runtime_checkable
class Predictor(Protocol):
    """What prediction, the web page and the benchmark need from a model.

    Attributes:
        classes: Class names in output order.
        image_size: Square input side ``S`` in pixels.
        in_chans: Channels the network takes (grayscale input is repeated to fill them).
        model_name: Registry name of the architecture.
        backend: ``"torch"`` or ``"onnx"``.
    """

    classes: tuple[str, ...]
    image_size: int
    in_chans: int
    model_name: str
    backend: str

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 in [0, 1] -> (N, K) float64 probabilities (rows sum to 1)."""
        ...


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


class TorchPredictor:
    """A :class:`~cxrlab.models.CxrClassifier` in eval mode on one device.

    The model is moved to ``device`` and put in eval mode (in place). On CUDA, convolutions run in
    full fp32 (not TF32), so probabilities match the CPU's to ~1e-6.

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

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), _ieee_fp32_convolutions(self.device):
            logits = self.model(self.to_tensor(x))
        return softmax(logits.float().cpu().numpy())


@contextlib.contextmanager
def _ieee_fp32_convolutions(device) -> Iterator[None]:
    """Run cuDNN convolutions in full fp32 rather than PyTorch's default TF32.

    With TF32, probabilities on a GPU differ from the CPU's by ~1e-3; in full fp32 by ~1e-6, so a
    predictions CSV does not depend on where it was computed. Prediction is decode-bound, so the
    slower convolutions cost little.
    """
    import torch

    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


class OnnxPredictor:
    """An ONNX file written by :func:`cxrlab.serve.export.export_onnx`, run by ONNX Runtime.

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
        self.metadata = dict(meta)
        self.input_name = self.session.get_inputs()[0].name

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = _expand_channels(x, self.in_chans)
        (logits,) = self.session.run(None, {self.input_name: x})
        return softmax(logits)


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
            directory, a ``.ckpt`` file or an ``.onnx`` file. ONNX files never import PyTorch.
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
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor(path, device=device, threads=threads)
    return TorchPredictor.from_checkpoint(path, device=device)
