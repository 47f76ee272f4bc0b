"""The classifier every cxrlab model is wrapped in, and the metadata it carries.

:class:`CxrClassifier` takes (N, C, S, S) float32 input in [0, 1] and returns (N, K) logits: the
intensity normalisation lives inside the model, so prediction, ONNX export and explanation only
need to resize an image and scale it to [0, 1]. :class:`ModelMeta` travels in every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from cxrlab import __version__
from cxrlab.models.registry import get_spec

#: Bumped whenever the checkpoint layout changes incompatibly.
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to apply a trained model to a new image.

    Attributes:
        model_name: Registry name.
        classes: Class names in output order.
        image_size: Square input size in pixels.
        in_chans: Input channels (1: grayscale).
        mean: Normalisation mean applied inside the model to [0, 1] input.
        std: Normalisation std applied inside the model.
        cam_layer: Dotted name of the default Grad-CAM layer inside :class:`CxrClassifier`.
        cxrlab_version: Version that wrote the checkpoint.
        format: Checkpoint format number (:data:`CHECKPOINT_FORMAT`).
        preprocess: The decode path's preprocessing the model was trained with
            (:func:`cxrlab.data.preprocess.to_metadata`); empty (older checkpoints) means none.
    """

    model_name: str
    classes: tuple[str, ...]
    image_size: int
    in_chans: int = 1
    mean: float = 0.0
    std: float = 1.0
    cam_layer: str = ""
    cxrlab_version: str = __version__
    format: int = CHECKPOINT_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["classes"] = tuple(known["classes"])
        return cls(**known)


class CxrClassifier(nn.Module):
    """A registered network behind a fixed intensity normalisation.

    Input: (N, in_chans, S, S) float32 in [0, 1]. Output: (N, K) logits.
    """

    def __init__(self, network: nn.Module, meta: ModelMeta):
        super().__init__()
        self.network = network
        self.meta = meta
        self.register_buffer("mean", torch.tensor(meta.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(meta.std, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)


def create_classifier(
    name: str,
    classes: list[str] | tuple[str, ...],
    *,
    image_size: int | None = None,
    pretrained: bool = False,
    in_chans: int = 1,
) -> CxrClassifier:
    """Build a registered model wrapped as a :class:`CxrClassifier`.

    Args:
        name: Registry name (see :func:`cxrlab.models.registry.list_models`).
        classes: Class names in output order; their count sets the output width.
        image_size: Input size; defaults to the model's registered size.
        pretrained: Load ImageNet weights (timm models; needs the network or a warm cache).
        in_chans: Input channels.
    """
    spec = get_spec(name)
    size = int(image_size or spec.image_size)
    network = spec.builder(len(classes), pretrained=pretrained, in_chans=in_chans, image_size=size)
    cam_layer = spec.cam_layer
    if not cam_layer:
        from cxrlab.models.timm_models import last_feature_stage

        cam_layer = last_feature_stage(network)
    meta = ModelMeta(
        model_name=name,
        classes=tuple(classes),
        image_size=size,
        in_chans=in_chans,
        mean=spec.mean,
        std=spec.std,
        cam_layer=f"network.{cam_layer}" if cam_layer else "network",
    )
    return CxrClassifier(network, meta)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Count parameters the way Keras reports them.

    Returns:
        ``total``, ``trainable`` and ``non_trainable``; non-trainable counts frozen parameters and
        batch-norm running means and variances (not the step counter), as Keras does.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    stats = sum(
        b.numel()
        for n, b in model.named_buffers()
        if n.endswith("running_mean") or n.endswith("running_var")
    )
    return {
        "total": trainable + frozen + stats,
        "trainable": trainable,
        "non_trainable": frozen + stats,
    }
