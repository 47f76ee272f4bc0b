"""Decode-once image cache: every image decoded and resized once, reused by later runs.

The cache is one uint8 array of shape (N, S, S) on disk (a memmap), keyed by the content hashes of
the files (in order), the size and the preprocessing version, so a changed file, a different
subset or another size gives another key. A JSON sidecar records the shape, a checksum of the
array and which files failed to decode. A stale or corrupted cache (missing sidecar, wrong size,
checksum mismatch) is rebuilt with a warning, never used silently; a build that fails (full disk,
interrupted) leaves no half-written cache behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrlab.data.images import decode_many
from cxrlab.errors import CxrlabError
from cxrlab.io import file_sha1, write_json

log = logging.getLogger(__name__)

#: Bump when decoding or resizing changes, so old caches are not reused.
PREPROCESSING_VERSION = "gray-u8-bilinear-stretch-v1"

#: Bump when an enhancement or the lungs crop changes (part of keys with a preprocessing).
PREPROCESS_FORMAT = "preprocess-v1"

ProgressFn = Callable[[int, int], None]


@dataclass
class ImageCache:
    """Decoded images of one file list at one size, in a file on disk.

    Attributes:
        path: The array file: N * S * S bytes, row-major (N, S, S) uint8.
        shape: (N, S, S).
        errors: Row index -> reason, for files that could not be decoded (their rows are zero).
        key: The cache key.
    """

    path: Path
    shape: tuple[int, int, int]
    errors: dict[int, str]
    key: str

    @property
    def images(self) -> np.ndarray:
        """(N, S, S) uint8 read-only memmap, for random access to a few rows."""
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)

    def read(self) -> np.ndarray:
        """(N, S, S) uint8 array read into memory with plain file reads.

        Unlike touching every page of :attr:`images`, this leaves no file-backed pages mapped in
        the process, so peak memory is one copy of the images.
        """
        return np.fromfile(self.path, dtype=np.uint8).reshape(self.shape)

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: rows that decoded."""
        mask = np.ones(self.shape[0], dtype=bool)
        mask[list(self.errors)] = False
        return mask


