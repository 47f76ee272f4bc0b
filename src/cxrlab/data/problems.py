"""What can be wrong with a file or folder of a dataset: :class:`Problem` and its kinds.

Every module that reads a dataset folder (:mod:`~cxrlab.data.layout`, :mod:`~cxrlab.data.metadata`,
:mod:`~cxrlab.data.probe`, :mod:`~cxrlab.data.scan`) records what it finds wrong as a
:class:`Problem` naming the path and the reason, instead of raising on the first bad file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

ProblemKind = Literal[
    "unreadable",  # empty file, unreadable, or not decodable even to its header (left out)
    "truncated",  # header fine but the pixel data is cut short or corrupt (decoded; left out)
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
    "exif_oriented",  # stored rotated/flipped with an EXIF Orientation tag; decoded upright (kept)
]
#: Every problem kind, in the order reports list them.
PROBLEM_KINDS: tuple[str, ...] = get_args(ProblemKind)
#: Problem kinds that make ``scan_dataset(..., strict=True)`` raise instead of skipping.
STRICT_KINDS = frozenset({"unreadable", "truncated", "empty_class", "bad_metadata"})
#: Problem kinds of image files left out of the index (the "skipped" files of a split).
SKIPPED_KINDS = frozenset({"unreadable", "truncated"})


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


def sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems grouped by kind (:data:`PROBLEM_KINDS` order), paths in natural order within."""
    order = {k: i for i, k in enumerate(PROBLEM_KINDS)}
    return sorted(problems, key=lambda p: (order[p.kind], natural_key(p.path)))


def natural_key(text: str) -> tuple:
    """Sort key putting ``x-2`` before ``x-10``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))
