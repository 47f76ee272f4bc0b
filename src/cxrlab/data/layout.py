"""Where a dataset's files are: the dataset folder, its class folders, their images and masks.

Layouts understood (the dataset folder is found automatically, see :func:`find_dataset_dir`):

* **current release** of the COVID-19 Radiography Database::

      <dataset>/<Class>/images/*.png      images
      <dataset>/<Class>/masks/*.png       lung masks, paired with images by file name
      <dataset>/<Class>.metadata.xlsx     FILE NAME, FORMAT, SIZE, URL (see cxrlab.data.metadata)

* **older flat release**: ``<dataset>/<Class>/*.png``;
* **any class-per-folder tree**: images anywhere below ``<dataset>/<Class>/`` (a ``masks``
  sub-folder holds masks). ``root`` may be the dataset folder or any folder above it (a folder whose
  only sub-folder is the dataset, e.g. ``OUT`` of ``cxrlab synth`` or the unzipped Kaggle archive).

Images are PNG/JPEG/TIFF/BMP files (:data:`~cxrlab.data.images.IMAGE_SUFFIXES`) and DICOM files
(``.dcm``/``.dicom``, or no suffix and the DICM preamble), all decoded by
:func:`~cxrlab.data.images.read_gray`. Class folder names are matched to the database's classes by
:func:`~cxrlab.data.classes.canonical_class`. Listing reads no pixel data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxrlab.data.classes import canonical_class, order_classes
from cxrlab.data.dicom import DICOM_SUFFIXES, is_dicom
from cxrlab.data.images import IMAGE_SUFFIXES, MASK_DIRS
from cxrlab.data.problems import Problem, natural_key
from cxrlab.errors import DataError, suggest

logger = logging.getLogger(__name__)

#: Suffixes of the files a scan treats as images (raster formats and DICOM).
SCAN_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES
#: Suffixes of metadata spreadsheets.
METADATA_SUFFIXES = frozenset({".xlsx", ".xls"})

_SKIP_DIRS = frozenset({"__macosx"})


@dataclass
class ClassFiles:
    """The files of one class, as listed (nothing read yet).

    Attributes:
        folders: The class folder.
        images: Image files in natural order.
        masks: Files below a ``masks`` sub-folder, in natural order.
        metadata: Metadata spreadsheets of the class (inside its folder or ``<Class>.metadata.xlsx``
            beside it).
        layout: ``"current"``, ``"flat"``, ``"nested"`` or several joined by ``+``.
    """

    folders: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    metadata: list[Path] = field(default_factory=list)
    layout: str = ""


def is_image_file(path: Path) -> bool:
    """Whether a scan treats ``path`` as an image: a known suffix, or no suffix and DICM magic."""
    if path.name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if suffix in SCAN_SUFFIXES:
        return True
    return suffix == "" and is_dicom(path)


def stem_key(name: str) -> str:
    """Key matching a file to its mask and metadata row: lower-case name without image suffix."""
    name = name.strip()
    suffix = Path(name).suffix.lower()
    if suffix in SCAN_SUFFIXES:
        name = name[: -len(suffix)]
    return name.lower()


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
        "<dataset>/<Class>/*.png (or .dcm). Pass the folder that holds one sub-folder per class."
    )


def list_dataset(
    dataset: Path, problems: list[Problem]
) -> tuple[dict[str, ClassFiles], list[Path]]:
    """List every class folder's images, masks and metadata; record listing problems.

    Returns:
        ``(classes, top_metadata)``: the files of each class (by canonical class name, in folder
        order) and the metadata spreadsheets lying directly in the dataset folder (see
        :func:`cxrlab.data.metadata.attach_metadata`).
    """
    found: dict[str, ClassFiles] = {}
    top_metadata: list[Path] = []
    for entry in sorted(dataset.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.suffix.lower() in METADATA_SUFFIXES:
                top_metadata.append(entry)
            elif is_image_file(entry):
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
    return found, top_metadata


def select_classes(
    dataset: Path,
    found: dict[str, ClassFiles],
    classes: Sequence[str] | None,
    problems: list[Problem],
) -> list[str]:
    """The classes to use, in output order: ``classes`` (matched like folder names) or all."""
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


# ----------------------------------------------------------------------------------------------
# internals


def _list_class_folder(folder: Path, problems: list[Problem]) -> ClassFiles:
    files = ClassFiles(folders=[folder])
    layouts = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d.lower() not in _SKIP_DIRS
        )
        here = Path(dirpath)
        rel = here.relative_to(folder).parts
        in_masks = bool(rel) and rel[0].lower() in MASK_DIRS
        for name in sorted(filenames):
            path = here / name
            suffix = path.suffix.lower()
            if is_image_file(path):
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
            elif suffix in METADATA_SUFFIXES and not in_masks:
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
    files.images.sort(key=lambda p: natural_key(str(p)))
    files.masks.sort(key=lambda p: natural_key(str(p)))
    files.layout = "+".join(sorted(layouts))
    return files


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
            return any(e.is_file() and is_image_file(Path(e.path)) for e in it)
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