def default_cache_dir() -> Path:
    """``$CXRLAB_CACHE``, else ``$XDG_CACHE_HOME/cxrlab``, else ``~/.cache/cxrlab``."""
    if env := os.environ.get("CXRLAB_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cxrlab"


def cache_key(hashes: Sequence[str], size: int, preprocess=None) -> str:
    """Key of the cache of these file contents (in order) at ``size`` under ``preprocess``.

    The plain stretch (``preprocess`` None or ``none``) keeps the keys of older caches.
    """
    from cxrlab.data.preprocess import as_config, preprocess_key

    h = hashlib.sha1(f"{PREPROCESSING_VERSION}|{size}|{len(hashes)}".encode())
    if extra := preprocess_key(as_config(preprocess)):
        h.update(f"|{PREPROCESS_FORMAT}|{extra}|".encode())
    for item in hashes:
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()[:20]


def _decode_chunk(args: tuple[str, int, int, int, list[str], dict | None]) -> dict[int, str]:
    """Worker: decode ``paths`` into rows ``start..`` of the memmap at ``array_path``."""
    array_path, n, size, start, paths, preprocess = args
    out = np.memmap(array_path, dtype=np.uint8, mode="r+", shape=(n, size, size))
    view = out[start : start + len(paths)]
    decoded = decode_many(paths, size, workers=1, out=view, preprocess=preprocess)
    out.flush()
    del out
    return {start + offset: reason for offset, reason in decoded.errors.items()}


def _open_existing(
    array_path: Path, meta_path: Path, n: int, size: int, key: str
) -> ImageCache | None:
    """The cache at ``array_path`` if it is complete and intact, else None (with a warning)."""
    if not array_path.exists() and not meta_path.exists():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text())
        expected = n * size * size
        if array_path.stat().st_size != expected:
            problem = f"size {array_path.stat().st_size} bytes, expected {expected}"
        elif file_sha1(array_path) != meta.get("checksum"):
            problem = "checksum mismatch"
        else:
            errors = {int(k): v for k, v in meta.get("errors", {}).items()}
            return ImageCache(array_path, (n, size, size), errors, key)
    except (OSError, ValueError, KeyError) as exc:
        problem = f"unreadable ({exc})"
    warnings.warn(
        f"Image cache {array_path} is stale or corrupted ({problem}); rebuilding it.", stacklevel=3
    )
    for p in (array_path, meta_path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return None


def build_cache(
    paths: Sequence[str | os.PathLike],
    hashes: Sequence[str],
    size: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    preprocess=None,
) -> ImageCache:
    """Return the decoded (N, size, size) uint8 images of ``paths``, building the cache if needed.

    Args:
        paths: Image files, in the order rows should have.
        hashes: Content hash (sha1) of each file; part of the key, so edits invalidate the cache.
        size: Side of the square the images are resized to.
        cache_dir: Where cache files live (default :func:`default_cache_dir`).
        workers: Decoding processes (default: all cores).
        progress: Called as ``progress(done, total)`` while decoding.
        preprocess: The preprocessing (:class:`~cxrlab.config.PreprocessConfig` or its metadata
            dict) applied while decoding; part of the key.

    Raises:
        CxrlabError: The cache cannot be written (e.g. the disk is full); nothing partial remains.
    """
    if len(paths) != len(hashes):
        raise ValueError("paths and hashes differ in length")
    n = len(paths)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    from cxrlab.data.preprocess import as_config, to_metadata

    config = as_config(preprocess)
    pre = None if config is None or config.is_identity() else to_metadata(config)
    key = cache_key(hashes, size, config)
    array_path = cache_dir / f"{key}-{size}px.u8"
    meta_path = array_path.with_suffix(".json")
    cached = _open_existing(array_path, meta_path, n, size, key)
    if cached is not None:
        log.info("Using image cache %s (%d images at %dpx)", array_path, n, size)
        return cached

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = array_path.with_name(f".{array_path.name}.{os.getpid()}.tmp")
    log.info("Decoding %d images at %dpx into %s", n, size, array_path)
    try:
        errors = _decode_all([str(p) for p in paths], tmp_path, n, size, workers, progress, pre)
        checksum = file_sha1(tmp_path)
        os.replace(tmp_path, array_path)
        write_json(
            meta_path,
            {
                "key": key,
                "shape": [n, size, size],
                "dtype": "uint8",
                "preprocessing": PREPROCESSING_VERSION,
                "preprocess": pre,
                "checksum": checksum,
                "errors": {str(k): v for k, v in errors.items()},
            },
        )
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            array_path.unlink()
        if exc.errno == errno.ENOSPC:
            raise CxrlabError(
                f"The disk holding the image cache {cache_dir} is full ({n} images at {size}px "
                f"need {n * size * size / 2**20:.0f} MiB). Free space or point --cache-dir "
                "(or $CXRLAB_CACHE) at a larger disk; no partial cache was kept."
            ) from None
        raise CxrlabError(f"Could not write the image cache in {cache_dir}: {exc}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    for row, reason in errors.items():
        log.warning("Skipping %s: %s", paths[row], reason)
    return ImageCache(array_path, (n, size, size), errors, key)


def _decode_all(paths, tmp_path, n, size, workers, progress, pre=None) -> dict[int, str]:
    # Allocate the whole file first so a full disk fails before any decoding work.
    nbytes = n * size * size
    with open(tmp_path, "wb") as fh:
        if nbytes:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fh.fileno(), 0, nbytes)
            else:
                fh.truncate(nbytes)
    workers = max(1, workers or os.cpu_count() or 1)
    if pre and pre.get("lungs", "none") != "none":
        # The lung segmenter runs torch: forked decode workers of a process that already ran torch
        # (a training before, in `cxrlab ablate`) can inherit its thread-pool locks held and hang,
        # so lungs crop/mask decode in this process (torch uses the cores itself).
        workers = 1
    chunk = max(16, min(512, -(-n // (workers * 8)) if n else 16))
    jobs = [(str(tmp_path), n, size, s, paths[s : s + chunk], pre) for s in range(0, n, chunk)]
    errors: dict[int, str] = {}
    done = 0
    if workers == 1 or n <= chunk:
        for job in jobs:
            errors.update(_decode_chunk(job))
            done += len(job[4])
            if progress:
                progress(done, n)
        return errors
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for job, result in zip(jobs, pool.map(_decode_chunk, jobs), strict=True):
            errors.update(result)
            done += len(job[4])
            if progress:
                progress(done, n)
    return errors
