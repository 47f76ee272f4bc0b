"""Training recipes: what options left unset in the config default to, per model family.

``seed``: the seed project's Keras recipe (batch 16, Adam 0.002, plateau LR halving, early stopping
on validation loss, rotation 20 / shift 0.2 / horizontal flip). ``modern``: AdamW with one-cycle
(warm-up then cosine annealing), label smoothing 0.1, mild anatomy-respecting augmentation (no flip,
no 90-degree turns) and the best checkpoint chosen by validation macro-F1. README explains why.
Both leave weight EMA off (``ema_decay`` 0): it made no difference in the one comparison run so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrlab.config import RECIPE_FIELDS, TrainConfig
from cxrlab.models.registry import get_spec
from cxrlab.training.augment import AugmentParams


@dataclass(frozen=True)
class Recipe:
    """A fully resolved set of training hyper-parameters."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    label_smoothing: float
    optimizer: str
    scheduler: str
    warmup_epochs: float
    early_stopping_patience: int | None
    monitor: str
    ema_decay: float
    image_size: int
    augment: AugmentParams

    @property
    def monitor_mode(self) -> str:
        return "min" if self.monitor == "val_loss" else "max"


_DEFAULTS = {
    "seed": dict(
        epochs=100,
        batch_size=16,
        lr=0.002,
        weight_decay=0.0,
        label_smoothing=0.0,
        optimizer="adam",
        scheduler="plateau",
        warmup_epochs=0.0,
        early_stopping_patience=20,
        monitor="val_loss",
        ema_decay=0.0,
        augment=AugmentParams(
            rotate=20,
            shift=0.2,
            scale=0,
            hflip=True,
            brightness=0,
            contrast=0,
            gamma=0,
            fill="border",
        ),
    ),
    "modern": dict(
        epochs=80,
        batch_size=64,
        lr=2e-3,
        weight_decay=0.05,
        label_smoothing=0.1,
        optimizer="adamw",
        scheduler="onecycle",
        warmup_epochs=2.0,
        early_stopping_patience=None,
        monitor="val_f1",
        ema_decay=0.0,
        augment=AugmentParams(),
    ),
}


def resolve_recipe(config: TrainConfig) -> Recipe:
    """Fill every unset option of ``config`` from its model's recipe."""
    spec = get_spec(config.model)
    base = dict(_DEFAULTS[spec.recipe])
    for field in RECIPE_FIELDS:
        value = getattr(config, field)
        if value is not None:
            base[field] = value
    if config.augment is not None:
        fill = base["augment"].fill
        base["augment"] = AugmentParams(**config.augment.model_dump(), fill=fill)
    base["image_size"] = config.image_size or spec.image_size
    return Recipe(**base)


def resolved_config(config: TrainConfig, recipe: Recipe | None = None) -> TrainConfig:
    """``config`` with every value its recipe decides written in: what config.yaml records.

    ``resolve_recipe(resolved_config(c)) == resolve_recipe(c)``, so the saved file reproduces the
    run, and a ``--resume`` that reads it back trains with the same values.
    """
    from cxrlab.config import AugmentConfig

    recipe = recipe or resolve_recipe(config)
    values = config.model_dump()
    values.update({name: getattr(recipe, name) for name in RECIPE_FIELDS})
    values["image_size"] = recipe.image_size
    values["augment"] = {name: getattr(recipe.augment, name) for name in AugmentConfig.model_fields}
    return TrainConfig.model_validate(values)
