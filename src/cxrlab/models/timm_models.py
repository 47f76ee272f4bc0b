"""Modern backbones from timm, built with a single input channel.

The curated entries below are tested with cxrlab's recipes and Grad-CAM layers. Any other timm
architecture is available as ``--model timm/<arch>`` (:func:`timm_spec`): built from scratch with
one input channel, the modern recipe, timm's default input size, and Grad-CAM on its last feature
stage (``feature_info``); transformers' token outputs may need ``cxrlab explain --layer``.
"""

from __future__ import annotations

from torch import nn

from cxrlab.errors import ConfigError, suggest
from cxrlab.models.registry import TIMM_PREFIX, ModelSpec, register_model


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


def timm_spec(arch: str) -> ModelSpec:
    """The spec of ``timm/<arch>``: any architecture timm can build.

    Raises:
        ConfigError: timm knows no such architecture (close matches are suggested).
    """
    import timm

    if not timm.is_model(arch):
        close = suggest(arch, timm.list_models(f"*{arch.split('_')[0]}*") or timm.list_models())
        raise ConfigError(
            f"Unknown timm architecture {arch!r} in --model {TIMM_PREFIX}{arch}.{close} "
            "`python -c \"import timm; print(timm.list_models('*vit*'))\"` lists the names."
        )
    size = 224
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is not None and getattr(cfg, "input_size", None):
        size = int(cfg.input_size[-1])
    return ModelSpec(
        name=f"{TIMM_PREFIX}{arch}",
        builder=_make_builder(arch),
        image_size=size,
        cam_layer="",
        recipe="modern",
        description=f"{arch} (timm, any architecture)",
        mean=0.449,
        std=0.226,
    )


def last_feature_stage(network: nn.Module) -> str:
    """Dotted name of a timm network's last feature stage (its ``feature_info``), for Grad-CAM."""
    info = getattr(network, "feature_info", None)
    if info:
        entry = info[-1]
        return str(entry["module"] if isinstance(entry, dict) else entry.module)
    convs = [name for name, m in network.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else ""
