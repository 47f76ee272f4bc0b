"""Leakage audit: exact and near-duplicate matches between two sets of images.

An "external" validation set is only external if none of its images was seen in training. Public
COVID-19 collections overlap (the COVID-19 Radiography Database pools Cohen's collection, the
Hannover set, COVID-CXNet, Kermany's paediatric images...), so before scoring a model on another
collection every external image is compared with every image of the run's train, val and test
splits:

* **exact**: the same bytes (sha1);
* **near**: the perceptual hash the splitter uses (:func:`cxrlab.data.dedupe.phash`, 256 bits)
  within :data:`~cxrlab.data.dedupe.DEFAULT_THRESHOLD` bits: re-encoded, re-sized, brightened,
  contrast- or gamma-changed copies;
* **near (borders trimmed)**: the same hash of the external image with its uniform dark borders
  cut off (then stretched to a square, as the hash does), which catches a letterboxed copy of a
  film that the other collection stored stretched to a square.

What it cannot catch: crops (a 3 % crop moves the hash by ~80 bits), flips and rotations, heavy
edits (annotations drawn on the film, colour overlays), other films of the same patient, and a
letterboxed *reference* image against a stretched external one (only external images are
trimmed). docs/external.md lists these limits.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.dedupe import DEFAULT_THRESHOLD, hashes_to_words, phash, phash_hex
from cxrlab.data.images import read_gray
from cxrlab.data.layout import is_image_file
from cxrlab.data.probe import DECODE_MAX_SIDE, map_threads
from cxrlab.errors import DataError, ImageReadError

logger = logging.getLogger(__name__)

#: Columns of :func:`find_overlap`'s result (and of overlap.csv, with ``path`` as the first).
OVERLAP_COLUMNS = ("path", "matched_path", "matched_split", "match", "distance")
#: Pixel value at or below which an edge row/column counts as letterbox padding.
BORDER_LEVEL = 8
#: A trimmed image must keep at least this fraction of each side (else it is not a letterbox).
MIN_KEPT = 0.5
#: Folder names never audited (lung masks are not radiographs).
MASK_DIRS = frozenset({"masks", "mask", "ignore"})
# (rows x reference hashes x words) elements compared at once.
_BLOCK_ELEMENTS = 4_000_000


@dataclass
class HashedImages:
    """Content hashes of a list of images.

    Attributes:
        frame: ``path``, ``sha1``, ``phash``, ``phash_trimmed`` ("" where the image has no dark
            border to trim) for every readable image.
        errors: ``path`` -> reason for the files that could not be read.
    """

    frame: pd.DataFrame
    errors: dict[str, str]


def trim_borders(gray: np.ndarray, *, level: int = BORDER_LEVEL) -> np.ndarray | None:
    """The image without its letterbox padding: uniform dark rows *or* columns at the edges.

    A letterbox pads one axis only (the longer side fills the canvas), so only the axis with the
    larger dark margin is trimmed; the film's own dark margins on the other axis are kept, as
    they are in a copy stretched to a square.

    Args:
        gray: (H, W) uint8.
        level: Edge rows/columns whose maximum is at most this are padding.

    Returns:
        The trimmed (h, W) or (H, w) view, or None when nothing is cut or less than
        :data:`MIN_KEPT` of the side would remain.
    """
    rows = np.flatnonzero(gray.max(axis=1) > level)
    cols = np.flatnonzero(gray.max(axis=0) > level)
    if not len(rows) or not len(cols):
        return None
    h, w = gray.shape
    row_cut = h - (rows[-1] + 1 - rows[0])
    col_cut = w - (cols[-1] + 1 - cols[0])
    if row_cut == 0 and col_cut == 0:
        return None
    if row_cut >= col_cut:
        kept = gray[rows[0] : rows[-1] + 1]
        return kept if len(kept) >= MIN_KEPT * h else None
    kept = gray[:, cols[0] : cols[-1] + 1]
    return kept if kept.shape[1] >= MIN_KEPT * w else None


def hash_one(path: str | os.PathLike, *, trimmed: bool = True) -> dict[str, str]:
    """sha1 of the bytes, the perceptual hash and (when it has dark borders) the trimmed one.

    Raises:
        ImageReadError: The file cannot be read or decoded.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot read the file ({exc.strerror or exc})") from None
    gray = read_gray(path, max_side=DECODE_MAX_SIDE)
    cut = trim_borders(gray) if trimmed else None
    return {
        "path": str(path),
        "sha1": hashlib.sha1(data).hexdigest(),
        "phash": phash_hex(phash(gray)),
        "phash_trimmed": phash_hex(phash(cut)) if cut is not None else "",
    }


