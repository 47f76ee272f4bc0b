"""Options shared by several commands, each declared once.

* :data:`TRAINING_OPTIONS`: every training option of ``cxrlab train`` and ``cxrlab cv``, one row
  per :class:`~cxrlab.config.TrainConfig` field. Each option's bounds, choices and shown default
  are read from the field, so the command line and the config cannot disagree; the row adds the
  flag and the help. :func:`training_options` adds the rows to a command.
* :data:`Device`: ``--device auto|cpu|cuda|mps`` of the commands that apply a model. Training
  takes the same name and values (``--accelerator`` stays as a hidden alias); ``gpu`` is read as
  ``cuda`` everywhere.
* :data:`TTA`: ``--tta N`` (test-time augmentation) of ``evaluate`` and ``predict``.

Nothing here imports torch: ``--help`` answers without it.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from cxrlab.errors import suggest

#: Values of ``--device`` (``gpu`` is accepted as a synonym of ``cuda``).
DEVICES = ("auto", "cpu", "cuda", "mps")
_DEVICE_SYNONYMS = {"gpu": "cuda"}

#: Shown as the default of options the model's recipe decides.
RECIPE_DEFAULT = "the model's recipe"

_PANEL = "Training options"


def normalize_device(value: str | None) -> str | None:
    """``value`` as one of :data:`DEVICES` (``gpu`` -> ``cuda``, any case); None stays None.

    Raises:
        typer.BadParameter: Not a known device.
    """
    if value is None:
        return None
    name = _DEVICE_SYNONYMS.get(value.lower(), value.lower())
    if name not in DEVICES:
        raise typer.BadParameter(
            f"{value!r} is not a device.{suggest(value, [*DEVICES, *_DEVICE_SYNONYMS])} "
            f"Use one of {', '.join(DEVICES)} (gpu means cuda)."
        )
    return name


def _inference_device(value: str | None) -> str | None:
    name = normalize_device(value)
    return None if name == "auto" else name


#: ``--device`` of the commands that apply a trained model; ``auto`` (the default) passes None,
#: which the library reads as "cuda when present, else cpu".
Device = Annotated[
    str | None,
    typer.Option(
        "--device",
        metavar="[auto|cpu|cuda|mps]",
        callback=_inference_device,
        show_default="auto: cuda when present",
        help="Where the model runs (gpu means cuda).",
    ),
]

#: ``--tta N`` of the commands that apply a trained model (evaluate, predict): test-time
#: augmentation, the mean over N mild views of each image (:mod:`cxrlab.inference.tta`).
TTA = Annotated[
    int,
    typer.Option(
        "--tta",
        min=1,
        metavar="N",
        help="Test-time augmentation: average N views of each image (identity, rotations of a "
        "few degrees, zoom 0.95-1.05, shifts of 2%; no flips). 1 = off.",
    ),
]


# -- training options ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingOption:
    """One training option: a TrainConfig field and its command-line flag.

    Attributes:
        field: TrainConfig field, dotted for a nested one (``split.method``); "" for ``--config``.
        flags: Option names; the first one (without ``--``) names the function parameter.
        help: Help text (the default is appended from the field).
        type: The value's Python type on the command line.
        hidden_flags: Older spellings that still work but are not listed.
        convert: Turns the parsed value into the field's (after the bounds and choices checks).
        metavar: Shown instead of the type's name.
    """

    field: str
    flags: tuple[str, ...]
    help: str
    type: type = str
    hidden_flags: tuple[str, ...] = ()
    convert: Callable[[Any], Any] | None = None
    metavar: str | None = None

    @property
    def param(self) -> str:
        """The command function's parameter name, from the first flag."""
        return self.flags[0].split("/")[0].removeprefix("--").replace("-", "_")


