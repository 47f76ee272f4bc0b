"""Read a dataset folder into an index of images: one row per image, problems listed by path.

Layouts understood (the dataset folder is found automatically, see :func:`find_dataset_dir`):

* **current release** of the COVID-19 Radiography Database::

      <dataset>/<Class>/images/*.png      images
      <dataset>/<Class>/masks/*.png       lung masks, paired with images by file name
      <dataset>/<Class>.metadata.xlsx     FILE NAME, FORMAT, SIZE, URL (URL -> ``source``)

* **older flat release**: ``<dataset>/<Class>/*.png``;
* **any class-per-folder tree**: images anywhere below ``<dataset>/<Class>/`` (a ``masks``
  sub-folder holds masks). ``root`` may be the dataset folder or any folder above it (a folder whose
  only sub-folder is the dataset, e.g. ``OUT`` of ``cxrlab synth`` or the unzipped Kaggle archive).

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

import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from cxrlab.data.classes import canonical_class, order_classes
from cxrlab.data.dedupe import (
    DEFAULT_THRESHOLD,
    hamming,
    near_duplicate_groups,
    phash,
    phash_hex,
)
from cxrlab.data.images import IMAGE_SUFFIXES, read_gray
from cxrlab.errors import DataError, ImageReadError, suggest

logger = logging.getLogger(__name__)

ProblemKind = Literal[
    "unreadable",  # empty file, unreadable, or not decodable even to its header (left out)
    "truncated",  # header fine but the pixel data is cut short or corrupt (verify=True; left out)
    "not_image",  # a non-image file inside a class folder (.txt, .DS_Store, Thumbs.db, ...)
    "loose_image",  # an image directly in the dataset folder, outside any class folder (ignored)
    "empty_class",  # a sub-folder of the dataset folder with no images (not used as a class)
    "duplicate",  # same bytes (sha1) as an earlier image; kept, grouped by dup_group
    "near_duplicate",  # perceptual hash within the threshold of an earlier image; kept, grouped
    "mask_without_image",  # a mask whose file name matches no image of its class
    "size_mismatch",  # mask aspect ratio differs from its image's (mask not used)
    "empty_mask",  # mask with no foreground pixel (verify=True; mask not used)
    "bad_metadata",  # a metadata .xlsx that cannot be read or lacks FILE NAME / URL
    "not_in_metadata",  # an image missing from its class's metadata file (source left empty)
]
#: Every problem kind, in the order reports list them.
PROBLEM_KINDS: tuple[str, ...] = get_args(ProblemKind)
#: Problem kinds that make ``scan_dataset(..., strict=True)`` raise instead of skipping.
STRICT_KINDS = frozenset({"unreadable", "truncated", "empty_class", "bad_metadata"})
#: Columns of :attr:`ScanResult.index`, in order (``phash`` and ``dup_group`` follow when computed).
INDEX_COLUMNS = ("path", "label", "source", "mask_path", "sha1", "width", "height", "mode")

_SKIP_DIRS = frozenset({"__macosx"})
_MASK_DIRS = frozenset({"masks", "mask"})
_METADATA_SUFFIXES = frozenset({".xlsx", ".xls"})
# Images larger than this side are decoded with PIL's reduction when verifying / hashing.
_DECODE_MAX_SIDE = 2048


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file or folder.

    Attributes:
        path: The file or folder concerned (absolute).
        kind: What is wrong (see :data:`ProblemKind`).
        detail: The reason in words, naming related files where there are any.
    """

    path: str
    kind: ProblemKind
    detail: str


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


_MASK_COLUMNS = ["path", "label", "image_path", "width", "height"]


@dataclass
class _ClassFiles:
    folders: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    metadata: list[Path] = field(default_factory=list)
    layout: str = ""


