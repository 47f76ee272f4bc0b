"""Scan cache: each file's probe (sha1, size, mode, decodability, phash) by path, size, mtime.

A scan of an unchanged dataset re-reads nothing: :func:`cxrlab.data.scan.scan_dataset` asks
:class:`ProbeCache` first and probes only the files whose path, byte size or modification time
(nanoseconds) differ from the recorded ones, or whose entry lacks something asked for (a scan
with ``near_duplicates`` needs the phash a header-only scan did not compute). The cache is one
JSON file per dataset folder under ``<cache dir>/scan/`` (the decode cache's folder:
:func:`cxrlab.data.cache.default_cache_dir` or ``--cache-dir``), written atomically after each
scan that probed something, so concurrent scans (the cells of a study) never see a half-written
file; the last writer wins, and every entry it holds is valid on its own.

Why size and mtime, not the content hash: hashing is what the cache saves. A tool that rewrites a
file keeps its size only rarely and its mtime never (unless it restores it on purpose); a file
replaced that way is not detected, which is the same trade-off ``make`` and ``rsync`` make.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict
from pathlib import Path

from cxrlab.data.probe import FileProbe

logger = logging.getLogger(__name__)

#: Bump when what a probe records (or how) changes, so old caches are ignored.
SCAN_CACHE_VERSION = 1


def scan_cache_file(dataset: str | os.PathLike, cache_dir: str | os.PathLike | None) -> Path:
    """Where the scan cache of ``dataset`` lives: ``<cache_dir>/scan/<sha1 of its path>.json``."""
    from cxrlab.data.cache import default_cache_dir

    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha1(str(Path(dataset).resolve()).encode()).hexdigest()[:20]
    return base / "scan" / f"{digest}.json"


class ProbeCache:
    """Probes of one dataset's files, reused while a file's size and mtime are unchanged.

    Attributes:
        path: The cache file (None: a disabled cache that remembers nothing).
        hits: Probes answered from the cache by this scan.
        misses: Files probed (read) by this scan.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, dict] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text())
                if saved.get("version") == SCAN_CACHE_VERSION:
                    self._entries = dict(saved.get("files", {}))
            except (OSError, ValueError, AttributeError) as exc:
                logger.warning("Ignoring the unreadable scan cache %s (%s)", path, exc)

    def probe(self, path: Path, probe_fn, *, want_sha1: bool, decode: bool, want_phash: bool):
        """``probe_fn(path)`` unless a matching entry answers it; returns a :class:`FileProbe`."""
        try:
            st = path.stat()
        except OSError:
            return probe_fn(path)  # the probe reports the unreadable file
        key = str(path)
        # Size and mtime are the key; the inode catches a file replaced by a rename within the
        # filesystem's timestamp granularity.
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self._entries.get(key)
        if entry is not None and entry["stamp"] == stamp and _covers(entry, want_sha1, decode,
                                                                      want_phash):  # fmt: skip
            with self._lock:
                self.hits += 1
            return _as_asked(FileProbe(**entry["probe"]), want_sha1, decode or want_phash,
                             want_phash)  # fmt: skip
        result = probe_fn(path)
        record = {
            "stamp": stamp,
            "sha1": want_sha1,
            "decode": decode or want_phash,
            "phash": want_phash,
            "probe": asdict(result),
        }
        with self._lock:
            self.misses += 1
            self._entries[key] = record
            self._dirty = True
        return result

    def save(self) -> Path | None:
        """Write the cache atomically if this scan probed anything; returns the file or None."""
        if self.path is None or not self._dirty:
            return None
        from cxrlab.io import write_json

        try:
            write_json(self.path, {"version": SCAN_CACHE_VERSION, "files": self._entries})
        except OSError as exc:  # a read-only cache folder must not stop a scan
            logger.warning("Could not write the scan cache %s (%s)", self.path, exc)
            return None
        self._dirty = False
        return self.path


def _covers(entry: dict, want_sha1: bool, decode: bool, want_phash: bool) -> bool:
    """The entry computed at least what is asked for (a bad file's verdict is always kept)."""
    if entry["probe"].get("kind") == "unreadable":
        return True
    return (
        (entry["sha1"] or not want_sha1)
        and (entry["decode"] or not (decode or want_phash))
        and (entry["phash"] or not want_phash)
    )


def _as_asked(probe: FileProbe, want_sha1: bool, decode: bool, want_phash: bool) -> FileProbe:
    """What a probe with these options would have found, from an entry that may know more.

    A scan's result never depends on what earlier scans computed: a header-only scan does not
    report a truncation that only decoding finds.
    """
    if not want_sha1:
        probe.sha1 = ""
    if not want_phash:
        probe.phash = ""
    if not decode:
        probe.has_foreground = None
        if probe.kind == "truncated":
            probe.kind, probe.detail = None, ""
    return probe


def open_probe_cache(dataset: Path, cache_dir, enabled: bool = True) -> ProbeCache:
    """The :class:`ProbeCache` of ``dataset`` (a disabled one when ``enabled`` is False)."""
    return ProbeCache(scan_cache_file(dataset, cache_dir) if enabled else None)


__all__ = ["SCAN_CACHE_VERSION", "ProbeCache", "open_probe_cache", "scan_cache_file"]
