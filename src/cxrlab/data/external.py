"""Read an external validation set and map its classes to a trained model's classes.

Two forms are read, both by :func:`load_external`:

* a dataset folder in any layout :func:`~cxrlab.data.scan.scan_dataset` reads (release layout,
  flat, class-per-folder, DICOM): class folder names are matched to the model's classes by
  :func:`~cxrlab.data.classes.canonical_class`;
* a folder plus an index CSV (``--index FILE --path-column C --label-column C``), the form most
  public collections ship (Cohen's ``metadata.csv``, lung-masks' ``pairs.csv``): paths are
  relative to the folder (or absolute), labels are the CSV's values.

Labels that are not one of the model's classes must be mapped (``class_map``: external name ->
model class), dropped by name (``drop_class``) or dropped wholesale (``drop_unmapped``); anything
else is refused with a :class:`~cxrlab.errors.DataError` naming the classes and these ways out.
Nothing is written anywhere; the caller decides where the results go.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrlab.data.classes import canonical_class
from cxrlab.errors import ConfigError, DataError, suggest

logger = logging.getLogger(__name__)

#: Folder names that are never a source (layout folders of the release).
_LAYOUT_DIRS = frozenset({"images", "image", "imgs"})


@dataclass
class ExternalSet:
    """An external set, its labels mapped to the model's classes.

    Attributes:
        root: The folder given.
        index: One row per image kept: ``path`` (absolute), ``label`` (a model class),
            ``original_label`` (as the folder or CSV spelled it), ``source`` ("" if unknown).
        classes_present: Model classes with at least one image, in model order.
        classes_absent: Model classes without any image (metrics are computed over the rest).
        mapping: Original label -> model class, or ``None`` where the label was dropped.
        skipped: ``path``, ``reason`` of rows left out (dropped class, missing file).
        form: ``"folder"`` or ``"index"``.
    """

    root: Path
    index: pd.DataFrame
    classes_present: list[str]
    classes_absent: list[str]
    mapping: dict[str, str | None]
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))
    form: str = "folder"


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", str(name).strip()).lower()


def parse_class_map(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["A=B", ...]`` (the CLI's ``--class-map``) -> ``{"A": "B"}``.

    Raises:
        ConfigError: An item has no ``=`` or an empty side.
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        source, sep, target = str(item).rpartition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(
                f"--class-map {item!r} is not of the form 'EXTERNAL=MODEL_CLASS' (e.g. "
                "--class-map 'COVID-19=COVID'). Quote it when a name holds spaces."
            )
        out[source.strip()] = target.strip()
    return out


def resolve_classes(
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    class_map: Mapping[str, str] | None = None,
    drop_class: Sequence[str] = (),
    drop_unmapped: bool = False,
    where: str = "the external set",
) -> dict[str, str | None]:
    """Decide the model class (or ``None``: dropped) of every distinct external label.

    Order of rules: ``class_map`` (matched ignoring case and repeated spaces), then the
    canonical class name, then ``drop_class``, then ``drop_unmapped``.

    Raises:
        ConfigError: A ``class_map`` target is not a model class.
        DataError: A label is none of the model's classes and neither mapped nor dropped.
    """
    classes = list(classes)
    targets = {}
    for source, target in (class_map or {}).items():
        canon = canonical_class(target)
        match = next((c for c in classes if c == canon or _norm(c) == _norm(target)), None)
        if match is None:
            raise ConfigError(
                f"--class-map {source}={target}: {target!r} is not a class of the model, whose "
                f"classes are {classes}.{suggest(target, classes)} Map {source!r} to one of them."
            )
        targets[_norm(source)] = match
    dropped = {_norm(d) for d in drop_class}
    mapping: dict[str, str | None] = {}
    unknown = []
    for label in dict.fromkeys(str(x) for x in labels):
        if _norm(label) in targets:
            mapping[label] = targets[_norm(label)]
        elif canonical_class(label) in classes:
            mapping[label] = canonical_class(label)
        elif _norm(label) in dropped or drop_unmapped:
            mapping[label] = None
        else:
            unknown.append(label)
    if unknown:
        counts = pd.Series(list(labels)).astype(str).value_counts()
        listed = ", ".join(f"{u!r} ({int(counts.get(u, 0))} images)" for u in unknown[:12])
        more = f" and {len(unknown) - 12} more" if len(unknown) > 12 else ""
        raise DataError(
            f"{where} holds class(es) the model does not know: {listed}{more}; the model's "
            f"classes are {classes}. Map each to one of them with --class-map "
            f"'{unknown[0]}={classes[0]}', leave it out with --drop-class '{unknown[0]}', or (an "
            "index file with many findings) pass --drop-unmapped to leave out every label that "
            "is neither a model class nor mapped."
        )
    return mapping


def _folder_index(folder: Path, workers: int | None) -> tuple[pd.DataFrame, Path]:
    from cxrlab.data.scan import scan_dataset

    try:
        scan = scan_dataset(folder, hash=False, workers=workers)
    except DataError as exc:
        raise DataError(
            f"{exc} External set {folder}: give a folder with one sub-folder per class (as the "
            "COVID-19 Radiography Database), or a folder plus its index CSV with --index FILE "
            "--path-column C --label-column C."
        ) from None
    frame = scan.index[["path", "label", "source"]].copy()
    root = scan.root
    # Without metadata, the source is the folder between the class folder and the file.
    fallback = []
    for path in frame["path"]:
        parts = Path(path).relative_to(root).parts[1:-1]
        fallback.append("/".join(p for p in parts if p.lower() not in _LAYOUT_DIRS))
    frame["source"] = [s or f for s, f in zip(frame["source"], fallback, strict=True)]
    bad = scan.problems_frame()
    bad = bad[bad["kind"].isin(["unreadable", "truncated"])]
    skipped = pd.DataFrame(
        {"path": bad["path"], "reason": bad["kind"] + ": " + bad["detail"]},
        columns=["path", "reason"],
    )
    return frame, skipped


def _csv_index(
    folder: Path, index: Path, path_column: str, label_column: str, source_column: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not index.is_file():
        raise DataError(f"--index {index} does not exist. Pass the external set's CSV file.")
    try:
        table = pd.read_csv(index, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"--index {index} could not be read as a CSV file ({exc}).") from None
    for option, col in (
        ("--path-column", path_column),
        ("--label-column", label_column),
        ("--source-column", source_column),
    ):
        if col is not None and col not in table.columns:
            raise DataError(
                f"{option} {col!r} is not a column of {index}, whose columns are "
                f"{list(table.columns)}.{suggest(col, table.columns)}"
            )
    if table.empty:
        raise DataError(f"--index {index} has no rows. Pass the external set's index CSV.")
    paths = [Path(p) if Path(p).is_absolute() else folder / p for p in table[path_column]]
    frame = pd.DataFrame(
        {
            "path": [str(p.resolve()) for p in paths],
            "label": table[label_column].str.strip(),
            "source": table[source_column].str.strip() if source_column else "",
        }
    )
    exists = pd.Series([p.is_file() for p in paths], index=frame.index)
    skipped = pd.DataFrame(
        {"path": frame.loc[~exists, "path"], "reason": f"listed in {index.name} but not found"}
    )
    if not exists.any():
        raise DataError(
            f"None of the {len(frame)} files that {index} lists in column {path_column!r} exists "
            f"below {folder} (e.g. {paths[0]}). Paths must be relative to the folder given "
            "(or absolute); check FOLDER and --path-column."
        )
    if (~exists).any():
        logger.warning(
            "%d file(s) listed in %s do not exist (e.g. %s); left out",
            int((~exists).sum()),
            index,
            skipped["path"].iloc[0],
        )
    return frame[exists.to_numpy()].reset_index(drop=True), skipped


def load_external(
    folder: str | os.PathLike,
    classes: Sequence[str],
    *,
    index: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "label",
    source_column: str | None = None,
    class_map: Mapping[str, str] | Iterable[str] | None = None,
    drop_class: Sequence[str] = (),
    drop_unmapped: bool = False,
    workers: int | None = None,
) -> ExternalSet:
    """Read an external set and map its labels to ``classes`` (see the module docstring).

    Raises:
        DataError: The folder is missing, empty, has no class folders (and no index), holds only
            unknown or dropped classes, or its index CSV is unusable.
        ConfigError: A ``class_map`` item is malformed or maps to a class the model lacks.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(
            f"External set folder {root} does not exist (or is not a folder). Pass the folder "
            "that holds the external images (with --index when a CSV lists them)."
        )
    if not any(root.iterdir()):
        raise DataError(
            f"External set folder {root} is empty. Put the external images in it, one sub-folder "
            "per class, or pass the folder its --index CSV refers to."
        )
    if index is not None:
        frame, skipped = _csv_index(root, Path(index), path_column, label_column, source_column)
        where, form = f"--index {index} (column {label_column!r})", "index"
    else:
        frame, skipped = _folder_index(root, workers)
        where, form = f"External set {root}", "folder"
    mapping = resolve_classes(
        frame["label"].tolist(),
        classes,
        class_map=parse_class_map(class_map),
        drop_class=drop_class,
        drop_unmapped=drop_unmapped,
        where=where,
    )
    frame = frame.rename(columns={"label": "original_label"})
    frame["label"] = frame["original_label"].map(mapping)
    drop = frame["label"].isna()
    if drop.any():
        skipped = pd.concat(
            [
                skipped,
                pd.DataFrame(
                    {
                        "path": frame.loc[drop, "path"],
                        "reason": "class " + frame.loc[drop, "original_label"] + " dropped",
                    }
                ),
            ],
            ignore_index=True,
        )
    kept = frame[~drop][["path", "label", "original_label", "source"]].reset_index(drop=True)
    if kept.empty:
        raise DataError(
            f"{where}: every image was left out: its classes "
            f"{sorted(k for k, v in mapping.items() if v is None)} are dropped and none is one "
            f"of the model's classes {list(classes)}. Map at least one with --class-map "
            f"'NAME={list(classes)[0]}'."
        )
    present = [c for c in classes if (kept["label"] == c).any()]
    absent = [c for c in classes if c not in present]
    if absent:
        logger.warning(
            "The external set has no image of the model's class(es) %s; metrics are computed "
            "over the %d present class(es), the full %dx%d confusion matrix is kept",
            absent,
            len(present),
            len(classes),
            len(classes),
        )
    return ExternalSet(
        root=root.resolve(),
        index=kept,
        classes_present=present,
        classes_absent=absent,
        mapping=mapping,
        skipped=skipped.reset_index(drop=True),
        form=form,
    )
