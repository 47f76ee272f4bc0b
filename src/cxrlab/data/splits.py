"""Train/val/test splits that never leak: group-aware, stratified, source-held-out, k-fold.

Every split here assigns whole *units* to a split, never single rows:

* ``method="stratified"``: a unit is a duplicate group (``group_col``, by default ``dup_group``
  from :func:`~cxrlab.data.dedupe.near_duplicate_groups`), so exact and near duplicates never
  straddle splits. Units are assigned greedily, largest first (ties in seeded random order), each
  to the split whose per-class image counts it brings closest to the targets; for ungrouped images
  every class's val and test counts land within one image of ``fraction * n`` (and each split gets
  at least one image of a class that has at least three units).
* ``method="source"``: a unit is a source (``source`` column, e.g. the metadata URL) merged with
  every duplicate group that crosses sources, so val and test images come from sources that are
  absent from train: the test score measures generalisation to unseen hospitals/collections.
  Refused (``DataError``) when a class has fewer than two sources or no source information. Among
  the greedy assignment and 63 seeded reshuffles, the one closest to the target fractions that
  gives every class train and test images (and val images where the class has three or more
  sources) is kept.

All functions are deterministic for a given ``seed`` and do not depend on the row order of the
index (units are ordered by their content before shuffling).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cxrlab.data.classes import order_classes
from cxrlab.data.dedupe import near_duplicate_groups
from cxrlab.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SplitMethod = Literal["stratified", "source"]
SplitName = Literal["train", "val", "test"]
#: Split names in the order they appear in ``split.csv`` summaries.
SPLITS: tuple[str, ...] = ("train", "val", "test")

_RESTARTS = 64


def make_split(
    index: pd.DataFrame,
    *,
    method: SplitMethod = "stratified",
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    group_col: str = "dup_group",
) -> pd.DataFrame:
    """Split an image index into train, val and test.

    Args:
        index: A scan index (needs ``path`` and ``label``; ``source`` for ``method="source"``;
            ``group_col`` if present, else groups are computed from ``sha1``/``phash``).
        method: ``"stratified"`` (group-aware, per-class proportions) or ``"source"`` (whole
            sources held out); see the module docstring.
        val: Fraction of images for validation, in (0, 1).
        test: Fraction of images for testing, in (0, 1); ``val + test < 1``.
        seed: Seed of the random tie order.
        group_col: Column whose equal values must stay in one split. If it is absent and is
            ``"dup_group"``, it is computed by :func:`~cxrlab.data.dedupe.near_duplicate_groups`
            and added to the result.

    Returns:
        A copy of ``index`` (same row order and index) with a ``split`` column in
        {``train``, ``val``, ``test``}.

    Raises:
        ConfigError: A fraction or ``method`` is invalid.
        DataError: The index lacks a needed column, or (``"source"``) a class has fewer than two
            sources.
    """
    _check_fraction("val", val)
    _check_fraction("test", test)
    if val + test >= 1:
        raise ConfigError(f"val + test must be below 1 to leave training data, got {val + test}.")
    frame, groups = _prepare(index, group_col)
    fractions = np.array([1.0 - val - test, val, test])
    units, counts, classes = _units(frame, groups, method)
    rng = np.random.default_rng(seed)
    if method == "source":
        assign = _assign_best(counts, fractions, rng, required=_required_splits(counts, 3))
    else:
        assign = _assign_units(counts, fractions, _order(counts, rng), min_one=True)
    frame["split"] = np.array(SPLITS, dtype=object)[assign[units]]
    _log_split(frame, classes, method)
    return frame


def kfold_split(
    index: pd.DataFrame,
    *,
    folds: int,
    fold: int,
    val: float = 0.15,
    seed: int = 0,
    method: SplitMethod = "stratified",
    group_col: str = "dup_group",
) -> pd.DataFrame:
    """One fold of group-aware k-fold cross-validation, with validation carved from the rest.

    The units (duplicate groups, or sources for ``method="source"``) are divided into ``folds``
    folds once per ``seed``; fold ``fold`` is the test set, and a ``val`` share of *all* images is
    carved (group- or source-wise) from the other folds. Over ``fold = 0 .. folds - 1`` every image
    is in the test set exactly once.

    Args:
        index: A scan index (see :func:`make_split`).
        folds: Number of folds, >= 2.
        fold: Which fold is the test set, in ``[0, folds)``.
        val: Fraction of all images used for validation (taken from the non-test folds).
        seed: Seed of the random tie order (the same seed gives the same folds for every fold).
        method: ``"stratified"`` or ``"source"`` (whole sources per fold).
        group_col: See :func:`make_split`.

    Returns:
        A copy of ``index`` with ``split`` in {``train``, ``val``, ``test``} and ``fold`` (the
        fold each row belongs to).

    Raises:
        ConfigError: ``folds``, ``fold`` or ``val`` is invalid.
        DataError: See :func:`make_split`; also when there are fewer units than folds.
    """
    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}.")
    if not 0 <= fold < folds:
        raise ConfigError(f"fold must be in [0, {folds - 1}] for {folds} folds, got {fold}.")
    _check_fraction("val", val)
    if val >= 1 - 1 / folds:
        raise ConfigError(
            f"val={val} leaves no training data: with {folds} folds the non-test share is "
            f"{1 - 1 / folds:.3f}."
        )
    frame, groups = _prepare(index, group_col)
    units, counts, classes = _units(frame, groups, method)
    if len(counts) < folds:
        raise DataError(
            f"Only {len(counts)} independent unit(s) "
            f"({'sources' if method == 'source' else 'groups'}) for {folds} folds; use fewer folds."
        )
    rng = np.random.default_rng(seed)
    fractions = np.full(folds, 1.0 / folds)
    if method == "source":
        every_fold = np.repeat(((counts > 0).sum(axis=0) >= folds)[None, :], folds, axis=0)
        fold_of = _assign_best(counts, fractions, rng, required=every_fold)
    else:
        fold_of = _assign_units(counts, fractions, _order(counts, rng), min_one=True)

    # Carve validation from the non-test units, with a generator that depends on the fold too.
    rest = np.flatnonzero(fold_of != fold)
    val_rng = np.random.default_rng([seed, fold])
    val_share = val / (1.0 - 1.0 / folds)
    sub_fractions = np.array([1.0 - val_share, val_share])
    sub_counts = counts[rest]
    if method == "source":
        sub = _assign_best(
            sub_counts, sub_fractions, val_rng, required=_required_splits(sub_counts, 2)
        )
    else:
        sub = _assign_units(sub_counts, sub_fractions, _order(sub_counts, val_rng), min_one=True)
    unit_split = np.full(len(counts), 2)  # test
    unit_split[rest] = sub  # 0 train, 1 val
    frame["split"] = np.array(SPLITS, dtype=object)[unit_split[units]]
    frame["fold"] = fold_of[units].astype(np.int64)
    _log_split(frame, classes, f"{method}, fold {fold} of {folds}")
    return frame


def source_coverage(split_df: pd.DataFrame) -> pd.DataFrame:
    """Per class: how many sources and images each split has, and how many are unseen in train.

    Args:
        split_df: An index with ``label``, ``source`` and ``split`` columns.

    Returns:
        One row per class (index ``label``, canonical order) with columns ``sources`` (distinct
        non-empty sources of the class), ``train_sources``, ``val_sources``, ``test_sources``,
        ``train_images``, ``val_images``, ``test_images``, and ``val_unseen_sources`` /
        ``test_unseen_sources``: the class's val/test sources that no training image has. A
        source-held-out split has ``test_unseen_sources == test_sources``.
    """
    for col in ("label", "source", "split"):
        if col not in split_df:
            raise DataError(
                f"source_coverage needs a {col!r} column; got {list(split_df.columns)}."
            )
    src = split_df["source"].fillna("").astype(str)
    train_sources = set(src[(split_df["split"] == "train") & (src != "")])
    rows = []
    classes = order_classes(split_df["label"].unique())
    for cls in classes:
        in_cls = split_df["label"] == cls
        row: dict[str, object] = {"label": cls, "sources": src[in_cls & (src != "")].nunique()}
        for name in SPLITS:
            sel = in_cls & (split_df["split"] == name)
            row[f"{name}_sources"] = src[sel & (src != "")].nunique()
            row[f"{name}_images"] = int(sel.sum())
        for name in ("val", "test"):
            sel = in_cls & (split_df["split"] == name) & (src != "")
            row[f"{name}_unseen_sources"] = len(set(src[sel]) - train_sources)
        rows.append(row)
    return pd.DataFrame(rows).set_index("label")


def split_counts(split_df: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows, canonical order) and split (columns train, val, test, total)."""
    table = pd.crosstab(split_df["label"], split_df["split"])
    table = table.reindex(index=order_classes(table.index), columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


# ----------------------------------------------------------------------------------------------
# internals


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ConfigError(f"{name} must be a fraction strictly between 0 and 1, got {value}.")


def _prepare(index: pd.DataFrame, group_col: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Copy the index, check its columns, and return it with the group of each row."""
    for col in ("path", "label"):
        if col not in index:
            raise DataError(
                f"The index has no {col!r} column (columns: {list(index.columns)}); pass the "
                "index returned by cxrlab.data.scan.scan_dataset."
            )
    if len(index) == 0:
        raise DataError("The index is empty: there is nothing to split.")
    frame = index.copy()
    if group_col in frame:
        groups = frame[group_col].fillna("").astype(str).to_numpy()
        empty = groups == ""
        if empty.any():  # rows without a group are groups of their own
            groups = groups.astype(object)
            groups[empty] = [f"\0row{i}" for i in np.flatnonzero(empty)]
    elif group_col == "dup_group":
        frame["dup_group"] = near_duplicate_groups(frame)
        groups = frame["dup_group"].to_numpy()
    else:
        raise DataError(
            f"group column {group_col!r} is not in the index (columns: {list(frame.columns)})."
        )
    return frame, groups


def _units(
    frame: pd.DataFrame, groups: np.ndarray, method: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Units of assignment: (unit id per row, (U, C) image counts per unit, class names).

    Unit ids are numbered in the order of each unit's smallest content key (sha1 or path), so
    they do not depend on row order.
    """
    if method not in ("stratified", "source"):
        raise ConfigError(f"method must be 'stratified' or 'source', got {method!r}.")
    n = len(frame)
    group_codes, group_names = pd.factorize(pd.Series(groups))
    if method == "source":
        if "source" not in frame:
            raise DataError(_no_source_message("the index has no 'source' column"))
        source = frame["source"].fillna("").astype(str).to_numpy()
        _check_sources(frame["label"].to_numpy(), source)
        src_codes, src_names = pd.factorize(pd.Series(source))
        rows = np.concatenate([np.arange(n), np.arange(n)])
        nodes = np.concatenate([n + group_codes, n + len(group_names) + src_codes])
        size = n + len(group_names) + len(src_names)
        graph = coo_matrix((np.ones(2 * n, dtype=np.int8), (rows, nodes)), shape=(size, size))
        _, comp = connected_components(graph, directed=False)
        raw_units = comp[:n]
    else:
        raw_units = group_codes
    # Renumber units by their smallest content key, for row-order independence.
    key = frame["path"].astype(str)
    if "sha1" in frame:
        sha = frame["sha1"].fillna("").astype(str)
        key = sha.where(sha != "", key)
    first_key = pd.Series(key.to_numpy()).groupby(raw_units).min()
    rank = first_key.rank(method="first").astype(np.int64) - 1
    units = rank.reindex(raw_units).to_numpy()
    classes = order_classes(frame["label"].astype(str).unique())
    class_codes = pd.Categorical(frame["label"].astype(str), categories=classes).codes
    counts = np.zeros((len(rank), len(classes)), dtype=np.int64)
    np.add.at(counts, (units, class_codes), 1)
    return units, counts, classes


def _no_source_message(why: str) -> str:
    return (
        f"A source-held-out split needs to know each image's source, but {why}. Sources come from "
        "the dataset's <Class>.metadata.xlsx (URL column); use method='stratified' (--split "
        "stratified) for data without them."
    )


def _check_sources(labels: np.ndarray, source: np.ndarray) -> None:
    if not (source != "").any():
        raise DataError(_no_source_message("every image's source is empty"))
    frame = pd.DataFrame({"label": labels, "source": source})
    known = frame[frame["source"] != ""]
    per_class = known.groupby("label")["source"].unique()
    bad = []
    for cls in order_classes(frame["label"].unique()):
        srcs = per_class.get(cls, [])
        if len(srcs) < 2:
            shown = f"only {srcs[0]!r}" if len(srcs) == 1 else "no known source"
            bad.append(f"{cls!r} ({shown})")
    if bad:
        raise DataError(
            "A source-held-out split needs at least two sources in every class, so that test "
            f"sources can be absent from training; these classes have fewer: {', '.join(bad)}. "
            "Drop those classes (classes=...), add data from other sources, or use "
            "method='stratified' and report that test images share sources with training images."
        )
    unknown = int((source == "").sum())
    if unknown:
        logger.warning(
            "%d image(s) have no source; they are held out together as one 'unknown' source",
            unknown,
        )


def _order(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Units largest first, ties in seeded random order."""
    perm = rng.permutation(len(counts))
    sizes = counts.sum(axis=1)[perm]
    return perm[np.argsort(-sizes, kind="stable")]


def _assign_units(
    counts: np.ndarray, fractions: np.ndarray, order: np.ndarray, *, min_one: bool
) -> np.ndarray:
    """Greedy assignment of units (rows of ``counts``) to splits (entries of ``fractions``).

    Each unit, in ``order``, goes to the split where it most reduces the squared shortfall of
    per-class counts relative to the targets ``fraction * class total`` (each class weighted by
    its size, so small classes count as much as large ones).
    """
    totals = counts.sum(axis=0).astype(float)
    targets = fractions[:, None] * totals[None, :]
    if min_one:
        # Every split gets at least one image of a class that has a unit for each split.
        units_per_class = (counts > 0).sum(axis=0)
        enough = units_per_class >= len(fractions)
        targets[1:, enough] = np.maximum(targets[1:, enough], 1.0)
        targets[0, enough] = np.maximum(totals[enough] - targets[1:, enough].sum(axis=0), 1.0)
    current = np.zeros_like(targets)
    weight = 1.0 / np.maximum(totals, 1.0)
    assign = np.empty(len(counts), dtype=np.int64)
    for u in order:
        v = counts[u].astype(float)
        deficit = targets - current
        gain = ((v[None, :] * (2.0 * deficit - v[None, :])) * weight[None, :]).sum(axis=1)
        s = int(np.argmax(gain))
        assign[u] = s
        current[s] += v
    return assign


def _required_splits(counts: np.ndarray, n_splits: int) -> np.ndarray:
    """(S, C) bool: which splits must contain class c (all of them if c has enough units)."""
    units_per_class = (counts > 0).sum(axis=0)
    required = np.zeros((n_splits, counts.shape[1]), dtype=bool)
    required[0] = units_per_class >= 1  # train
    if n_splits >= 2:
        required[-1] = units_per_class >= 2  # the held-out (test) split
    for s in range(1, n_splits - 1):
        required[s] = units_per_class >= n_splits
    return required


def _assign_best(
    counts: np.ndarray, fractions: np.ndarray, rng: np.random.Generator, *, required: np.ndarray
) -> np.ndarray:
    """Best of several greedy assignments (largest-first, then reshuffled orders).

    Picks the assignment with the smallest relative deviation from the targets among those where
    every class appears in every split marked in ``required``; if none qualifies, the one that
    misses the fewest (class, split) cells.
    """
    totals = np.maximum(counts.sum(axis=0).astype(float), 1.0)
    targets = fractions[:, None] * totals[None, :]
    best, best_key = None, None
    for attempt in range(_RESTARTS):
        order = _order(counts, rng) if attempt == 0 else rng.permutation(len(counts))
        assign = _repair(counts, _assign_units(counts, fractions, order, min_one=True), required)
        per_split = np.zeros_like(targets)
        np.add.at(per_split, assign, counts)
        missing = int((required & (per_split == 0)).sum())
        cost = float((np.abs(per_split - targets) / totals[None, :]).sum())
        key = (missing, cost)
        if best_key is None or key < best_key:
            best, best_key = assign, key
    if best_key[0]:
        logger.warning(
            "No assignment of whole sources gives every class images in every split (%d "
            "class/split cell(s) empty); see source_coverage()",
            best_key[0],
        )
    return best


def _repair(counts: np.ndarray, assign: np.ndarray, required: np.ndarray) -> np.ndarray:
    """Move units so that required (split, class) cells are non-empty, where possible.

    A cell is filled by moving the smallest unit holding that class out of a split that keeps
    another unit of each of the moved unit's classes it requires. Later splits (test) first.
    """
    assign = assign.copy()
    sizes = counts.sum(axis=1)
    has = counts > 0
    for _ in range(2 * required.size):
        present = np.zeros(required.shape, dtype=np.int64)  # units per (split, class)
        np.add.at(present, assign, has.astype(np.int64))
        missing = np.argwhere(required & (present == 0))
        if len(missing) == 0:
            break
        moved = False
        for s, c in sorted(missing.tolist(), key=lambda sc: (-sc[0], sc[1])):
            candidates = []
            for u in np.flatnonzero(has[:, c] & (assign != s)):
                src = assign[u]
                cls = np.flatnonzero(has[u])
                if np.all(~required[src, cls] | (present[src, cls] >= 2)):
                    candidates.append((sizes[u], u))
            if candidates:
                assign[min(candidates)[1]] = s
                moved = True
                break
        if not moved:
            break
    return assign


def _log_split(frame: pd.DataFrame, classes: list[str], method: str) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    counts = split_counts(frame)
    parts = [
        f"{cls}: " + "/".join(str(counts.at[cls, s]) for s in SPLITS)
        for cls in classes
        if cls in counts.index
    ]
    logger.info("Split (%s) train/val/test per class: %s", method, "; ".join(parts))
    if "source" in frame and method.startswith("source"):
        logger.info("Source coverage:\n%s", source_coverage(frame).to_string())