def hash_images(
    paths: Sequence[str | os.PathLike], *, trimmed: bool = True, workers: int | None = None
) -> HashedImages:
    """:func:`hash_one` for many files in threads; unreadable files are listed, not raised."""

    def one(p):
        try:
            return hash_one(p, trimmed=trimmed)
        except ImageReadError as exc:
            return {"path": str(p), "error": exc.reason}

    rows = map_threads(one, list(paths), workers or min(8, os.cpu_count() or 1))
    errors = {r["path"]: r["error"] for r in rows if "error" in r}
    good = [r for r in rows if "error" not in r]
    frame = pd.DataFrame(good, columns=["path", "sha1", "phash", "phash_trimmed"])
    return HashedImages(frame, errors)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file below ``folder`` (natural order), skipping lung-mask folders and dotfiles.

    Raises:
        DataError: The folder does not exist or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"Folder {folder} does not exist (or is not a folder). Pass a folder of images."
        )
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d.lower() not in MASK_DIRS and not d.startswith("."))
        found.extend(
            Path(root) / f
            for f in sorted(files)
            if not f.startswith(".") and is_image_file(Path(root) / f)
        )
    if not found:
        raise DataError(
            f"Folder {folder} holds no image file (PNG, JPEG, TIFF, BMP or DICOM) outside mask "
            "folders. Check the path."
        )
    return found