def _devices(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise typer.BadParameter(f"expected a count of devices (1, 2, ...) or auto, got {value!r}.")
    return int(value)


TRAINING_OPTIONS: tuple[TrainingOption, ...] = (
    TrainingOption("data", ("--data",), "Dataset folder.", Path),
    TrainingOption("model", ("--model",), "Registered model (`cxrlab models` lists them).", str),
    TrainingOption("epochs", ("--epochs",), "Training epochs.", int),
    TrainingOption("batch_size", ("--batch-size",), "Batch size per device.", int),
    TrainingOption("lr", ("--lr",), "Peak learning rate.", float),
    TrainingOption("image_size", ("--image-size",), "Square input size in pixels.", int),
    TrainingOption("ema_decay", ("--ema-decay",), "Weight EMA decay, e.g. 0.998 (0: off).", float),
    TrainingOption("seed", ("--seed",), "The one seed that reproduces the training.", int),
    TrainingOption(
        "limit_per_class",
        ("--limit-per-class",),
        "Seeded subset of N images per class, for quick runs.",
        int,
    ),
    TrainingOption(
        "split.method",
        ("--split-by",),
        "stratified, or source (hold out whole sources).",
        str,
    ),
    TrainingOption("split.seed", ("--split-seed",), "Seed of the split (default: --seed).", int),
    TrainingOption(
        "split.csv",
        ("--split-csv",),
        "Use this split manifest (e.g. from `cxrlab data split`) instead of splitting.",
        Path,
    ),
    TrainingOption(
        "pretrained",
        ("--pretrained/--from-scratch",),
        "Start from ImageNet weights (timm models; downloads them once).",
        bool,
    ),
    TrainingOption(
        "accelerator",
        ("--device",),
        "Where training runs (gpu means cuda).",
        str,
        hidden_flags=("--accelerator",),
        convert=normalize_device,
        metavar="[auto|cpu|cuda|mps]",
    ),
    TrainingOption(
        "devices",
        ("--devices",),
        "Devices per node: a count, or auto.",
        str,
        convert=_devices,
        metavar="[N|auto]",
    ),
    TrainingOption("num_nodes", ("--num-nodes",), "Nodes (multi-node DDP).", int),
    TrainingOption("strategy", ("--strategy",), "Lightning strategy, e.g. ddp.", str),
    TrainingOption("precision", ("--precision",), "Numeric precision.", str),
    TrainingOption("compile", ("--compile/--no-compile",), "torch.compile the model.", bool),
    TrainingOption(
        "refit",
        ("--refit/--no-refit",),
        "Then train a fresh model on train+val for the epochs chosen on val; it becomes the model.",
        bool,
    ),
    TrainingOption(
        "class_weights",
        ("--class-weights",),
        "Weight the training loss by inverse class frequency (balanced).",
        str,
    ),
    TrainingOption(
        "sampler",
        ("--sampler",),
        "Draw training batches shuffled, or balanced by class (with replacement).",
        str,
    ),
    TrainingOption(
        "preprocess.method",
        ("--preprocess",),
        "Image enhancement applied when decoding (Rahman et al. 2021).",
        str,
    ),
    TrainingOption("preprocess.resize", ("--resize",), "stretch, or letterbox (keep aspect).", str),
    TrainingOption(
        "preprocess.lungs", ("--lungs",), "crop to / mask outside the lungs (--segmenter).", str
    ),
    TrainingOption("preprocess.segmenter", ("--segmenter",), "Lung segmenter for --lungs.", Path),
    TrainingOption("logger", ("--logger",), "Also log to Lightning's logger of this kind.", str),
    TrainingOption("cache_dir", ("--cache-dir",), "Decoded-image cache folder.", Path),
    TrainingOption(
        "strict",
        ("--strict/--no-strict",),
        "Abort on corrupt images instead of skipping them.",
        bool,
    ),
    TrainingOption("", ("--config",), "YAML file with any training option.", Path),
)


def config_field(path: str):
    """The pydantic ``FieldInfo`` of a dotted TrainConfig field, or None when it does not exist."""
    from pydantic import BaseModel

    from cxrlab.config import TrainConfig

    model: type[BaseModel] = TrainConfig
    *parents, name = path.split(".")
    for parent in parents:
        model = model.model_fields[parent].annotation
    return model.model_fields.get(name)


def _literal_values(annotation) -> tuple[str, ...]:
    """The string values of the Literal(s) inside ``annotation`` (empty when none)."""
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(v) for v in typing.get_args(annotation))
    return tuple(v for arg in typing.get_args(annotation) for v in _literal_values(arg))


def _bounds(info) -> list[tuple[str, float]]:
    """``[(op, limit)]`` with op in ge/gt/le/lt from a field's annotated-types metadata."""
    out = []
    for item in info.metadata if info is not None else ():
        for op in ("ge", "gt", "le", "lt"):
            limit = getattr(item, op, None)
            if limit is not None:
                out.append((op, limit))
    return out


