"""Exceptions raised at cxrlab's boundaries.

Every message says what was received, what was expected and what to do, so the CLI can print it
as one paragraph instead of a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CxrlabError(Exception):
    """Base class of every error cxrlab raises on purpose (printed by the CLI, no traceback)."""


class DataError(CxrlabError, ValueError):
    """A dataset folder, image file or manifest is missing, empty or malformed."""


class ImageReadError(DataError):
    """One image file could not be decoded.

    Attributes:
        path: The offending file.
        reason: Why it could not be read, in words.
    """

    def __init__(self, path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigError(CxrlabError, ValueError):
    """An option or config file value is invalid."""


class CheckpointError(CxrlabError, ValueError):
    """A checkpoint or run directory is missing, truncated or from an incompatible version."""


class RunDirError(CxrlabError):
    """A run directory is in a state that forbids the requested action."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ' Did you mean ...?' hint for a mistyped ``name``, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
