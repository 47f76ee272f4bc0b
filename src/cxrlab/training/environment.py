"""``environment.json``: versions, hardware and commit behind a run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

import cxrlab


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    src = Path(cxrlab.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def collect_environment(seed: int) -> dict:
    """Facts that let a reader reproduce or qualify a run."""
    cuda = torch.cuda.is_available()
    return {
        "cxrlab": cxrlab.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            name: _version(name)
            for name in ("torch", "torchvision", "timm", "lightning", "numpy", "scikit-learn")
        },
        "cuda": torch.version.cuda if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "cpu_count": os.cpu_count(),
        "seed": seed,
        "command": sys.argv,
    }
