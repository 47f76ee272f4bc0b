"""Each image's source, from the per-class metadata spreadsheets of the database.

The current release puts ``<Class>.metadata.xlsx`` beside each class folder, with the columns
``FILE NAME``, ``FORMAT``, ``SIZE`` and ``URL``; the URL names the public collection the image came
from and becomes the index's ``source`` column (what a source-held-out split holds out). File names
are matched without their suffix and case (``COVID-1`` matches ``covid-1.png``). A spreadsheet that
cannot be read, or lacks the columns, is a ``bad_metadata`` problem; an image it does not list is a
``not_in_metadata`` problem and gets an empty source.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from cxrlab.data.classes import canonical_class
from cxrlab.data.layout import ClassFiles, stem_key
from cxrlab.data.problems import Problem

logger = logging.getLogger(__name__)


def attach_metadata(found: dict[str, ClassFiles], top_metadata: list[Path]) -> None:
    """Give each class the ``<Class>.metadata.xlsx`` files lying in the dataset folder."""
    for meta in top_metadata:
        stem = meta.name[: -len(meta.suffix)]
        stem = re.sub(r"[._ -]?metadata$", "", stem, flags=re.IGNORECASE)
        cls = canonical_class(stem) if stem else ""
        if cls in found:
            found[cls].metadata.append(meta)
        else:
            logger.debug("Metadata file %s matches no class folder; ignored", meta)


def read_class_metadata(paths: list[Path], problems: list[Problem]) -> dict[str, str] | None:
    """Map file-name keys (:func:`~cxrlab.data.layout.stem_key`) to source URLs.

    Args:
        paths: The class's metadata spreadsheets.
        problems: Receives a ``bad_metadata`` problem for each unusable spreadsheet.

    Returns:
        The mapping, or None when the class has no usable spreadsheet (sources unknown).
    """
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
                out.setdefault(stem_key(name), url.strip() if isinstance(url, str) else "")
    return out if usable else None


def source_of(
    path: Path, sources: dict[str, str] | None, files: ClassFiles, problems: list[Problem]
) -> str:
    """The source of one image ("" when unknown), recording ``not_in_metadata`` when unlisted."""
    if sources is None:
        return ""
    key = stem_key(path.name)
    if key not in sources:
        problems.append(
            Problem(
                str(path),
                "not_in_metadata",
                f"not listed in {', '.join(p.name for p in files.metadata)}; its source is unknown",
            )
        )
        return ""
    return sources[key]
