"""One typed configuration for a training run, loadable from YAML and saved into every run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cxrlab.errors import ConfigError, suggest

SplitMethod = Literal["stratified", "source"]
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
LoggerKind = Literal["none", "csv", "tensorboard", "mlflow"]
#: Class activation map methods of :mod:`cxrlab.explain.cam` (here, so that the CLI lists them
#: without importing torch).
CamMethod = Literal["gradcam", "gradcam++", "scorecam", "eigencam"]
CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "scorecam", "eigencam")


class SplitConfig(BaseModel):
    """How images are divided into train/val/test."""

    model_config = ConfigDict(extra="forbid")

    method: SplitMethod = "stratified"
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    #: k-fold cross-validation: number of folds (None: a single split).
    folds: int | None = Field(None, ge=2)
    #: Which fold is the test fold when ``folds`` is set.
    fold: int = Field(0, ge=0)
    #: Group near-duplicates (perceptual hash) so they never straddle splits.
    near_duplicates: bool = True
    #: Seed of the split (and of the ``limit_per_class`` subset). None: the training seed, so
    #: runs with different training seeds share one split only when this is set.
    seed: int | None = None
    #: Use this split manifest (a split.csv from ``cxrlab data split`` or another run) as the
    #: split instead of splitting the dataset; the run's split.csv then holds its assignment.
    csv: Path | None = None


class AugmentConfig(BaseModel):
    """Batched on-device augmentation (see :mod:`cxrlab.training.augment`)."""

    model_config = ConfigDict(extra="forbid")

    rotate: float = Field(10.0, ge=0, le=45, description="max rotation, degrees")
    shift: float = Field(0.06, ge=0, le=0.5, description="max shift, fraction of side")
    scale: float = Field(0.1, ge=0, le=0.5, description="max zoom in/out, fraction")
    hflip: bool = False
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    gamma: float = Field(0.1, ge=0, le=1)


PreprocessMethod = Literal["none", "he", "clahe", "gamma", "complement", "bcet"]
PREPROCESS_METHODS: tuple[str, ...] = ("none", "he", "clahe", "gamma", "complement", "bcet")


class PreprocessConfig(BaseModel):
    """Image enhancement and lung cropping applied in the one decode path
    (:mod:`cxrlab.data.preprocess`); saved in the model's metadata, so prediction applies it too.

    A plain string is the method: ``preprocess: clahe`` means ``preprocess: {method: clahe}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: PreprocessMethod = "none"
    #: CLAHE: contrast clip limit (OpenCV's ``clipLimit``) and tiles per side.
    clip_limit: float = Field(2.0, gt=0, le=100)
    tile_grid: int = Field(8, ge=1, le=64)
    #: Gamma correction: out = 255 (in / 255) ** gamma; "auto" maps the image's mean to mid-grey.
    gamma: float | Literal["auto"] = "auto"
    #: stretch: to the square as before; letterbox: keep the aspect ratio, pad with black.
    resize: Literal["stretch", "letterbox"] = "stretch"
    #: With a segmenter: crop to the lungs' bounding box plus ``lung_margin``, or zero outside them.
    lungs: Literal["none", "crop", "mask"] = "none"
    lung_margin: float = Field(0.05, ge=0, le=1)
    #: Lung segmenter (``cxrlab segment train`` output) for ``lungs``.
    segmenter: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {"method": value}
        if isinstance(value, dict) and isinstance(value.get("method"), str):
            name = value["method"].strip().lower()
            if name not in PREPROCESS_METHODS:
                raise ValueError(
                    f"unknown preprocessing {value['method']!r}; choose one of "
                    f"{', '.join(PREPROCESS_METHODS)}.{suggest(name, PREPROCESS_METHODS)}"
                )
            value = {**value, "method": name}
        return value

    @model_validator(mode="after")
    def _lungs_need_segmenter(self) -> PreprocessConfig:
        if self.lungs != "none" and self.segmenter is None:
            raise ValueError(
                f"lungs: {self.lungs} needs a lung segmenter: set preprocess.segmenter (or "
                "--segmenter) to the --out folder of `cxrlab segment train`."
            )
        if isinstance(self.gamma, float) and not 0.05 <= self.gamma <= 20:
            raise ValueError(f"gamma must be 'auto' or in [0.05, 20], got {self.gamma}.")
        return self

    def is_identity(self) -> bool:
        """True when decoding is exactly the pre-preprocessing path (old caches stay valid)."""
        return self.method == "none" and self.resize == "stretch" and self.lungs == "none"