_OP_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_OP_TEST = {
    "ge": lambda v, x: v >= x,
    "gt": lambda v, x: v > x,
    "le": lambda v, x: v <= x,
    "lt": lambda v, x: v < x,
}


def _checker(option: TrainingOption) -> tuple[Callable[[Any], Any], tuple[str, ...]]:
    """A Typer callback checking a value against its field's choices and bounds, and the choices."""
    info = config_field(option.field) if option.field else None
    choices = () if option.convert else _literal_values(info.annotation if info else None)
    bounds = _bounds(info)

    def check(value):
        if value is None:
            return None
        if choices and str(value) not in choices:
            raise typer.BadParameter(
                f"{value!r} is not one of {', '.join(choices)}.{suggest(str(value), choices)}"
            )
        for op, limit in bounds:
            if not _OP_TEST[op](value, limit):
                raise typer.BadParameter(
                    f"{value} is out of range: it must be {_OP_TEXT[op]} {limit}."
                )
        return option.convert(value) if option.convert else value

    return check, choices


def _help(option: TrainingOption, info) -> str:
    """The row's help with TrainConfig's default appended (none for required fields)."""
    if info is None or info.is_required():
        return option.help
    default = info.default
    if default is None:
        from cxrlab.config import RECIPE_FIELDS

        if option.field not in (*RECIPE_FIELDS, "image_size"):
            return option.help
        default = RECIPE_DEFAULT
    elif isinstance(default, bool):
        flags = option.flags[0].split("/")
        default = flags[0 if default else 1] if len(flags) > 1 else str(default).lower()
    return f"{option.help} (default: {default})"


def _parameters(option: TrainingOption) -> list[inspect.Parameter]:
    """The function parameter(s) Typer reads the option from (a hidden one per old spelling)."""
    info = config_field(option.field) if option.field else None
    check, choices = _checker(option)
    metavar = option.metavar or ("[" + "|".join(choices) + "]" if choices else None)
    params = []
    for i, flags in enumerate([option.flags, *((f,) for f in option.hidden_flags)]):
        typer_option = typer.Option(
            *flags,
            help=_help(option, info),
            callback=check,
            metavar=metavar,
            show_default=False,
            hidden=i > 0,
            rich_help_panel=_PANEL,
        )
        name = option.param if i == 0 else f"{option.param}__{i}"
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[option.type | None, typer_option],
            )
        )
    return params


@dataclass
class TrainingValues:
    """What the user passed of :data:`TRAINING_OPTIONS` (None: not given).

    Attributes:
        config_file: ``--config``.
        overrides: TrainConfig keyword overrides for :func:`cxrlab.config.load_config`, nested
            fields as dicts (``split={"method": "source"}``); options not given are left out.
    """

    config_file: Path | None
    overrides: dict[str, Any]


def _collect(options: tuple[TrainingOption, ...], kwargs: dict[str, Any]) -> TrainingValues:
    config_file = None
    overrides: dict[str, Any] = {}
    for option in options:
        values = [kwargs.pop(option.param)]
        values += [
            kwargs.pop(f"{option.param}__{i}") for i in range(1, len(option.hidden_flags) + 1)
        ]
        given = [v for v in values if v is not None]
        if len({str(v) for v in given}) > 1:
            raise typer.BadParameter(
                f"{option.flags[0]} and its old spelling {', '.join(option.hidden_flags)} "
                f"disagree ({' vs '.join(map(str, given))}); pass one.",
                param_hint=option.flags[0],
            )
        if not given:
            continue
        if not option.field:
            config_file = given[0]
            continue
        *parents, name = option.field.split(".")
        target = overrides
        for parent in parents:
            target = target.setdefault(parent, {})
        target[name] = given[0]
    return TrainingValues(config_file=config_file, overrides=overrides)


def training_options(*, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator adding :data:`TRAINING_OPTIONS` (less ``exclude``, by field) to a command.

    The command takes a first parameter ``training: TrainingValues`` instead of one parameter per
    option; its own parameters come first in ``--help``, the training options after them.
    """
    options = tuple(o for o in TRAINING_OPTIONS if o.field not in exclude)

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != "training"]
        added = [p for option in options for p in _parameters(option)]

        @functools.wraps(func)
        def command(**kwargs):
            return func(training=_collect(options, kwargs), **kwargs)

        command.__signature__ = signature.replace(parameters=[*own, *added])
        return command

    return decorate