def cross_distances(
    a: np.ndarray, b: np.ndarray, *, threshold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i in a, j in b) of hash words within ``threshold`` bits.

    Args:
        a: (M, W) uint64 words (:func:`~cxrlab.data.dedupe.hashes_to_words`).
        b: (N, W) uint64 words.
        threshold: Largest Hamming distance kept.

    Returns:
        ``(i, j, distance)``: three (P,) int64 arrays.
    """
    if not len(a) or not len(b):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    n_words = a.shape[1]
    chunk = max(1, _BLOCK_ELEMENTS // max(len(b) * n_words, 1))
    rows, cols, dists = [], [], []
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk]
        dist = np.zeros((len(block), len(b)), dtype=np.uint16)
        for w in range(n_words):
            dist += np.bitwise_count(block[:, None, w] ^ b[None, :, w])
        i, j = np.nonzero(dist <= threshold)
        rows.append(i + start)
        cols.append(j)
        dists.append(dist[i, j].astype(np.int64))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def find_overlap(
    candidates: pd.DataFrame, reference: pd.DataFrame, *, threshold: int = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """Every (candidate, reference) pair that is an exact or near duplicate.

    Args:
        candidates: ``path``, ``sha1``, ``phash``, optionally ``phash_trimmed`` (the external
            images).
        reference: ``path``, ``sha1``, ``phash``, optionally ``split`` (the run's images).
        threshold: Largest Hamming distance (of 256 bits) that counts as a near duplicate; below
            0 only exact matches are looked for.

    Returns:
        :data:`OVERLAP_COLUMNS`: ``match`` is ``"exact"``, ``"near"`` or ``"near (borders
        trimmed)"`` (the smallest distance of the two hashes wins; exact pairs are not repeated
        as near ones); sorted by candidate path, then distance.
    """
    split = reference["split"] if "split" in reference else pd.Series("", index=reference.index)
    ref_path = reference["path"].astype(str).to_numpy()
    ref_split = split.astype(str).to_numpy()
    found: dict[tuple[int, int], tuple[str, int]] = {}
    ref_sha = reference["sha1"].fillna("").astype(str).to_numpy()
    by_sha: dict[str, list[int]] = {}
    for j, s in enumerate(ref_sha):
        if s:
            by_sha.setdefault(s, []).append(j)
    for i, s in enumerate(candidates["sha1"].fillna("").astype(str)):
        for j in by_sha.get(s, []) if s else []:
            found[(i, j)] = ("exact", 0)
    if threshold >= 0:
        ref_words, ref_pos = hashes_to_words(reference["phash"].fillna("").tolist())
        for column, kind in (("phash", "near"), ("phash_trimmed", "near (borders trimmed)")):
            if column not in candidates or not len(ref_pos):
                continue
            words, pos = hashes_to_words(candidates[column].fillna("").tolist())
            if words.shape[1] != ref_words.shape[1] and len(pos):
                raise DataError(
                    "Perceptual hashes of different lengths cannot be compared; re-scan both sets "
                    "with this cxrlab version."
                )
            i, j, d = cross_distances(words, ref_words, threshold=threshold)
            for a, b, dist in zip(pos[i], ref_pos[j], d, strict=True):
                key = (int(a), int(b))
                if key not in found or found[key][1] > dist:
                    found[key] = (kind, int(dist))
    paths = candidates["path"].astype(str).to_numpy()
    rows = [
        (paths[i], ref_path[j], ref_split[j], kind, dist) for (i, j), (kind, dist) in found.items()
    ]
    frame = pd.DataFrame(rows, columns=list(OVERLAP_COLUMNS))
    frame["distance"] = frame["distance"].astype("int64")
    return frame.sort_values(["path", "distance", "matched_path"], ignore_index=True)


def reference_hashes(frame: pd.DataFrame, *, workers: int | None = None) -> pd.DataFrame:
    """A split manifest's ``path``, ``sha1``, ``phash``, ``split``; missing hashes computed.

    Rows whose hashes are missing from the manifest (runs split without near-duplicate detection)
    are read from their files; unreadable ones keep what the manifest had (and are logged).
    """
    out = pd.DataFrame({"path": frame["path"].astype(str)})
    for col in ("sha1", "phash", "split"):
        out[col] = frame[col].fillna("").astype(str) if col in frame else ""
    need = (out["sha1"] == "") | (out["phash"] == "")
    if need.any():
        logger.info("Hashing %d run images whose split.csv has no sha1/phash", int(need.sum()))
        hashed = hash_images(out.loc[need, "path"].tolist(), trimmed=False, workers=workers)
        got = hashed.frame.set_index("path")
        for col in ("sha1", "phash"):
            fill = out.loc[need, "path"].map(got[col]).fillna(out.loc[need, col])
            out.loc[need, col] = fill
        for path, reason in hashed.errors.items():
            logger.warning("Run image %s could not be hashed for the audit: %s", path, reason)
    return out


@dataclass
class FolderOverlap:
    """What :func:`overlap_folders` found.

    Attributes:
        pairs: :data:`OVERLAP_COLUMNS`, ``path`` in folder A, ``matched_path`` in folder B.
        n_a: Readable images in A.
        n_b: Readable images in B.
        errors: Unreadable files of either folder -> reason.
    """

    pairs: pd.DataFrame
    n_a: int
    n_b: int
    errors: dict[str, str]

    def counts(self) -> dict[str, int]:
        """Images of A with at least one match, per kind of their closest match."""
        best = self.pairs.drop_duplicates("path")
        return {str(k): int(v) for k, v in best["match"].value_counts().items()}


def overlap_folders(
    folder_a: str | os.PathLike,
    folder_b: str | os.PathLike,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    workers: int | None = None,
) -> FolderOverlap:
    """Audit two folders of images against each other (any layout; mask folders skipped).

    ``matched_split`` holds B's sub-folder of the matched image (its class folder, say).
    """
    a_files, b_files = list_images(folder_a), list_images(folder_b)
    a = hash_images(a_files, workers=workers)
    b = hash_images(b_files, trimmed=False, workers=workers)
    ref = b.frame.copy()
    root = Path(folder_b)
    ref["split"] = [str(Path(p).parent.relative_to(root)) for p in ref["path"]]
    pairs = find_overlap(a.frame, ref, threshold=threshold)
    return FolderOverlap(pairs, len(a.frame), len(b.frame), {**a.errors, **b.errors})
