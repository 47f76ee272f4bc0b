"""Split manifests: one dtype policy for reading them, and the test-set fingerprint.

A split manifest (a run's split.csv, or one written by ``cxrlab data split``) lists every image
with its label and split. :mod:`cxrlab.rundir` re-exports these names; read and write manifests
through them so every reader sees the same dtypes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab.errors import DataError, RunDirError

#: Columns of a split manifest that hold text; read as ``str`` with "" for empty cells.
TEXT_COLUMNS = ("path", "label", "source", "mask_path", "sha1", "mode", "phash", "split")
#: Columns every split manifest must have.
REQUIRED_COLUMNS = ("path", "label", "split")
#: Split names of a manifest, in order.
SPLITS = ("train", "val", "test")


def read_split_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split manifest (a run's split.csv or one written by ``cxrlab data split``).

    One dtype policy for every reader: text columns (:data:`TEXT_COLUMNS`) are ``str`` with ""
    for empty cells; ``source`` and ``mask_path`` are added as "" when absent; other columns
    (``width``, ``height``, ``dup_group``, ``fold``) keep pandas' numeric inference.

    Raises:
        RunDirError: The file is missing, unreadable or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"Split manifest {path} does not exist.")
    try:
        header = pd.read_csv(path, nrows=0).columns
        frame = pd.read_csv(
            path,
            keep_default_na=False,
            dtype={c: str for c in TEXT_COLUMNS if c in header},
        )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunDirError(f"{path} could not be read as a split manifest (CSV): {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise RunDirError(
            f"{path} lacks the column(s) {missing} of a cxrlab split manifest (path, label, "
            "split, ...); write one with `cxrlab data split` or `cxrlab train`."
        )
    for col in ("source", "mask_path"):
        if col not in frame.columns:
            frame[col] = ""
    return frame


def write_split_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a split manifest atomically (no index column)."""
    from cxrlab.io import write_csv

    return write_csv(path, frame)


def split_fingerprint(frame: pd.DataFrame, which: str = "test") -> dict[str, Any]:
    """Fingerprint of one split's content, to check that two runs share a test set.

    The sha1 of the sorted lines ``"<key>\\t<label>"`` of the rows in split ``which`` (all rows
    when the frame has no ``split`` column, as a predictions file), where the key is the image's
    ``sha1`` when every such row has one (so the same images moved to another folder still
    match), else its ``path``. Row order, other columns and other splits do not matter.

    Returns:
        ``{"sha1": 40 hex digits, "n": rows, "key": "sha1" | "path"}``.
    """
    if which not in SPLITS:
        raise DataError(f"which must be one of {SPLITS}, got {which!r}.")
    rows = frame[frame["split"].astype(str) == which] if "split" in frame.columns else frame
    key = "path"
    if "sha1" in rows.columns:
        sha = rows["sha1"].fillna("").astype(str)
        if (sha != "").all():
            key = "sha1"
    keys = rows[key].astype(str)
    lines = sorted(
        f"{k}\t{label}" for k, label in zip(keys, rows["label"].astype(str), strict=True)
    )
    digest = hashlib.sha1("\n".join(lines).encode("utf-8")).hexdigest()
    return {"sha1": digest, "n": int(len(lines)), "key": key}
