"""Model registry: models register with a decorator and are built by one factory.

Modelled on timm's ``@register_model`` / ``create_model``. Each entry carries the metadata that
prediction, evaluation and explanation need (default input size, Grad-CAM layer, training recipe),
so no other module re-declares those constants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from cxrlab.errors import ConfigError, suggest

Recipe = Literal["seed", "modern"]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model.

    Attributes:
        name: Registry name (``cxrlab train --model NAME``).
        builder: ``builder(num_classes, *, pretrained, in_chans) -> nn.Module`` returning the bare
            network; it receives normalised input and returns logits.
        image_size: Default square input size in pixels.
        cam_layer: Dotted name, inside the bare network, of the layer Grad-CAM hooks by default
            ("" for ``timm/<arch>`` models: their last feature stage, found when built).
        recipe: Default training recipe: ``"seed"`` (the seed's Adam/plateau recipe) or
            ``"modern"``.
        description: One line for ``cxrlab models``.
        mean: Intensity subtracted from [0, 1] input before the network.
        std: Divisor applied after subtracting ``mean``.
    """

    name: str
    builder: Callable[..., nn.Module]
    image_size: int
    cam_layer: str
    recipe: Recipe
    description: str
    mean: float = 0.0
    std: float = 1.0


_REGISTRY: dict[str, ModelSpec] = {}

#: ``--model timm/<arch>`` builds any timm architecture from scratch, beside the curated entries.
TIMM_PREFIX = "timm/"


def register_model(
    name: str,
    *,
    image_size: int,
    cam_layer: str,
    recipe: Recipe,
    description: str,
    mean: float = 0.0,
    std: float = 1.0,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a network builder under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name, builder, image_size, cam_layer, recipe, description, mean, std
        )
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """Look up a model's spec; an unknown name raises ConfigError suggesting close matches.

    Besides the registered names, ``timm/<arch>`` names any architecture timm knows (for example
    ``timm/vit_tiny_patch16_224``): see :func:`cxrlab.models.timm_models.timm_spec`.
    """
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        from cxrlab.models.timm_models import timm_spec

        return timm_spec(name[len(TIMM_PREFIX) :])
    raise ConfigError(
        f"Unknown model {name!r}.{suggest(name, _REGISTRY)} "
        f"Available models: {', '.join(_REGISTRY)} (see `cxrlab models`), or any timm "
        f"architecture as {TIMM_PREFIX}<name> (e.g. {TIMM_PREFIX}vit_tiny_patch16_224)."
    ) from None


def _ensure_loaded() -> None:
    # Importing the modules runs their @register_model decorators.
    from cxrlab.models import seed_cnn, small_cnn, timm_models  # noqa: F401
