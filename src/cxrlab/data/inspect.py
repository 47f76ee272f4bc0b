"""Audit a dataset folder before training: counts per class, sizes, modes, sources, problems.

:func:`inspect_dataset` scans with full decoding and perceptual hashing by default, so it finds
truncated files, exact and near duplicates (including the same image filed under two classes),
masks without images and image/mask mismatches. ``cxrlab data inspect DATA`` prints the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxrlab.data.dedupe import DEFAULT_THRESHOLD
from cxrlab.data.scan import Problem, ScanResult, scan_dataset

#: Columns of :attr:`InspectReport.summary`.
SUMMARY_COLUMNS = ("images", "masks", "sources", "sizes", "modes", "mask_sizes", "layout")


@dataclass
class InspectReport:
    """The audit of one dataset folder.

    Attributes:
        root: The dataset folder scanned.
        classes: Class names in output order.
        summary: One row per class (index ``label``) plus a ``total`` row, columns
            :data:`SUMMARY_COLUMNS`: ``images`` (readable images), ``masks`` (images with a usable
            lung mask), ``sources`` (distinct non-empty sources), ``sizes`` / ``modes`` /
            ``mask_sizes`` (e.g. ``"299x299 x 3616"``, most common first), ``layout``.
        problems: Every problem found (see :data:`cxrlab.data.scan.ProblemKind`).
        scan: The underlying :class:`~cxrlab.data.scan.ScanResult` (index with ``phash`` and
            ``dup_group``).
    """

    root: Path
    classes: list[str]
    summary: pd.DataFrame
    problems: list[Problem]
    scan: ScanResult

    def problem_counts(self) -> dict[str, int]:
        """Number of problems of each kind that occurred."""
        return self.scan.problem_counts()

    def problems_frame(self) -> pd.DataFrame:
        """The problems as a DataFrame (``path``, ``kind``, ``detail``)."""
        return self.scan.problems_frame()

    def label_conflicts(self) -> pd.DataFrame:
        """Images whose exact bytes sit under two or more classes (path, kind, reason).

        ``cxrlab train`` and ``cxrlab data split`` leave every such copy out (listed in
        skipped.csv); see :func:`cxrlab.data.prepare.drop_label_conflicts`.
        """
        from cxrlab.data.prepare import drop_label_conflicts

        return drop_label_conflicts(self.scan.index)[1]

    def duplicate_groups(self) -> list[list[str]]:
        """Paths of exact duplicates (same sha1), one list per group of two or more."""
        index = self.scan.index
        sha = index["sha1"].fillna("").astype(str)
        groups = index[sha != ""].groupby(sha[sha != ""], sort=False)["path"]
        return [list(paths) for _, paths in groups if len(paths) > 1]

    def near_duplicate_groups(self) -> list[list[str]]:
        """Paths of each ``dup_group`` with two or more images (exact or near duplicates)."""
        index = self.scan.index
        if "dup_group" not in index:
            return []
        return [
            list(paths)
            for _, paths in index.groupby("dup_group", sort=False)["path"]
            if len(paths) > 1
        ]


def inspect_dataset(
    root: str | os.PathLike,
    *,
    verify: bool = True,
    near_duplicates: bool = True,
    near_duplicate_threshold: int = DEFAULT_THRESHOLD,
    workers: int | None = None,
) -> InspectReport:
    """Scan a dataset folder thoroughly and summarise it per class.

    Args:
        root: The dataset folder or a folder above it (see
            :func:`~cxrlab.data.scan.find_dataset_dir`).
        verify: Decode every image and mask completely (finds truncated files, empty masks).
        near_duplicates: Compute perceptual hashes and report near duplicates.
        near_duplicate_threshold: Hamming distance (of 256 bits) for near duplicates.
        workers: Threads for reading files (default: one per CPU).

    Returns:
        An :class:`InspectReport`. Problems in the files do not raise; they are reported.

    Raises:
        DataError: The folder itself is missing, empty or holds no class folders with images.
    """
    scan = scan_dataset(
        root,
        verify=verify,
        near_duplicates=near_duplicates,
        near_duplicate_threshold=near_duplicate_threshold,
        workers=workers,
    )
    return InspectReport(
        root=scan.root,
        classes=list(scan.classes),
        summary=summarise(scan),
        problems=list(scan.problems),
        scan=scan,
    )


def summarise(scan: ScanResult) -> pd.DataFrame:
    """Per-class summary table of a scan (see :attr:`InspectReport.summary`)."""
    index = scan.index
    rows = []
    for cls in scan.classes:
        part = index[index["label"] == cls]
        masks = scan.masks[scan.masks["label"] == cls]
        rows.append(_summary_row(cls, part, masks, scan.layouts.get(cls, "")))
    rows.append(_summary_row("total", index, scan.masks, ""))
    return pd.DataFrame(rows).set_index("label")


def _summary_row(label: str, part: pd.DataFrame, masks: pd.DataFrame, layout: str) -> dict:
    source = part["source"].fillna("").astype(str)
    used_masks = masks[masks["path"].isin(set(part["mask_path"]))]
    return {
        "label": label,
        "images": len(part),
        "masks": int((part["mask_path"].fillna("") != "").sum()),
        "sources": int(source[source != ""].nunique()),
        "sizes": _counts(part["width"].astype(str) + "x" + part["height"].astype(str)),
        "modes": _counts(part["mode"].astype(str)),
        "mask_sizes": _counts(
            used_masks["width"].astype(str) + "x" + used_masks["height"].astype(str)
        ),
        "layout": layout,
    }


def _counts(values: pd.Series, top: int = 3) -> str:
    """``"299x299 x 3616, 256x256 x 2"``: the most common values with counts."""
    if values.empty:
        return ""
    counts = values.value_counts(sort=True)
    shown = [f"{v} x {n}" for v, n in counts.iloc[:top].items()]
    if len(counts) > top:
        shown.append(f"(+{len(counts) - top} more)")
    return ", ".join(shown)
