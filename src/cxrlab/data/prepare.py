"""The one path from a dataset folder to a split manifest: scan, drop undecodable images, split.

``cxrlab train`` (:func:`cxrlab.training.train.prepare_data`), ``cxrlab data split`` and the
benchmark scripts all call :func:`prepare_split`, so the same dataset, split options and seed give
the same manifest everywhere, broken files included.

Policy for undecodable images: the scan decodes every image through
:func:`~cxrlab.data.images.read_gray` (the reader training and prediction use), also when
near-duplicate hashing is off, and leaves out the files that fail (problem kinds
:data:`~cxrlab.data.problems.SKIPPED_KINDS`) *before* splitting. With ``strict`` they raise a
:class:`~cxrlab.errors.DataError` listing them instead; otherwise :func:`report_skipped` warns with
their count and the first few, and writes every skipped file with its reason to a CSV whose path
the warning names.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxrlab.config import SplitConfig
from cxrlab.data.classes import order_classes
from cxrlab.data.problems import SKIPPED_KINDS
from cxrlab.errors import DataError, RunDirError
from cxrlab.io import file_sha1

logger = logging.getLogger(__name__)

#: Columns of the skipped-files table (and CSV).
SKIPPED_COLUMNS = ("path", "kind", "reason")
_SHOWN = 3


@dataclass
class PreparedSplit:
    """What :func:`prepare_split` produced.

    Attributes:
        manifest: The split manifest: the scan index columns plus ``split`` (and ``fold`` for
            k-fold), or the rows of ``SplitConfig.csv``.
        classes: Class names in output order.
        skipped: Image files left out, columns :data:`SKIPPED_COLUMNS` (empty when none).
        seed: The split's seed actually used.
        skipped_csv: Where the skipped files were written (None when none were skipped or no
            path was given).
    """

    manifest: pd.DataFrame
    classes: list[str]
    skipped: pd.DataFrame
    seed: int
    skipped_csv: Path | None = None


def split_seed(split: SplitConfig, training_seed: int) -> int:
    """The split's seed: ``split.seed`` when set, else the training seed."""
    return training_seed if split.seed is None else int(split.seed)


