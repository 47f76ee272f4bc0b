"""``study.yaml``: one file that names a whole results grid (models x seeds x folds x variants).

Validated like :class:`~cxrlab.config.TrainConfig`: unknown keys (top level, ``train:`` and each
variant) get close-match suggestions, models are checked against the registry, the dataset and
external folders must exist and the baseline must be one of the models, all before any training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cxrlab.config import TrainConfig
from cxrlab.errors import ConfigError, suggest

#: TrainConfig fields a study sets per cell; ``train:`` may not set them.
CELL_FIELDS = ("data", "out", "model", "seed", "resume", "overwrite")
#: Split options ``split:`` may set (folds, fold and seed are the study's).
SPLIT_KEYS = ("method", "val", "test", "near_duplicates")


class StudyConfig(BaseModel):
    """A study: every (model, seed, fold, variant) cell trained with the same ``train`` options.

    Attributes:
        name: The study's name (default: the file's stem); an out folder holds one study.
        data: The training dataset folder.
        models: ``--model`` values (``timm/<arch>`` too).
        seeds: Training seeds; every seed of one fold shares that fold's split.
        folds: K-fold cross-validation with K folds; None: one train/val/test split.
        split_seed: The seed of the split (the folds), shared by every cell.
        split: Split options (method, val, test, near_duplicates).
        baseline: The model (or ``model+variant``) every other one is compared with; default the
            first model.
        train: Any ``cxrlab train`` option (TrainConfig field) for every cell.
        variants: Named sets of extra train options (e.g. preprocessing variants); each variant
            multiplies the grid. None: one variant with no extra options.
        external: Labelled external test sets, name -> folder.
        n_boot: Bootstrap resamples of each cell's and the pooled intervals.
        eval_seed: Bootstrap seed.
        figures: Draw each cell's own figures (the study report draws its own either way).
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data: Path
    models: list[str] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    folds: int | None = Field(None, ge=2)
    split_seed: int = 0
    split: dict[str, Any] = Field(default_factory=dict)
    baseline: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] | None = None
    external: dict[str, Path] = Field(default_factory=dict)
    n_boot: int = Field(1000, ge=1)
    eval_seed: int = 0
    figures: bool = False

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        from cxrlab.models.registry import get_spec

        for name in value:
            get_spec(name)  # ConfigError with suggestions
        if len(set(value)) != len(value):
            raise ValueError(f"models are listed twice: {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct, got {value}")
        return value

    def labels(self) -> list[str]:
        """Model labels of the grid: ``model`` or ``model+variant``, models first."""
        if not self.variants:
            return list(self.models)
        return [f"{m}+{v}" for m in self.models for v in self.variants]

    @property
    def baseline_label(self) -> str:
        return self.baseline or self.labels()[0]


def load_study(path: str | os.PathLike) -> StudyConfig:
    """Read and validate ``study.yaml``; relative paths are relative to the file's folder.

    Raises:
        ConfigError: The file is missing or not YAML, a key or model is unknown (with close
            matches), a path does not exist, or the baseline is not among the models.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Study file {path} does not exist. Pass the path of a study.yaml.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Study file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Study file {path} must hold a mapping (data:, models:, ...).")
    raw.setdefault("name", path.stem)
    return validate_study(raw, where=str(path), base=path.resolve().parent)


def validate_study(raw: dict[str, Any], *, where: str, base: Path | None = None) -> StudyConfig:
    """:class:`StudyConfig` from a mapping, with every check of :func:`load_study`."""
    base = base or Path.cwd()
    raw = dict(raw)
    for key in ("data",):
        if isinstance(raw.get(key), str):
            raw[key] = _resolve(raw[key], base)
    if isinstance(raw.get("external"), dict):
        raw["external"] = {k: _resolve(v, base) for k, v in raw["external"].items()}
    try:
        study = StudyConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, where)) from None
    except ConfigError as exc:  # raised inside a validator (unknown model)
        raise ConfigError(f"Invalid study {where}: models: {exc}") from None
    if not study.data.exists():
        raise ConfigError(
            f"Invalid study {where}: data: the dataset folder {study.data} does not exist. Give "
            "the folder holding the class folders (relative paths are relative to the study file)."
        )
    for name, folder in study.external.items():
        if not Path(folder).is_dir():
            raise ConfigError(
                f"Invalid study {where}: external.{name}: the folder {folder} does not exist. Give "
                "a labelled dataset folder (one sub-folder per class) or remove the entry."
            )
    _check_options(study.train, where, "train")
    for vname, options in (study.variants or {}).items():
        _check_options(options, where, f"variants.{vname}")
    unknown = [k for k in study.split if k not in SPLIT_KEYS]
    if unknown:
        raise ConfigError(
            f"Invalid study {where}: split.{unknown[0]}: unknown split option."
            + suggest(unknown[0], SPLIT_KEYS)
            + f" split may set {list(SPLIT_KEYS)}; folds and split_seed are top-level keys."
        )
    if study.baseline is not None and study.baseline not in study.labels():
        raise ConfigError(
            f"Invalid study {where}: baseline: {study.baseline!r} is not among the models "
            f"{study.labels()}." + suggest(study.baseline, study.labels())
        )
    # Build one cell's TrainConfig per label, so bad values fail now, not in the middle.
    for label in study.labels():
        cell_train_config(study, label, seed=study.seeds[0], fold=0, out=Path("unused"))
    return study


def _resolve(value: Any, base: Path) -> Any:
    if not isinstance(value, (str, os.PathLike)):
        return value
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _check_options(options: dict[str, Any], where: str, key: str) -> None:
    allowed = [f for f in TrainConfig.model_fields if f not in CELL_FIELDS]
    for name in options:
        if name in CELL_FIELDS:
            raise ConfigError(
                f"Invalid study {where}: {key}.{name}: set per cell by the study (data, models, "
                "seeds and the out folder are top-level keys); remove it from this section."
            )
        if name not in allowed:
            raise ConfigError(
                f"Invalid study {where}: {key}.{name}: unknown train option."
                + suggest(name, allowed)
                + " Any `cxrlab train` option (its config key) may go here."
            )


def _explain(exc: ValidationError, where: str) -> str:
    fields = list(StudyConfig.model_fields)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown study key." + suggest(str(err["loc"][-1]), fields)
        parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return f"Invalid study {where}: " + "; ".join(parts)


def split_label(label: str) -> tuple[str, str | None]:
    """``"resnet18+clahe"`` -> ``("resnet18", "clahe")``; no variant -> ``(label, None)``."""
    model, _, variant = label.partition("+")
    return model, (variant or None)


def cell_train_config(
    study: StudyConfig, label: str, *, seed: int, fold: int | None, out: Path
) -> TrainConfig:
    """The :class:`~cxrlab.config.TrainConfig` of one cell (fold None: the single split)."""
    from cxrlab.config import load_config

    model, variant = split_label(label)
    options = dict(study.train)
    if variant is not None:
        options.update((study.variants or {})[variant])
    split_options = {**dict(options.pop("split", None) or {}), **study.split}
    split_options["seed"] = study.split_seed
    if study.folds:
        split_options.update(folds=study.folds, fold=fold or 0)
    options.setdefault("progress", False)
    try:
        return load_config(
            None, data=study.data, out=out, model=model, seed=seed, split=split_options, **options
        )
    except ConfigError as exc:
        raise ConfigError(f"Invalid study (cell {label}): {exc}") from None