class TrainConfig(BaseModel):
    """Every option of ``cxrlab train``; ``None`` means "the model's recipe decides"."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    out: Path
    model: str = "resnet18"
    pretrained: bool = False
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    optimizer: Literal["adam", "adamw", "sgd"] | None = None
    scheduler: Literal["plateau", "onecycle", "cosine", "none"] | None = None
    warmup_epochs: float | None = Field(None, ge=0)
    early_stopping_patience: int | None = Field(None, ge=1)
    monitor: Literal["val_loss", "val_f1"] | None = None
    #: Exponential moving average of the weights (0 switches it off).
    ema_decay: float | None = Field(None, ge=0, lt=1)
    #: Class imbalance: "balanced" weights the loss by N / (K * n_class) from the training counts.
    class_weights: Literal["none", "balanced"] = "none"
    #: Class imbalance: "balanced" draws training batches with equal expected counts per class
    #: (with replacement, one epoch = as many draws as training images).
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    image_size: int | None = Field(None, ge=16, le=2048)
    seed: int = 0
    limit_per_class: int | None = Field(None, ge=1)
    split: SplitConfig = SplitConfig()
    augment: AugmentConfig | None = None
    preprocess: PreprocessConfig = PreprocessConfig()
    accelerator: Accelerator = "auto"
    devices: int | Literal["auto"] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: bool = True
    compile: bool = False
    #: After training, train a fresh model (same seed) on train+val for the number of epochs the
    #: best checkpoint was chosen at; it becomes the run's model (``checkpoints/refit.ckpt``).
    refit: bool = False
    decode_workers: int | None = Field(None, ge=1)
    cache_dir: Path | None = None
    strict: bool = False
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    #: Lightning logger besides history.csv, writing under the run directory's ``logs/`` (MLflow:
    #: a local file store there unless MLFLOW_TRACKING_URI is set).
    logger: LoggerKind = "none"

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from cxrlab.models.registry import get_spec

        get_spec(value)  # raises ConfigError with suggestions
        return value

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


#: TrainConfig fields that do not change what a run computes (where it is written, how far it
#: has got, decode parallelism, where the image cache lives).
NEUTRAL_FIELDS = ("out", "resume", "overwrite", "progress", "decode_workers", "cache_dir")


def option_differences(asked: TrainConfig, saved: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """The options (dotted names) in which two configs differ, :data:`NEUTRAL_FIELDS` left out.

    Paths are compared resolved, so a dataset named relatively and absolutely is one dataset.
    Returns ``{name: (asked value, saved value)}``.
    """

    def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value.resolve() if isinstance(value, Path) else value
        return out

    a = flat(asked.model_dump(exclude=set(NEUTRAL_FIELDS)))
    b = flat(saved.model_dump(exclude=set(NEUTRAL_FIELDS)))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


#: TrainConfig fields that, left unset (None), take the model's recipe's value
#: (:func:`cxrlab.training.recipes.resolve_recipe`); ``image_size`` takes the model's input size.
RECIPE_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "label_smoothing",
    "optimizer",
    "scheduler",
    "warmup_epochs",
    "early_stopping_patience",
    "monitor",
    "ema_decay",
)


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from an optional YAML file and keyword overrides.

    Overrides that are ``None`` are ignored, so CLI options left unset keep the file's values.
    Nested keys may be given as ``split={"method": "source"}``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"Config file {path} must hold a mapping of options, got {type(loaded).__name__}."
            )
        values.update(loaded)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None


def _explain(exc: ValidationError, path) -> str:
    fields = list(TrainConfig.model_fields)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            section = err["loc"][0] if len(err["loc"]) > 1 else None
            names = list(PreprocessConfig.model_fields) if section == "preprocess" else fields
            if section == "split":
                names = list(SplitConfig.model_fields)
            msg = "unknown option." + suggest(str(err["loc"][-1]), names)
            if section is None and str(err["loc"][-1]) in PREPROCESS_METHODS:
                msg += f" Preprocessing goes under preprocess: (preprocess: {err['loc'][-1]})."
        parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
    where = f" in {path}" if path else ""
    return f"Invalid configuration{where}: " + "; ".join(parts)


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    from cxrlab.io import write_text

    write_text(path, yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
