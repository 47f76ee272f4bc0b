"""Atomic file output: every file cxrlab writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic. On any
    exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give it the mode a new file gets under the umask, so
    # colleagues on a shared server can read results.
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def file_sha1(path: str | os.PathLike) -> str:
    """sha1 of a file's bytes, read in 16 MiB chunks (no memory mapping)."""
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_inside(target: str | os.PathLike, folder: str | os.PathLike, option: str) -> None:
    """Raise DataError when ``target`` is ``folder`` or lies inside it.

    The one check behind "cxrlab never writes into a dataset": run directories, split manifests,
    prediction CSVs and CAM folders are refused inside an input dataset folder.

    Args:
        target: The output path (need not exist).
        folder: An input folder (a file, or a path that does not exist, refuses nothing).
        option: How the user named ``target`` (e.g. ``"--out"``), for the message.
    """
    from cxrlab.errors import DataError

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return
    resolved, root = Path(target).expanduser().resolve(), folder.resolve()
    if resolved == root or root in resolved.parents:
        raise DataError(
            f"{option} {target} lies inside the input folder {folder}; cxrlab never writes into "
            "a dataset folder. Choose a location outside it."
        )


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON atomically and return the path.

    Strict: ``NaN`` and infinities (which ``JSON.parse``, ``jq`` and many readers reject) are
    written as ``null``; producers that know why a value is undefined write the reason beside it.
    numpy scalars and arrays, tuples and paths are converted.
    """
    text = json.dumps(_strict(obj), indent=2, sort_keys=False, allow_nan=False)
    return write_text(path, text + "\n")


def write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically; the format follows ``path``'s suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


def _strict(obj: Any) -> Any:
    """A copy of ``obj`` made of JSON types, with non-finite floats replaced by None."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {_key(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _key(key: Any) -> str:
    import numpy as np

    if isinstance(key, str):
        return key
    if isinstance(key, (bool, int, float, np.integer, np.floating, Path)) or key is None:
        return json.dumps(_strict(key)) if not isinstance(key, Path) else str(key)
    raise TypeError(f"JSON object keys must be str or numbers, got {type(key).__name__}")