def prepare_split(
    data: str | os.PathLike,
    split: SplitConfig | None = None,
    *,
    seed: int = 0,
    strict: bool = False,
    limit_per_class: int | None = None,
    skipped_csv: str | os.PathLike | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> PreparedSplit:
    """Scan ``data``, drop undecodable images and split the rest as ``split`` says.

    Args:
        data: The dataset folder (or a folder above it).
        split: Split options (default :class:`~cxrlab.config.SplitConfig`). With ``split.csv``
            set, that manifest is validated (:func:`load_manifest`) and used as it is.
        seed: The training seed, the split's seed when ``split.seed`` is None.
        strict: Raise on undecodable images (and the other
            :data:`~cxrlab.data.problems.STRICT_KINDS`) instead of skipping them.
        limit_per_class: A subset of this many images per class, drawn with the split's seed.
        skipped_csv: Where to write the skipped files when there are any.
        workers: Scan threads.
        cache_dir: Folder of the scan cache (default the decode cache's folder).

    Returns:
        A :class:`PreparedSplit`.

    Raises:
        DataError: See :func:`~cxrlab.data.scan.scan_dataset`, :func:`load_manifest` and
            :func:`~cxrlab.data.splits.make_split`.
    """
    from cxrlab.data.scan import scan_dataset
    from cxrlab.data.splits import kfold_split, make_split

    split = split or SplitConfig()
    used_seed = split_seed(split, seed)
    if split.csv is not None:
        manifest, classes = load_manifest(split.csv)
        logger.info("Using the split manifest %s (%d images)", split.csv, len(manifest))
        check_two_classes(classes, str(split.csv))
        return PreparedSplit(manifest, classes, _skipped_frame([]), used_seed)
    scanned = scan_dataset(
        data,
        strict=strict,
        verify=True,
        near_duplicates=split.near_duplicates,
        limit_per_class=limit_per_class,
        seed=used_seed,
        workers=workers,
        cache_dir=cache_dir,
    )
    skipped = _skipped_frame(
        [(p.path, p.kind, p.detail) for p in scanned.problems if p.kind in SKIPPED_KINDS]
    )
    index = scanned.index.reset_index(drop=True)
    index, conflicts = drop_label_conflicts(index)
    if len(conflicts):
        skipped = pd.concat([skipped, conflicts], ignore_index=True)
    check_two_classes(order_classes(index["label"].unique()), str(scanned.root))
    if split.folds:
        manifest = kfold_split(
            index, folds=split.folds, fold=split.fold, val=split.val, seed=used_seed,
            method=split.method,
        )  # fmt: skip
    else:
        manifest = make_split(
            index, method=split.method, val=split.val, test=split.test, seed=used_seed
        )
    # Reported once the split succeeded, so a refused split leaves no file behind.
    written = report_skipped(skipped, strict=strict, csv=skipped_csv, where=str(scanned.root))
    return PreparedSplit(manifest, list(scanned.classes), skipped, used_seed, written)


def check_two_classes(classes: list[str], where: str) -> None:
    """DataError unless there are at least two classes (a classifier needs two to tell apart)."""
    if len(classes) >= 2:
        return
    found = f"only the class {classes[0]!r}" if classes else "no class"
    raise DataError(
        f"{where} holds {found}; training a classifier needs at least two classes (one folder of "
        "images per class, e.g. COVID/ and Normal/). Add the other class folder(s), or point "
        "--data at the folder above them."
    )


def drop_label_conflicts(index: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave out images whose exact bytes (sha1) appear under two or more classes.

    The same image in two class folders has no single true label: training on both copies
    teaches the model noise, and one copy could land in train and the other in test. Every copy
    is dropped (which label is right is the user's call) and listed with kind
    ``label_conflict``. ``cxrlab data inspect`` reports the same pairs as duplicates "in two
    classes". Near duplicates across classes are kept (they may be different patients).

    Returns:
        ``(index without the conflicting rows, skipped rows (SKIPPED_COLUMNS))``.
    """
    if "sha1" not in index.columns or index.empty:
        return index, _skipped_frame([])
    sha = index["sha1"].fillna("").astype(str)
    known = index[sha != ""]
    labels_per_sha = known.groupby(sha[sha != ""])["label"].nunique()
    bad_sha = set(labels_per_sha[labels_per_sha > 1].index)
    if not bad_sha:
        return index, _skipped_frame([])
    bad = sha.isin(bad_sha)
    rows = []
    for digest, group in index[bad].groupby(sha[bad], sort=False):
        copies = list(zip(group["path"], group["label"], strict=True))
        for path, label in copies:
            others = ", ".join(f"{p} ({lab})" for p, lab in copies if p != path)
            reason = (
                f"the same image (sha1 {digest[:12]}) is labelled {label!r} here and also filed "
                f"as {others}; every copy left out"
            )
            rows.append((path, "label_conflict", reason))
    return index[~bad].reset_index(drop=True), _skipped_frame(rows)


def report_skipped(
    skipped: pd.DataFrame,
    *,
    strict: bool,
    csv: str | os.PathLike | None,
    where: str,
) -> Path | None:
    """Apply the skipped-files policy: DataError when ``strict``, else warn and write ``csv``.

    Args:
        skipped: Columns :data:`SKIPPED_COLUMNS`; nothing happens when it is empty.
        strict: Raise instead of skipping.
        csv: Where to write every skipped file and its reason (atomically); None: nowhere.
        where: The dataset (or manifest) the files are from, for the messages.

    Returns:
        The CSV written, or None.
    """
    from cxrlab.io import write_csv

    if skipped.empty:
        return None
    n = len(skipped)
    conflicts = int((skipped["kind"] == "label_conflict").sum())
    what = "undecodable image file(s)" if not conflicts else (
        f"image file(s) ({conflicts} the same image in two classes, {n - conflicts} undecodable)"
    )  # fmt: skip
    listed = "; ".join(f"{r.path} ({r.reason})" for r in skipped.head(_SHOWN).itertuples())
    more = f"; and {n - _SHOWN} more" if n > _SHOWN else ""
    if strict:
        listed = "; ".join(f"{r.path} ({r.reason})" for r in skipped.head(20).itertuples())
        more = f"; and {n - 20} more" if n > 20 else ""
        raise DataError(
            f"{n} {what} in {where} must be left out and strict mode is on: "
            f"{listed}{more}. Remove or replace these files, or run without --strict to skip them."
        )
    written = write_csv(csv, skipped) if csv is not None else None
    where_listed = f" Every skipped file and its reason is in {written}." if written else ""
    warnings.warn(
        f"Skipped {n} {what} in {where}: {listed}{more}.{where_listed}",
        stacklevel=3,
    )
    return written


def load_manifest(
    path: str | os.PathLike, *, classes: list[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Read and validate a split manifest to use as a run's split.

    Relative image paths are taken relative to the manifest's folder and made absolute; ``sha1``
    is computed from the files as they are (the decoded-image cache is keyed by it), with a
    warning where it differs from the recorded one.

    Args:
        path: A split.csv (``cxrlab data split -o`` or a run's own).
        classes: The known classes; every label must be one of them. None: the manifest's labels
            become the classes, in :func:`~cxrlab.data.classes.order_classes` order.

    Returns:
        ``(manifest, classes)``; the manifest keeps every row and its ``split`` as in the file.

    Raises:
        DataError: The file is missing or not a manifest, a ``split`` value is not train, val or
            test, the train or val split is empty, a label is empty or unknown, or an image file
            does not exist.
    """
    from cxrlab.rundir import SPLITS, read_split_csv

    path = Path(path)
    what = f"The split manifest {path} (split.csv)"
    try:
        frame = read_split_csv(path)
    except RunDirError as exc:
        raise DataError(f"{exc} Check split.csv (--split-csv).") from None
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise DataError(
            f"{what} has split value(s) {bad}; each row's split must be one of {list(SPLITS)}. "
            "Fix the column or write the manifest with `cxrlab data split`."
        )
    for name in ("train", "val"):
        if not (frame["split"] == name).any():
            raise DataError(
                f"{what} has no {name!r} rows; a training needs train and val images. Write a "
                "manifest with every split (`cxrlab data split`)."
            )
    labels = frame["label"]
    if (labels == "").any():
        raise DataError(
            f"{what} has {int((labels == '').sum())} row(s) with an empty label (first: "
            f"{frame.loc[labels == '', 'path'].iloc[0]}). Give every image its class."
        )
    found = order_classes(labels.unique())
    if classes is not None:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DataError(
                f"{what} has label(s) {unknown} that are not among the classes {list(classes)}. "
                "Use a manifest of the same classes."
            )
        found = list(classes)
    frame = frame.copy()
    base = path.resolve().parent
    frame["path"] = [
        p if Path(p).is_absolute() else os.path.normpath(base / p) for p in frame["path"]
    ]
    missing = [p for p in frame["path"] if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (
            f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        )
        raise DataError(
            f"{what} lists {len(missing)} image file(s) that do not exist: {shown}. Were the "
            "images moved? Write a new manifest with `cxrlab data split`."
        )
    # The image cache is keyed by sha1: hash the files as they are now, not as recorded.
    recorded = frame["sha1"] if "sha1" in frame.columns else pd.Series("", index=frame.index)
    frame["sha1"] = [file_sha1(p) for p in frame["path"]]
    changed = (recorded != "") & (recorded != frame["sha1"])
    if changed.any():
        warnings.warn(
            f"{int(changed.sum())} image file(s) of {path} changed since the manifest was "
            f"written (sha1 differs; first: {frame.loc[changed, 'path'].iloc[0]}); the run uses "
            "them as they are now, so its test-set fingerprint differs from the manifest's.",
            stacklevel=2,
        )
    return frame, found


def _skipped_frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS))
