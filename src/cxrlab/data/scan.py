"""Read a dataset folder into an index of images: one row per image, problems listed by path.

The scan lists the files (:mod:`cxrlab.data.layout`: which folder is the dataset, which are its
class folders, the release/flat/class-per-folder layouts, PNG/JPEG/TIFF/BMP and DICOM images),
reads each class's sources (:mod:`cxrlab.data.metadata`), probes every image
(:mod:`cxrlab.data.probe`: content hash, size, mode, and with ``verify`` or ``near_duplicates`` a
full decode through :func:`~cxrlab.data.images.read_gray`), pairs lung masks with images by file
name and groups exact and near duplicates (:mod:`cxrlab.data.dedupe`).

Class folder names are matched to the database's classes by
:func:`~cxrlab.data.classes.canonical_class` (case, spaces/underscores/hyphens and a trailing ``s``
are ignored); other names become classes of their own. Classes are ordered by
:func:`~cxrlab.data.classes.order_classes` unless ``classes`` is given.

Policy for bad files (see :data:`ProblemKind`): every problem is listed in
:attr:`ScanResult.problems` with its path and reason; unreadable and truncated images are left out
of the index, duplicates are kept (their ``dup_group`` keeps them on one side of a split). With
``strict=True`` the kinds in :data:`STRICT_KINDS` raise :class:`~cxrlab.errors.DataError` instead.
Nothing is ever written inside the dataset folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.dedupe import DEFAULT_THRESHOLD, hamming, near_duplicate_groups
from cxrlab.data.layout import (
    ClassFiles,
    find_dataset_dir,
    list_dataset,
    select_classes,
    stem_key,
)
from cxrlab.data.metadata import attach_metadata, read_class_metadata, source_of
from cxrlab.data.probe import FileProbe, map_threads, probe_file
from cxrlab.data.problems import (
    PROBLEM_KINDS,
    STRICT_KINDS,
    Problem,
    ProblemKind,
    natural_key,
    sorted_problems,
)
from cxrlab.data.scan_cache import ProbeCache, open_probe_cache
from cxrlab.errors import DataError

__all__ = [
    "INDEX_COLUMNS",
    "PROBLEM_KINDS",
    "STRICT_KINDS",
    "Problem",
    "ProblemKind",
    "ScanResult",
    "find_dataset_dir",
    "scan_dataset",
]

logger = logging.getLogger(__name__)

#: Columns of :attr:`ScanResult.index`, in order (``phash`` and ``dup_group`` follow when computed).
INDEX_COLUMNS = ("path", "label", "source", "mask_path", "sha1", "width", "height", "mode")
_MASK_COLUMNS = ["path", "label", "image_path", "width", "height"]


@dataclass
class ScanResult:
    """What :func:`scan_dataset` found.

    Attributes:
        root: The dataset folder actually scanned (the one holding the class folders).
        index: One row per readable image, columns :data:`INDEX_COLUMNS` (plus ``phash`` and
            ``dup_group`` when computed).
        classes: Class names in output order.
        problems: Every problem found, grouped by kind in :data:`PROBLEM_KINDS` order.
        masks: One row per readable mask file: ``path``, ``label``, ``image_path`` ("" if none),
            ``width``, ``height``.
        layouts: Layout of each class folder: ``"current"`` (``images/`` sub-folder), ``"flat"``
            (images directly in the class folder) or ``"nested"`` (elsewhere below it).
    """

    root: Path
    index: pd.DataFrame
    classes: list[str]
    problems: list[Problem]
    masks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_MASK_COLUMNS))
    layouts: dict[str, str] = field(default_factory=dict)

    def problems_frame(self) -> pd.DataFrame:
        """The problems as a DataFrame with columns ``path``, ``kind``, ``detail``."""
        return pd.DataFrame(
            [(p.path, p.kind, p.detail) for p in self.problems], columns=["path", "kind", "detail"]
        )

    def problem_counts(self) -> dict[str, int]:
        """Number of problems of each kind that occurred, in :data:`PROBLEM_KINDS` order."""
        counts = {k: 0 for k in PROBLEM_KINDS}
        for p in self.problems:
            counts[p.kind] += 1
        return {k: v for k, v in counts.items() if v}


def scan_dataset(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    hash: bool = True,  # noqa: A002 - the documented option name
    verify: bool = False,
    near_duplicates: bool = False,
    near_duplicate_threshold: int = DEFAULT_THRESHOLD,
    limit_per_class: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> ScanResult:
    """Scan a dataset folder into an index of images, masks, sources and problems.

    Args:
        root: The dataset folder, or a folder above it (see :func:`find_dataset_dir`).
        classes: Use only these classes, in this order (names are matched like folder names).
            Default: every class folder, ordered by :func:`~cxrlab.data.classes.order_classes`.
        strict: Raise :class:`~cxrlab.errors.DataError` listing the files if any problem of a
            kind in :data:`STRICT_KINDS` occurs, instead of skipping them.
        hash: Compute each image's ``sha1`` (exact-duplicate detection, split hashes). Without it
            the ``sha1`` column is empty.
        verify: Decode every image and mask completely, finding truncated files and empty masks.
            Without it only file headers are read (size, mode), which is much faster.
        near_duplicates: Decode every image to compute its perceptual hash (``phash`` column) and
            group near duplicates in ``dup_group`` (see :mod:`cxrlab.data.dedupe`).
        near_duplicate_threshold: Hamming distance (of 256 bits) within which two images are
            near duplicates.
        limit_per_class: Keep at most this many images per class: a seeded random subset of the
            listed files (drawn before reading, so only the sampled files are read; unreadable
            ones are replaced by further draws).
        seed: Seed of the subset drawn for ``limit_per_class``.
        workers: Threads used to read files (default: ``os.cpu_count()``, at most 32).
        cache_dir: Folder of the scan cache (:mod:`cxrlab.data.scan_cache`; default the decode
            cache's folder :func:`~cxrlab.data.cache.default_cache_dir`).
        use_cache: Reuse (and record) each file's probe while its size and mtime are unchanged.

    Returns:
        A :class:`ScanResult`. ``index`` rows are sorted by class (in ``classes`` order), then by
        file path in natural order (``x-2`` before ``x-10``); ``dup_group`` is present when
        ``hash`` or ``near_duplicates`` is set.

    Raises:
        DataError: ``root`` is missing, empty or holds no class folders with images; a requested
            class is absent; no image could be read; or ``strict`` and a strict problem occurred.
    """
    t0 = time.perf_counter()
    if limit_per_class is not None and limit_per_class < 1:
        raise DataError(f"limit_per_class must be at least 1, got {limit_per_class}.")
    dataset = find_dataset_dir(root)
    problems: list[Problem] = []
    found, top_metadata = list_dataset(dataset, problems)
    attach_metadata(found, top_metadata)
    selected = select_classes(dataset, found, classes, problems)
    n_workers = workers or min(32, os.cpu_count() or 1)
    sources = {cls: read_class_metadata(found[cls].metadata, problems) for cls in selected}

    # Probe images (decoding them when verifying or hashing), drawing a seeded subset if asked.
    decode = verify or near_duplicates
    cache = open_probe_cache(dataset, cache_dir, use_cache)
    want = {"want_sha1": hash, "decode": decode, "want_phash": near_duplicates}

    def probe_image(path: Path) -> FileProbe:
        return cache.probe(path, lambda p: probe_file(p, **want), **want)

    chosen = _probe_images(selected, found, probe_image, problems, limit_per_class, seed, n_workers)

    rows: list[dict] = []
    mask_rows: list[dict] = []
    for cls in selected:
        masks = _pair_masks(cls, found[cls], chosen[cls], problems, verify, n_workers, cache)
        for path, probe in chosen[cls]:
            mask_path = ""
            if path in masks:
                mask, mprobe = masks[path]
                mask_path = _check_mask(path, probe, mask, mprobe, problems)
                if mprobe.kind is None:
                    mask_rows.append(
                        {"path": str(mask), "label": cls, "image_path": str(path),
                         "width": mprobe.width, "height": mprobe.height}
                    )  # fmt: skip
            row = {
                "path": str(path),
                "label": cls,
                "source": source_of(path, sources[cls], found[cls], problems),
                "mask_path": mask_path,
                "sha1": probe.sha1,
                "width": probe.width,
                "height": probe.height,
                "mode": probe.mode,
            }
            if near_duplicates:
                row["phash"] = probe.phash
            rows.append(row)

    columns = list(INDEX_COLUMNS) + (["phash"] if near_duplicates else [])
    index = pd.DataFrame(rows, columns=columns)
    index["width"] = index["width"].astype("int64")
    index["height"] = index["height"].astype("int64")
    if hash or near_duplicates:
        threshold = near_duplicate_threshold if near_duplicates else -1
        index["dup_group"] = near_duplicate_groups(index, threshold=threshold)
        problems.extend(_duplicate_problems(index, near=near_duplicates))

    problems = sorted_problems(problems)
    if strict:
        bad = [p for p in problems if p.kind in STRICT_KINDS]
        if bad:
            listed = "; ".join(f"{p.path} ({p.kind}: {p.detail})" for p in bad[:20])
            more = f"; and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(
                f"{len(bad)} problem(s) in {dataset} stop a strict scan: {listed}{more}. Remove or "
                "replace these files (or folders), or scan without strict to skip them."
            )
    if index.empty:
        raise DataError(
            f"No readable image in {dataset}: every image file failed to open "
            f"({len(problems)} problem(s), e.g. {problems[0].path}: {problems[0].detail}). "
            "Check that the files are PNG/JPEG/DICOM images and not placeholders of a failed "
            "download."
            if problems
            else f"No image in {dataset}. Put PNG/JPEG/DICOM images in one sub-folder per class."
        )
    for cls in selected:
        if not (index["label"] == cls).any():
            logger.warning("Class %r has no readable image in %s", cls, dataset)

    result = ScanResult(
        root=dataset,
        index=index,
        classes=list(selected),
        problems=problems,
        masks=pd.DataFrame(mask_rows, columns=_MASK_COLUMNS),
        layouts={cls: found[cls].layout for cls in selected},
    )
    counts = result.problem_counts()
    cache.save()
    logger.info(
        "Scanned %d images in %d classes from %s in %.1f s (%d read, %d from the scan cache)%s",
        len(index),
        len(selected),
        dataset,
        time.perf_counter() - t0,
        cache.misses,
        cache.hits,
        (" (problems: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")") if counts else "",
    )
    return result


# ----------------------------------------------------------------------------------------------
# internals


def _pair_masks(
    cls: str,
    files: ClassFiles,
    chosen: list[tuple[Path, FileProbe]],
    problems: list[Problem],
    verify: bool,
    workers: int,
    cache: ProbeCache,
) -> dict[Path, tuple[Path, FileProbe]]:
    """Image path -> (its mask, the mask's probe), for the chosen images that have one.

    Masks are paired by :func:`~cxrlab.data.layout.stem_key`; a mask matching no image of the
    class is a ``mask_without_image`` problem.
    """
    image_keys = {stem_key(p.name) for p in files.images}
    masks_by_key: dict[str, Path] = {}
    for m in files.masks:
        key = stem_key(m.name)
        if key not in image_keys:
            problems.append(
                Problem(
                    str(m),
                    "mask_without_image",
                    f"lung mask has no image named {m.stem}.* in class {cls!r}",
                )
            )
        masks_by_key.setdefault(key, m)
    paired = {
        p: masks_by_key[stem_key(p.name)] for p, _ in chosen if stem_key(p.name) in masks_by_key
    }
    mask_paths = list(paired.values())
    want = {"want_sha1": False, "decode": verify, "want_phash": False}
    probes = map_threads(
        lambda m: cache.probe(m, lambda p: probe_file(p, **want), **want), mask_paths, workers
    )
    by_mask = dict(zip(mask_paths, probes, strict=True))
    return {image: (mask, by_mask[mask]) for image, mask in paired.items()}


def _probe_images(
    selected: list[str],
    found: dict[str, ClassFiles],
    probe: Callable[[Path], FileProbe],
    problems: list[Problem],
    limit: int | None,
    seed: int,
    workers: int,
) -> dict[str, list[tuple[Path, FileProbe]]]:
    """Probe each class's images (or a seeded subset of ``limit``); record failures."""
    chosen: dict[str, list[tuple[Path, FileProbe]]] = {cls: [] for cls in selected}
    queues: dict[str, list[Path]] = {}
    rngs = np.random.default_rng(seed).spawn(len(selected))
    for cls, rng in zip(selected, rngs, strict=True):
        files = found[cls].images
        if limit is not None and len(files) > limit:
            queues[cls] = [files[i] for i in rng.permutation(len(files))]
        else:
            queues[cls] = list(files)
    while True:
        batch: list[tuple[str, Path]] = []
        for cls in selected:
            need = len(queues[cls]) if limit is None else limit - len(chosen[cls])
            take, queues[cls] = queues[cls][:need], queues[cls][need:]
            batch.extend((cls, p) for p in take)
        if not batch:
            break
        for (cls, path), result in zip(
            batch, map_threads(probe, [p for _, p in batch], workers), strict=True
        ):
            if result.kind is None:
                chosen[cls].append((path, result))
                if result.orientation != 1:
                    problems.append(Problem(str(path), "exif_oriented", _exif_detail(result)))
            else:
                problems.append(Problem(str(path), result.kind, result.detail))
    for cls in selected:
        chosen[cls].sort(key=lambda item: natural_key(str(item[0])))
    return chosen


def _check_mask(image: Path, probe: FileProbe, mask: Path, mprobe: FileProbe, problems) -> str:
    """Return the mask path to use for ``image`` ("" if unusable), recording mask problems."""
    if mprobe.kind is not None:
        problems.append(Problem(str(mask), mprobe.kind, f"lung mask: {mprobe.detail}"))
        return ""
    if mprobe.width * probe.height != mprobe.height * probe.width:
        problems.append(
            Problem(
                str(mask),
                "size_mismatch",
                f"mask is {mprobe.width}x{mprobe.height} but its image {image.name} is "
                f"{probe.width}x{probe.height}: a different aspect ratio, so it cannot be "
                "aligned by resizing; mask not used",
            )
        )
        return ""
    if mprobe.has_foreground is False:
        problems.append(
            Problem(str(mask), "empty_mask", f"mask of {image.name} has no lung pixel; not used")
        )
        return ""
    return str(mask)


def _duplicate_problems(index: pd.DataFrame, *, near: bool) -> list[Problem]:
    """Problems for exact (same sha1) and near (same dup_group) duplicates, first one kept."""
    out: list[Problem] = []
    paths = index["path"].tolist()
    labels = index["label"].tolist()
    sha = index["sha1"].tolist()
    for _, members in index.groupby("dup_group", sort=False).indices.items():
        if len(members) < 2:
            continue
        members = sorted(members)
        first = members[0]
        seen_sha: dict[str, int] = {}
        for m in members:
            if sha[m] and sha[m] in seen_sha:
                ref = seen_sha[sha[m]]
                out.append(
                    Problem(
                        paths[m],
                        "duplicate",
                        _dup_detail("identical bytes to", paths, labels, ref, m),
                    )
                )
                continue
            if sha[m]:
                seen_sha[sha[m]] = m
            if m != first and near:
                dist = (
                    hamming(index["phash"].iat[first], index["phash"].iat[m])
                    if (index["phash"].iat[first] and index["phash"].iat[m])
                    else -1
                )
                what = (
                    f"looks like (perceptual-hash distance {dist})" if dist >= 0 else "looks like"
                )
                out.append(
                    Problem(paths[m], "near_duplicate", _dup_detail(what, paths, labels, first, m))
                )
    return out


def _dup_detail(what: str, paths: list[str], labels: list[str], ref: int, m: int) -> str:
    text = f"{what} {paths[ref]}"
    if labels[ref] != labels[m]:
        text += (
            f", which is labelled {labels[ref]!r} while this one is {labels[m]!r}: the same image "
            "in two classes"
        )
    return text + "; kept in the same dup_group so they never straddle a split"


def _exif_detail(probe: FileProbe) -> str:
    return (
        f"stored with EXIF Orientation {probe.orientation}; decoded upright "
        f"({probe.width}x{probe.height}) for training and prediction, as viewers show it"
    )