@dataclass
class _Probe:
    sha1: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    phash: str = ""
    has_foreground: bool | None = None
    kind: str | None = None
    detail: str = ""


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
    found = _list_dataset(dataset, problems)
    selected = _select_classes(dataset, found, classes, problems)
    n_workers = workers or min(32, os.cpu_count() or 1)

    # Read the metadata files (source of each image).
    sources: dict[str, dict[str, str] | None] = {}
    for cls in selected:
        sources[cls] = _read_class_metadata(found[cls].metadata, problems)

    # Probe images, drawing a seeded subset per class if asked.
    decode = verify or near_duplicates

    def probe_image(path: Path) -> _Probe:
        return _probe_file(path, want_sha1=hash, decode=decode, want_phash=near_duplicates)

    chosen = _probe_images(selected, found, probe_image, problems, limit_per_class, seed, n_workers)

    # Masks: pair by file name, probe the paired ones.
    rows: list[dict] = []
    mask_rows: list[dict] = []
    for cls in selected:
        files = found[cls]
        image_keys = {_stem_key(p.name) for p in files.images}
        masks_by_key: dict[str, Path] = {}
        for m in files.masks:
            key = _stem_key(m.name)
            if key not in image_keys:
                problems.append(
                    Problem(
                        str(m),
                        "mask_without_image",
                        f"lung mask has no image named {m.stem}.* in class {cls!r}",
                    )
                )
            masks_by_key.setdefault(key, m)
        paired = [(p, probe, masks_by_key.get(_stem_key(p.name))) for p, probe in chosen[cls]]
        mask_paths = [m for _, _, m in paired if m is not None]
        mask_probes = dict(
            zip(
                mask_paths,
                _map(
                    lambda m: _probe_file(m, want_sha1=False, decode=verify, want_phash=False),
                    mask_paths,
                    n_workers,
                ),
                strict=True,
            )
        )
        meta = sources[cls]
        for path, probe, mask in paired:
            mask_path = ""
            if mask is not None:
                mprobe = mask_probes[mask]
                mask_path = _check_mask(path, probe, mask, mprobe, problems)
                if mprobe.kind is None:
                    mask_rows.append(
                        {
                            "path": str(mask),
                            "label": cls,
                            "image_path": str(path),
                            "width": mprobe.width,
                            "height": mprobe.height,
                        }
                    )
            source = ""
            if meta is not None:
                source = meta.get(_stem_key(path.name), "")
                if _stem_key(path.name) not in meta:
                    problems.append(
                        Problem(
                            str(path),
                            "not_in_metadata",
                            f"not listed in {', '.join(p.name for p in found[cls].metadata)}; "
                            "its source is unknown",
                        )
                    )
            row = {
                "path": str(path),
                "label": cls,
                "source": source,
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

    problems = _sorted_problems(problems)
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
            "Check that the files are PNG/JPEG images and not placeholders of a failed download."
            if problems
            else f"No image in {dataset}. Put PNG/JPEG images in one sub-folder per class."
        )
    for cls in selected:
        if not (index["label"] == cls).any():
            logger.warning("Class %r has no readable image in %s", cls, dataset)

    masks_frame = pd.DataFrame(mask_rows, columns=_MASK_COLUMNS)
    result = ScanResult(
        root=dataset,
        index=index,
        classes=list(selected),
        problems=problems,
        masks=masks_frame,
        layouts={cls: found[cls].layout for cls in selected},
    )
    counts = result.problem_counts()
    logger.info(
        "Scanned %d images in %d classes from %s in %.1f s%s",
        len(index),
        len(selected),
        dataset,
        time.perf_counter() - t0,
        (" (problems: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")") if counts else "",
    )
    return result


def find_dataset_dir(root: str | os.PathLike, *, max_depth: int = 4) -> Path:
    """Find the folder that holds the class sub-folders, at ``root`` or below it.

    The dataset folder is the shallowest folder (breadth-first, up to ``max_depth`` levels below
    ``root``) having a sub-folder with images, directly or in an ``images`` sub-folder.

    Args:
        root: A folder.
        max_depth: How many levels below ``root`` to look.

    Returns:
        The dataset folder (absolute).

    Raises:
        DataError: ``root`` is missing, not a folder or empty; it is a single class folder
            (holding only ``images``/``masks``); class folders exist at several places; or no
            class folder with images exists within ``max_depth`` levels.
    """
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise DataError(
            f"Dataset folder {root} does not exist. Check the path; to try cxrlab without the real "
            "data, create a synthetic dataset with `cxrlab synth OUT --per-class 50`."
        )
    if not root.is_dir():
        raise DataError(
            f"{root} is a file, not a dataset folder. Pass the folder that holds one sub-folder "
            "per class (e.g. COVID-19_Radiography_Dataset)."
        )
    if not any(not p.name.startswith(".") for p in root.iterdir()):
        raise DataError(
            f"Dataset folder {root} is empty. Unzip the dataset into it, or pass the folder "
            "where it was unzipped."
        )
    level = [root]
    for _depth in range(max_depth + 1):
        found = [d for d in level if _class_children(d)]
        if len(found) > 1:
            names = ", ".join(str(d) for d in found[:6])
            raise DataError(
                f"Class folders were found in several places under {root}: {names}. cxrlab makes "
                "its own splits from one folder of class sub-folders: pass one of these folders "
                "(or merge them into one)."
            )
        if found:
            dataset = found[0]
            names = {c.name.lower() for c in _class_children(dataset)}
            if names <= {"images", "masks", "mask"}:
                raise DataError(
                    f"{dataset} looks like a single class folder (it holds {sorted(names)}). Pass "
                    f"the folder above it ({dataset.parent}), which holds one sub-folder per class."
                )
            if dataset != root:
                logger.debug("Dataset folder found below %s: %s", root, dataset)
            return dataset
        level = [c for d in level for c in _subdirs(d)]
        if not level:
            break
    subdirs = [c.name for c in _subdirs(root)]
    seen = f" It has sub-folders {subdirs[:8]} but none holds images." if subdirs else ""
    raise DataError(
        f"No class sub-folders with images found in {root} (searched {max_depth} levels "
        f"down).{seen}"
        " Expected the current release layout <dataset>/<Class>/images/*.png (with optional "
        "<Class>/masks/*.png and <Class>.metadata.xlsx) or the older flat layout "
        "<dataset>/<Class>/*.png. Pass the folder that holds one sub-folder per class."
    )


