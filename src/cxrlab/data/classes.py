"""Class names of the COVID-19 Radiography Database and matching of folder names to them."""

from __future__ import annotations

import re

#: The database's classes in the seed's output order.
CANONICAL_CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def _key(name: str) -> str:
    key = re.sub(r"[\s_\-]+", "", name.strip().lower())
    return key[:-1] if key.endswith("s") and len(key) > 1 else key


_CANONICAL_BY_KEY = {_key(c): c for c in CANONICAL_CLASSES}


def canonical_class(folder_name: str) -> str:
    """Map a class folder name to its canonical spelling.

    Matching ignores case, spaces vs underscores vs hyphens and one trailing ``s``
    (``covid``, ``Lung Opacity``, ``viral_pneumonias`` all match). Names that match no canonical
    class are returned unchanged: they become classes of their own.
    """
    return _CANONICAL_BY_KEY.get(_key(folder_name), folder_name.strip())


def order_classes(names) -> list[str]:
    """Order class names: canonical ones in the seed's order first, then the others sorted."""
    names = set(names)
    canonical = [c for c in CANONICAL_CLASSES if c in names]
    return canonical + sorted(names - set(canonical))
