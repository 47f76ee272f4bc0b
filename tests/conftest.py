"""Shared fixtures: tiny synthetic datasets in the real folder layouts, and the real-data subset.

* ``synth_dataset`` (session): 4 classes x 6 images, 64 px, with masks and metadata (3 sources per
  class), written once by :func:`cxrlab.data.synth.synthesize`; the path is the
  ``COVID-19_Radiography_Dataset`` folder. Read-only by convention: copy it before modifying.
* ``synth_shortcut_dataset`` (session): the same with the planted class-correlated shortcut.
* ``tiny_layout`` (function): a factory writing a few random-noise PNGs in a chosen layout, for
  tests of folder handling where image content does not matter.
* ``rdb_mini`` (session): the real-data subset ``../shared/data/rdb-mini``, or a skip.
* ``write_dicom`` (session): ``write_dicom(path, pixels, photometric="MONOCHROME2")`` writes a
  12-bit DX DICOM file (``pixels=None``: a file without pixel data).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab.data.synth import synthesize

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
RDB_MINI = SHARED_DATA / "rdb-mini"


@pytest.fixture(autouse=True)
def _release_captured_warnings():
    """Undo the CLI's ``logging.captureWarnings(True)`` after each test.

    It replaces ``warnings.showwarning`` once per process; under pytest, whose per-test recorder
    swaps ``showwarning`` too, a later test's CLI call would otherwise leave its warnings with an
    earlier test's recorder instead of the log.
    """
    yield
    logging.captureWarnings(False)


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A 4-class x 6-image, 64 px synthetic dataset with masks and metadata (do not modify)."""
    return synthesize(tmp_path_factory.mktemp("synth"), per_class=6, size=64, seed=0)


@pytest.fixture(scope="session")
def synth_shortcut_dataset(tmp_path_factory) -> Path:
    """Like ``synth_dataset`` (same seed, so identical lungs) with the planted shortcut."""
    return synthesize(
        tmp_path_factory.mktemp("synth_shortcut"), per_class=6, size=64, seed=0, shortcut=True
    )


@pytest.fixture(scope="session")
def rdb_mini() -> Path:
    """The real-data subset's dataset folder; skips when ``../shared/data`` is absent."""
    root = RDB_MINI / "COVID-19_Radiography_Dataset"
    if not root.is_dir():
        pytest.skip(f"real-data subset not found at {root}")
    return root


def _write_dicom(path: Path, pixels: np.ndarray | None, photometric: str = "MONOCHROME2") -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, 12, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def write_dicom():
    """``write_dicom(path, pixels, photometric="MONOCHROME2") -> path`` (see the module doc)."""
    return _write_dicom


TinyLayout = Callable[..., Path]


@pytest.fixture
def tiny_layout(tmp_path) -> TinyLayout:
    """Factory writing a tiny dataset of random-noise PNGs; returns the dataset folder.

    Call as ``tiny_layout({"COVID": 3, "Normal": 2}, layout="current", size=16, masks=True,
    metadata=None, name="COVID-19_Radiography_Dataset")``:

    * ``layout="current"``: ``<Class>/images/<Class>-<i>.png`` (+ ``<Class>/masks/`` if ``masks``);
      ``layout="flat"``: ``<Class>/<Class>-<i>.png`` (older release, no masks).
    * ``metadata``: ``{class: [url, ...]}`` writes ``<Class>.metadata.xlsx`` with one URL per
      image (cycled).
    * Every image is distinct (seeded noise); ``i`` starts at 1 like the real release.
    """
    counter = {"n": 0}

    def make(
        spec: Mapping[str, int] | None = None,
        *,
        layout: str = "current",
        size: int = 16,
        masks: bool = True,
        metadata: Mapping[str, list[str]] | None = None,
        name: str = "COVID-19_Radiography_Dataset",
        seed: int = 0,
    ) -> Path:
        spec = dict(spec or {"COVID": 3, "Normal": 3})
        counter["n"] += 1
        root = tmp_path / f"layout{counter['n']}" / name
        rng = np.random.default_rng(seed)
        for cls, n in spec.items():
            image_dir = root / cls / "images" if layout == "current" else root / cls
            image_dir.mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                arr = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
                Image.fromarray(arr, mode="L").save(image_dir / f"{cls}-{i}.png")
                if masks and layout == "current":
                    (root / cls / "masks").mkdir(exist_ok=True)
                    mask = np.zeros((size, size), dtype=np.uint8)
                    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
                    Image.fromarray(mask, mode="L").save(root / cls / "masks" / f"{cls}-{i}.png")
            if metadata and cls in metadata:
                urls = metadata[cls]
                frame = pd.DataFrame(
                    {
                        "FILE NAME": [f"{cls}-{i}" for i in range(1, n + 1)],
                        "FORMAT": "PNG",
                        "SIZE": f"{size}*{size}",
                        "URL": [urls[(i - 1) % len(urls)] for i in range(1, n + 1)],
                    }
                )
                frame.to_excel(root / f"{cls}.metadata.xlsx", index=False)
        return root

    return make


def _informative_model(name: str, classes, size: int, *, in_chans: int = 1, seed: int = 0):
    """A randomly initialised classifier whose outputs vary with the input, in eval mode.

    Fresh batch-norm statistics (mean 0, var 1) make a random network's probabilities nearly
    constant (~1e-5 apart), too flat for a test to tell images apart; re-estimating them on a
    calibration batch spreads the probabilities over tenths.
    """
    import torch

    from cxrlab.models import create_classifier

    with torch.random.fork_rng():  # leave the global RNG as it was
        torch.manual_seed(seed)
        model = create_classifier(name, classes, image_size=size, in_chans=in_chans)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    gen = torch.Generator().manual_seed(seed + 1)
    calib = torch.rand(16, in_chans, size, size, generator=gen)
    calib = calib * torch.linspace(0.2, 1.0, 16)[:, None, None, None]
    model.train()
    with torch.no_grad():
        model(calib)
    return model.eval()


@pytest.fixture(scope="session")
def seed_cnn_3class():
    """An informative 3-class (COVID, Normal, Viral Pneumonia) seed CNN at 32 px, in eval mode."""
    return _informative_model("seed-cnn", SEED_CNN_3CLASS, 32)


#: The classes of ``seed_cnn_3class``, in output order.
SEED_CNN_3CLASS = ("COVID", "Normal", "Viral Pneumonia")


def run_cxrlab(*args, timeout: float = 300, columns: int = 160) -> subprocess.CompletedProcess:
    """``python -m cxrlab ARGS`` in a subprocess, against this checkout and the installed Typer."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "cxrlab", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


@pytest.fixture(scope="session")
def cxrlab_cli():
    """:func:`run_cxrlab`: the CLI as users meet it, in a subprocess."""
    return run_cxrlab


@pytest.fixture(scope="session")
def informative_model():
    """Factory ``informative_model(name, classes, size, *, in_chans=1, seed=0)`` of random
    classifiers whose probabilities differ between images (see :func:`_informative_model`)."""
    return _informative_model