# ----------------------------------------------------------------------------------------------
# listing


def _subdirs(folder: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and e.name.lower() not in _SKIP_DIRS
    ]


def _has_direct_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(
                e.is_file()
                and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
                and not e.name.startswith(".")
                for e in it
            )
    except OSError:
        return False


def _images_subdir(folder: Path) -> Path | None:
    for sub in _subdirs(folder):
        if sub.name.lower() == "images":
            return sub
    return None


def _class_children(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` holding images directly or in an ``images`` sub-folder."""
    out = []
    for sub in _subdirs(folder):
        images = _images_subdir(sub)
        if _has_direct_images(sub) or (images is not None and _has_direct_images(images)):
            out.append(sub)
    return out


def _list_dataset(dataset: Path, problems: list[Problem]) -> dict[str, _ClassFiles]:
    """List every class folder's images, masks and metadata; record listing problems."""
    found: dict[str, _ClassFiles] = {}
    top_metadata: list[Path] = []
    for entry in sorted(dataset.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            suffix = entry.suffix.lower()
            if suffix in _METADATA_SUFFIXES:
                top_metadata.append(entry)
            elif suffix in IMAGE_SUFFIXES:
                problems.append(
                    Problem(
                        str(entry),
                        "loose_image",
                        "image directly in the dataset folder, outside any class folder; "
                        "ignored (move it into its class folder)",
                    )
                )
            continue
        if not entry.is_dir() or entry.name.lower() in _SKIP_DIRS:
            continue
        files = _list_class_folder(entry, problems)
        if not files.images:
            problems.append(
                Problem(
                    str(entry),
                    "empty_class",
                    "folder holds no images; it is not used as a class (remove it, or fill it)",
                )
            )
            logger.warning("Folder %s holds no images; it is not used as a class", entry)
            continue
        cls = canonical_class(entry.name)
        if cls in found:
            other = found[cls].folders[0]
            raise DataError(
                f"Folders {other} and {entry} both name class {cls!r} (class names ignore case, "
                "spaces/underscores and a trailing 's'). Merge them into one folder or rename one."
            )
        found[cls] = files
    for meta in top_metadata:
        stem = meta.name[: -len(meta.suffix)]
        stem = re.sub(r"[._ -]?metadata$", "", stem, flags=re.IGNORECASE)
        cls = canonical_class(stem) if stem else ""
        if cls in found:
            found[cls].metadata.append(meta)
        else:
            logger.debug("Metadata file %s matches no class folder; ignored", meta)
    return found


def _list_class_folder(folder: Path, problems: list[Problem]) -> _ClassFiles:
    files = _ClassFiles(folders=[folder])
    layouts = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d.lower() not in _SKIP_DIRS
        )
        here = Path(dirpath)
        rel = here.relative_to(folder).parts
        in_masks = bool(rel) and rel[0].lower() in _MASK_DIRS
        for name in sorted(filenames):
            path = here / name
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES and not name.startswith("."):
                if in_masks:
                    files.masks.append(path)
                else:
                    files.images.append(path)
                    if not rel:
                        layouts.add("flat")
                    elif rel[0].lower() == "images":
                        layouts.add("current")
                    else:
                        layouts.add("nested")
            elif suffix in _METADATA_SUFFIXES and not in_masks:
                files.metadata.append(path)
            else:
                problems.append(
                    Problem(
                        str(path),
                        "not_image",
                        f"not an image file (suffix {suffix or 'none'!r}) inside class folder "
                        f"{folder.name!r}; ignored",
                    )
                )
    files.images.sort(key=lambda p: _natural_key(str(p)))
    files.masks.sort(key=lambda p: _natural_key(str(p)))
    files.layout = "+".join(sorted(layouts))
    return files


def _select_classes(
    dataset: Path,
    found: dict[str, _ClassFiles],
    classes: Sequence[str] | None,
    problems: list[Problem],
) -> list[str]:
    if classes is None:
        return order_classes(found)
    if isinstance(classes, str):
        classes = [classes]
    wanted = [canonical_class(c) for c in classes]
    if len(set(wanted)) != len(wanted):
        raise DataError(f"classes {list(classes)} name the same class twice.")
    missing = [c for c in wanted if c not in found]
    if missing:
        empty = {canonical_class(Path(p.path).name) for p in problems if p.kind == "empty_class"}
        hints = " ".join(
            f"{c!r}: {'its folder holds no images' if c in empty else 'no such folder'}."
            + suggest(c, found)
            for c in missing
        )
        raise DataError(
            f"Class(es) {missing} requested but not found in {dataset}, which has class folders "
            f"{order_classes(found)}. {hints}"
        )
    ignored = sorted(set(found) - set(wanted))
    if ignored:
        logger.info("Ignoring class folders not requested: %s", ignored)
    return wanted


def _read_class_metadata(paths: list[Path], problems: list[Problem]) -> dict[str, str] | None:
    """Map file-name keys to source URLs from a class's metadata files (None if it has none)."""
    if not paths:
        return None
    out: dict[str, str] = {}
    usable = False
    for path in paths:
        try:
            frame = pd.read_excel(path, dtype=str)
        except Exception as exc:  # openpyxl raises many types for a broken file
            problems.append(
                Problem(str(path), "bad_metadata", f"cannot read the spreadsheet ({exc}); ignored")
            )
            continue
        cols = {str(c).strip().upper(): c for c in frame.columns}
        name_col = cols.get("FILE NAME") or cols.get("FILENAME") or cols.get("FILE_NAME")
        url_col = cols.get("URL") or cols.get("SOURCE")
        if name_col is None or url_col is None:
            problems.append(
                Problem(
                    str(path),
                    "bad_metadata",
                    f"expected columns 'FILE NAME' and 'URL', found {list(frame.columns)}; ignored",
                )
            )
            continue
        usable = True
        for name, url in zip(frame[name_col], frame[url_col], strict=True):
            if isinstance(name, str) and name.strip():
                out.setdefault(_stem_key(name), url.strip() if isinstance(url, str) else "")
    return out if usable else None


# ----------------------------------------------------------------------------------------------
# reading files


def _map(fn: Callable, items: Sequence, workers: int) -> list:
    """``[fn(x) for x in items]`` on a thread pool (PIL decoding and hashlib release the GIL)."""
    if workers <= 1 or len(items) < 8:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxrlab-scan") as pool:
        return list(pool.map(fn, items, chunksize=16))


def _probe_file(path: Path, *, want_sha1: bool, decode: bool, want_phash: bool) -> _Probe:
    """Read one image file's header (and pixels if asked); never raises for a bad file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _Probe(kind="unreadable", detail=f"cannot read the file ({exc.strerror or exc})")
    if not data:
        return _Probe(kind="unreadable", detail="file is empty (0 bytes)")
    sha1 = hashlib.sha1(data).hexdigest() if want_sha1 else ""
    try:
        with Image.open(io.BytesIO(data)) as im:
            probe = _Probe(sha1=sha1, width=im.width, height=im.height, mode=im.mode)
    except UnidentifiedImageError:
        return _Probe(sha1=sha1, kind="unreadable", detail="not an image file PIL can identify")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        return _Probe(sha1=sha1, kind="unreadable", detail=f"corrupt image header ({exc})")
    if decode or want_phash:
        try:
            gray = read_gray(path, max_side=_DECODE_MAX_SIDE)
        except ImageReadError as exc:
            probe.kind = "truncated"
            probe.detail = exc.reason
            return probe
        probe.has_foreground = bool(gray.any())
        if want_phash:
            probe.phash = phash_hex(phash(gray))
    return probe


def _probe_images(
    selected: list[str],
    found: dict[str, _ClassFiles],
    probe: Callable[[Path], _Probe],
    problems: list[Problem],
    limit: int | None,
    seed: int,
    workers: int,
) -> dict[str, list[tuple[Path, _Probe]]]:
    """Probe each class's images (or a seeded subset of ``limit``); record failures."""
    chosen: dict[str, list[tuple[Path, _Probe]]] = {cls: [] for cls in selected}
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
            batch, _map(probe, [p for _, p in batch], workers), strict=True
        ):
            if result.kind is None:
                chosen[cls].append((path, result))
            else:
                problems.append(Problem(str(path), result.kind, result.detail))
    for cls in selected:
        chosen[cls].sort(key=lambda item: _natural_key(str(item[0])))
    return chosen


def _check_mask(image: Path, probe: _Probe, mask: Path, mprobe: _Probe, problems) -> str:
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


def _sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    order = {k: i for i, k in enumerate(PROBLEM_KINDS)}
    return sorted(problems, key=lambda p: (order[p.kind], _natural_key(p.path)))


def _stem_key(name: str) -> str:
    """Key matching a file to its mask and metadata row: lower-case name without image suffix."""
    name = name.strip()
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        name = name[: -len(suffix)]
    return name.lower()


def _natural_key(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))
