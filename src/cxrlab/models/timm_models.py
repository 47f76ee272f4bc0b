"""Modern backbones from timm, built with a single input channel."""

from __future__ import annotations

from torch import nn

from cxrlab.errors import ConfigError
from cxrlab.models.registry import register_model


def _timm(arch: str, num_classes: int, pretrained: bool, in_chans: int) -> nn.Module:
    import timm

    try:
        return timm.create_model(
            arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans
        )
    except Exception as exc:  # network, hub or cache failures all surface here
        if not pretrained:
            raise
        raise ConfigError(
            f"Could not load ImageNet weights for {arch!r} ({type(exc).__name__}: {exc}). "
            "Pretrained weights are downloaded from the Hugging Face hub on first use: check the "
            "network or HF_HUB_OFFLINE / HF_HOME, or train from scratch without --pretrained."
        ) from exc


# name, timm architecture, Grad-CAM layer inside the timm model, description
_TIMM_MODELS = [
    ("resnet18", "resnet18", "layer4", "ResNet-18 (timm)"),
    ("resnet50", "resnet50", "layer4", "ResNet-50 (timm)"),
    ("densenet121", "densenet121", "features.norm5", "DenseNet-121 (timm)"),
    ("efficientnet_b0", "efficientnet_b0", "bn2", "EfficientNet-B0 (timm)"),
    ("convnext_tiny", "convnext_tiny", "stages.3", "ConvNeXt-Tiny (timm)"),
]


def _make_builder(arch: str):
    def build(num_classes: int, *, pretrained: bool = False, in_chans: int = 1, image_size=None):
        return _timm(arch, num_classes, pretrained, in_chans)

    build.__name__ = arch
    return build


for _name, _arch, _layer, _desc in _TIMM_MODELS:
    # Grey-level mean/std of ImageNet (the mean of its RGB statistics): right for timm's
    # single-channel adaptation of pretrained weights, harmless from scratch.
    register_model(
        _name,
        image_size=224,
        cam_layer=_layer,
        recipe="modern",
        description=_desc,
        mean=0.449,
        std=0.226,
    )(_make_builder(_arch))
