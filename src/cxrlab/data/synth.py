"""Synthetic chest radiographs in the COVID-19 Radiography Database's folder layout.

:func:`synthesize` draws procedural, chest-like 8-bit grayscale images (dark background, body
outline, ribs, bright spine/mediastinum and heart, two darker lung fields) with the class signal
*inside* the lungs only:

=================  ==========================================================================
class              signal inside the lung fields
=================  ==========================================================================
COVID              3-6 peripheral, bilateral, soft ground-glass patches in the lower zones
Lung_Opacity       one dense, sharp-edged lobar patch in one lung
Normal             none (only the faint vascular texture every class has)
Viral Pneumonia    diffuse interstitial reticular texture, strongest perihilar
=================  ==========================================================================

The signal is confined to the binary lung mask: it is drawn from its own random stream, so for
the same generator state two classes give pixel-identical images outside the mask (tested). Every
image gets random jitter of rotation, position, size, build, lung darkness, uneven exposure,
brightness, contrast, gamma, blur and noise, so the classes are not separable by global image
statistics (a logistic regression on mean, sd and gradient energy scores about chance, 0.26-0.28
for 4 classes) while a 4-layer CNN reaches about 0.9 test accuracy after 12 epochs on 440 images
at 64 px (about 2 CPU minutes on 2 busy cores).

``shortcut=True`` plants a deliberate, class-correlated artefact *outside* the lungs, the kind of
confound a source-specific scanner or burnt-in label creates: a saturated (255) square marker in
one corner whose corner depends on the class (class index 0: top-left, 1: top-right,
2: bottom-left, 3: bottom-right, then repeating) and a constant-intensity band along the whole
image border whose value depends on the class (``40 + 50 * (index % 4)``). Pixels inside the lung
masks are identical with and without the shortcut for the same seed, so a lung-restricted
explanation or a mask-occlusion probe can tell the two datasets' models apart.

Layout written (the current release's)::

    OUT/COVID-19_Radiography_Dataset/
        README.synthetic.txt             how it was generated (marks the folder as synthetic)
        <Class>.metadata.xlsx            FILE NAME, FORMAT, SIZE, URL (the image's source)
        <Class>/images/<Class>-<i>.png   i = 1..per_class
        <Class>/masks/<Class>-<i>.png    binary lung mask, 0/255, same size as the image

Each class has up to five fake sources (``https://synthetic.example/hospital-<letter>``, distinct
per class, of unequal sizes, see :data:`SOURCE_PATTERN`) so source-held-out splits have something
to hold out.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from cxrlab.data.classes import CANONICAL_CLASSES, canonical_class
from cxrlab.errors import ConfigError, DataError, suggest
from cxrlab.io import write_bytes, write_text

logger = logging.getLogger(__name__)

#: Name of the dataset folder inside ``OUT`` (as in the Kaggle release).
DATASET_DIRNAME = "COVID-19_Radiography_Dataset"
#: Marker file that identifies a folder written by :func:`synthesize`.
MARKER_NAME = "README.synthetic.txt"
#: Number of fake sources per class.
SOURCES_PER_CLASS = 5
#: Which of its class's sources image ``i`` (0-based) comes from: ``SOURCE_PATTERN[i % 10]``.
#: Per 10 images the sources hold 4, 3, 1, 1, 1 images (unequal, like real collections); the
#: first six images already use three sources.
SOURCE_PATTERN = (0, 1, 0, 2, 0, 1, 3, 0, 4, 1)

_SIGNALS = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def synthesize(
    out: str | os.PathLike,
    *,
    per_class: int,
    size: int = 128,
    seed: int = 0,
    shortcut: bool = False,
    classes: Sequence[str] = CANONICAL_CLASSES,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset in the current release's layout and return its folder.

    Args:
        out: Parent folder; the dataset is written to ``out/COVID-19_Radiography_Dataset``. It
            must be absent or empty unless ``overwrite`` is set.
        per_class: Images per class (>= 1).
        size: Side of the square images in pixels (>= 32).
        seed: Seed of the ``np.random.default_rng`` that draws everything. The same seed (and
            options) gives byte-identical files; image ``i`` of a class does not depend on
            ``per_class``, so a larger dataset extends a smaller one.
        shortcut: Plant the class-correlated corner marker and border band described in the
            module docstring (outside the lungs only).
        classes: Class folder names; each must match one of the four database classes (via
            :func:`~cxrlab.data.classes.canonical_class`), which picks its signal.
        overwrite: Replace an existing ``out/COVID-19_Radiography_Dataset`` previously written by
            this function (identified by its ``README.synthetic.txt``); anything else in ``out``
            is left alone. A folder without the marker is never deleted.

    Returns:
        The dataset folder ``out/COVID-19_Radiography_Dataset`` (the folder holding the class
        sub-folders; :func:`~cxrlab.data.scan.scan_dataset` accepts it or ``out``).

    Raises:
        ConfigError: ``per_class``, ``size`` or ``classes`` is invalid.
        DataError: ``out`` is not empty (without ``overwrite``) or is not a directory.
    """
    if per_class < 1:
        raise ConfigError(f"per_class must be at least 1, got {per_class}.")
    if size < 32:
        raise ConfigError(f"size must be at least 32 pixels, got {size}.")
    signals = _resolve_signals(classes)
    out = Path(out).expanduser().resolve()
    dataset = out / DATASET_DIRNAME
    _check_out(out, dataset, overwrite=overwrite)

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DATASET_DIRNAME}.", suffix=".tmp", dir=out))
    try:
        root_rng = np.random.default_rng(seed)
        class_rngs = root_rng.spawn(len(classes))
        for k, (name, signal, class_rng) in enumerate(
            zip(classes, signals, class_rngs, strict=True)
        ):
            image_rngs = class_rng.spawn(per_class)
            stems = [f"{name}-{i + 1}" for i in range(per_class)]
            for stem, rng in zip(stems, image_rngs, strict=True):
                image, mask = draw_radiograph(
                    rng, size=size, signal=signal, shortcut_index=k if shortcut else None
                )
                write_bytes(staging / name / "images" / f"{stem}.png", _png_bytes(image))
                write_bytes(staging / name / "masks" / f"{stem}.png", _png_bytes(mask))
            sources = class_sources(k)
            meta = pd.DataFrame(
                {
                    "FILE NAME": stems,
                    "FORMAT": "PNG",
                    "SIZE": f"{size}*{size}",
                    "URL": [sources[SOURCE_PATTERN[i % 10]] for i in range(per_class)],
                }
            )
            write_bytes(staging / f"{name}.metadata.xlsx", _xlsx_bytes(meta, sheet=name))
        write_text(
            staging / MARKER_NAME,
            "Synthetic chest radiographs written by cxrlab.data.synth.synthesize "
            "(not real patients).\n"
            f"per_class={per_class} size={size} seed={seed} shortcut={shortcut}\n"
            f"classes={list(classes)}\n",
        )
        if dataset.exists():
            shutil.rmtree(dataset)
        os.replace(staging, dataset)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "Wrote %d synthetic images (%d classes x %d, %d px%s) to %s",
        per_class * len(classes),
        len(classes),
        per_class,
        size,
        ", with planted shortcut" if shortcut else "",
        dataset,
    )
    return dataset


def class_sources(class_index: int) -> list[str]:
    """The fake source URLs of the class at ``class_index`` (distinct between classes)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for j in range(SOURCES_PER_CLASS):
        n = class_index * SOURCES_PER_CLASS + j
        tag = letters[n % 26] + (str(n // 26) if n >= 26 else "")
        out.append(f"https://synthetic.example/hospital-{tag}")
    return out


def shortcut_corner(class_index: int) -> str:
    """Where the shortcut marker of class ``class_index`` sits: 'top-left', 'top-right', ..."""
    return ("top-left", "top-right", "bottom-left", "bottom-right")[class_index % 4]


def shortcut_border_value(class_index: int) -> int:
    """Intensity of the shortcut border band of class ``class_index``."""
    return 40 + 50 * (class_index % 4)


def draw_radiograph(
    rng: np.random.Generator,
    *,
    size: int,
    signal: str,
    shortcut_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic chest radiograph and its lung mask.

    Args:
        rng: The generator all randomness is drawn from (the shortcut uses none of it). Two
            child streams are spawned from it: one for anatomy and acquisition, one for the
            class signal, so drawing with equal generators and different ``signal`` gives the
            same image outside the lungs.
        size: Side in pixels.
        signal: One of ``"COVID"``, ``"Lung_Opacity"``, ``"Normal"``, ``"Viral Pneumonia"``.
        shortcut_index: Class index whose shortcut artefact to plant, or ``None``.

    Returns:
        ``(image, mask)``: (size, size) uint8 each; the mask is 0 outside and 255 inside the
        lung fields.
    """
    if signal not in _SIGNALS:
        raise ConfigError(f"Unknown synthetic signal {signal!r}; expected one of {_SIGNALS}.")
    gy, gx = _grid(size)
    px = size / 2.0  # pixels per unit of the [-1, 1] grid
    # Anatomy/acquisition and the class signal draw from separate streams, so the same ``rng``
    # state gives the same patient and exposure whatever the class: only the lungs differ.
    rng, signal_rng = rng.spawn(2)

    # Global placement jitter: patient rotation, shift, scale, build.
    theta = np.deg2rad(rng.normal(0.0, 3.0))
    xx = np.cos(theta) * gx + np.sin(theta) * gy
    yy = -np.sin(theta) * gx + np.cos(theta) * gy
    dx, dy = rng.normal(0.0, 0.04, size=2)
    s = rng.uniform(0.88, 1.06)
    bg = rng.uniform(0.0, 0.08)
    body_level = rng.uniform(0.36, 0.5)

    body = _soft_ellipse(
        xx, yy, dx, 0.12 + dy, 0.84 * s * rng.uniform(0.9, 1.1), 1.08 * s, edge=0.04
    )
    img = bg + (body_level - bg) * body

    # Ribs: curved bands, sloping down laterally, across the thorax outside the spine.
    rib_freq = rng.uniform(4.2, 5.2)
    rib_phase = rng.uniform(0.0, 1.0)
    lateral = np.abs(xx - dx)
    rib_wave = np.cos(2 * np.pi * (rib_freq * (yy - 0.45 * lateral**2) / s + rib_phase))
    ribs = np.clip((rib_wave - 0.45) / 0.55, 0.0, 1.0) * (lateral > 0.1 * s) * body
    img += rng.uniform(0.05, 0.09) * ribs

    # Lung fields (darker) and the mask.
    lungs = np.zeros_like(xx)
    lung_centres = []
    for side in (-1.0, 1.0):
        cx = dx + side * (0.37 * s + rng.normal(0.0, 0.015))
        cy = dy - 0.05 + rng.normal(0.0, 0.02)
        ax = 0.25 * s * rng.uniform(0.9, 1.1)
        ay = 0.5 * s * rng.uniform(0.9, 1.08)
        lung_centres.append((cx, cy, ax, ay))
        lungs = np.maximum(lungs, _soft_ellipse(xx, yy, cx, cy, ax, ay, edge=0.03))
    heart = _soft_ellipse(
        xx, yy, dx + 0.13 * s, dy + 0.27 * s, 0.23 * s * rng.uniform(0.9, 1.1), 0.2 * s, edge=0.03
    )
    lungs = lungs * (1.0 - heart)
    # Lungs are darkest mid-field and brighten towards the bases (diaphragm domes).
    base_shade = np.clip((yy - dy - 0.1) / 0.5, 0.0, 1.0) * 0.35
    img -= rng.uniform(0.17, 0.27) * lungs * (1.0 - base_shade)

    # Faint vascular texture in every class (so "any texture" is not the viral signal).
    vessels = _bandpass(rng, size, fine=1.2 * px / 64, coarse=3.0 * px / 64)
    img += 0.02 * vessels * lungs

    # Mediastinum, spine and heart: bright.
    spine = _soft_band(xx - dx, 0.08 * s, edge=0.02) * body
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * 7.0 * yy / s)
    img += rng.uniform(0.2, 0.3) * spine * (0.85 + 0.15 * vertebrae)
    img += rng.uniform(0.12, 0.2) * heart

    # Class signal, strictly inside the binary lung mask (0 at its edge, ramping up inside).
    inside = np.clip((lungs - 0.5) * 2.0, 0.0, 1.0)
    lesion = _class_signal(signal_rng, signal, xx, yy, lung_centres, size)

    # Acquisition jitter: uneven exposure (a ramp and a smooth random field), blur, gamma,
    # contrast, brightness, noise. None of it depends on the class.
    ramp = rng.normal(0.0, 0.04) * gx + rng.normal(0.0, 0.04) * gy
    field = _smooth_field(rng, size, cells=5)
    img += ramp + rng.uniform(0.03, 0.07) * field
    blur = rng.uniform(0.3, 0.9) * px / 64
    img = gaussian_filter(img, sigma=blur)
    if signal != "Normal":  # blurred like the anatomy, then confined to the lungs again
        img += gaussian_filter(lesion, sigma=blur) * inside
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    img = img * rng.uniform(0.85, 1.2) + rng.normal(0.0, 0.04)
    img += rng.normal(0.0, rng.uniform(0.01, 0.03), size=img.shape).astype(np.float32)
    image = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    mask = np.where(lungs > 0.5, 255, 0).astype(np.uint8)

    if shortcut_index is not None:
        _plant_shortcut(image, shortcut_index)
        # The artefact is drawn outside the lungs by construction; keep the lungs untouched
        # even for odd sizes where a band could graze a lung edge.
        lung_px = mask > 0
        if np.any(lung_px & _shortcut_region(size, shortcut_index)):
            raise AssertionError("shortcut artefact overlaps the lung mask")  # pragma: no cover
    return image, mask


def _class_signal(rng, signal, xx, yy, lung_centres, size) -> np.ndarray:
    """Additive intensity pattern of ``signal`` (before multiplication by the lung mask)."""
    out = np.zeros_like(xx)
    px = size / 2.0
    if signal == "COVID":
        # Peripheral, bilateral, lower-zone ground glass: soft blobs, mottled.
        n = int(rng.integers(3, 7))
        mottle = 0.75 + 0.25 * _bandpass(rng, size, fine=1.5 * px / 64, coarse=4.0 * px / 64)
        for j in range(n):
            side = j % 2  # alternate lungs: always bilateral
            cx, cy, ax, ay = lung_centres[side]
            outward = -1.0 if side == 0 else 1.0
            bx = cx + outward * ax * rng.uniform(0.45, 0.85)
            by = cy + ay * rng.uniform(-0.15, 0.65)
            sigma = rng.uniform(0.07, 0.12)
            amp = rng.uniform(0.12, 0.2)
            out += amp * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sigma**2))
        out *= mottle
    elif signal == "Lung_Opacity":
        # One dense lobar consolidation with a fairly sharp edge.
        side = int(rng.integers(0, 2))
        cx, cy, ax, ay = lung_centres[side]
        bx = cx + ax * rng.uniform(-0.35, 0.35)
        by = cy + ay * rng.uniform(-0.45, 0.4)
        rx = ax * rng.uniform(0.55, 0.85)
        ry = ay * rng.uniform(0.35, 0.55)
        patch = _soft_ellipse(xx, yy, bx, by, rx, ry, edge=0.05)
        out += rng.uniform(0.26, 0.38) * patch
    elif signal == "Viral Pneumonia":
        # Diffuse interstitial reticulation, strongest perihilar, in both lungs.
        net = np.abs(_bandpass(rng, size, fine=1.1 * px / 64, coarse=2.6 * px / 64))
        net = np.clip((net - 0.6) / 1.2, 0.0, 1.0)
        hilum = np.zeros_like(xx)
        for cx, cy, ax, _ay in lung_centres:
            hx = cx + (0.35 * ax if cx < 0 else -0.35 * ax)
            hilum = np.maximum(hilum, np.exp(-((xx - hx) ** 2 / 0.08 + (yy - cy) ** 2 / 0.2)))
        out += rng.uniform(0.12, 0.2) * net * (0.45 + 0.55 * hilum)
    return out


def _plant_shortcut(image: np.ndarray, class_index: int) -> None:
    """Draw the class's corner marker and border band into ``image`` in place."""
    region_band, region_marker = _shortcut_masks(image.shape[0], class_index)
    image[region_band] = shortcut_border_value(class_index)
    image[region_marker] = 255


def _shortcut_region(size: int, class_index: int) -> np.ndarray:
    band, marker = _shortcut_masks(size, class_index)
    return band | marker


@lru_cache(maxsize=64)
def _shortcut_masks(size: int, class_index: int) -> tuple[np.ndarray, np.ndarray]:
    band_w = max(2, round(0.025 * size))
    side = max(3, round(0.07 * size))
    margin = max(1, round(0.035 * size))
    band = np.zeros((size, size), dtype=bool)
    band[:band_w, :] = band[-band_w:, :] = True
    band[:, :band_w] = band[:, -band_w:] = True
    marker = np.zeros((size, size), dtype=bool)
    corner = shortcut_corner(class_index)
    r0 = margin + band_w if corner.startswith("top") else size - margin - band_w - side
    c0 = margin + band_w if corner.endswith("left") else size - margin - band_w - side
    marker[r0 : r0 + side, c0 : c0 + side] = True
    band.setflags(write=False)
    marker.setflags(write=False)
    return band, marker


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) float32 pixel-centre coordinates in [-1, 1], read-only."""
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _soft_ellipse(xx, yy, cx, cy, ax, ay, *, edge: float) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a logistic edge ``edge`` grid units wide."""
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    return (1.0 / (1.0 + np.exp((r - 1.0) * min(ax, ay) / edge))).astype(np.float32)


def _soft_band(offset, half_width: float, *, edge: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp((np.abs(offset) - half_width) / edge))).astype(np.float32)


def _bandpass(rng, size: int, *, fine: float, coarse: float) -> np.ndarray:
    """Band-passed white noise (difference of Gaussians), scaled to unit standard deviation."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    band = gaussian_filter(noise, fine) - gaussian_filter(noise, coarse)
    std = float(band.std())
    return band / std if std > 0 else band


def _smooth_field(rng, size: int, *, cells: int) -> np.ndarray:
    """Smooth random field: a ``cells`` x ``cells`` Gaussian grid upsampled bicubically, unit sd."""
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    field = np.asarray(
        Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    std = float(field.std())
    return field / std if std > 0 else field


def _resolve_signals(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str) or len(classes) == 0:
        raise ConfigError(f"classes must be a non-empty list of class names, got {classes!r}.")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes must be distinct, got {list(classes)}.")
    signals = []
    for name in classes:
        if not name or re.search(r"[\\/]", name) or name.startswith("."):
            raise ConfigError(f"Class name {name!r} cannot be used as a folder name.")
        canon = canonical_class(name)
        if canon not in _SIGNALS:
            raise ConfigError(
                f"The synthetic generator has no signal for class {name!r}: each class must be one "
                f"of {list(_SIGNALS)} (case, spaces/underscores and a trailing 's' are ignored)."
                + suggest(name, _SIGNALS)
            )
        signals.append(canon)
    return signals


def _check_out(out: Path, dataset: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory; pass a folder path for the dataset.")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise DataError(
            f"{out} is not empty; the synthetic dataset needs an empty or new folder. Choose "
            "another path, or pass overwrite=True (--overwrite) to replace a dataset previously "
            "written there by cxrlab synth."
        )
    if dataset.exists() and not (dataset / MARKER_NAME).is_file():
        raise DataError(
            f"{dataset} exists but was not written by cxrlab synth (no {MARKER_NAME}); refusing to "
            "replace it even with overwrite. Choose another output folder."
        )


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


_FIXED_TIME = "2020-01-01T00:00:00Z"


def _xlsx_bytes(frame: pd.DataFrame, *, sheet: str) -> bytes:
    """An .xlsx of ``frame`` whose bytes depend only on its content (fixed zip and doc times)."""
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as writer:
        frame.to_excel(writer, index=False, sheet_name=sheet[:31])
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "docProps/core.xml":
                text = data.decode("utf-8")
                text = re.sub(
                    r"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)",
                    rf"\g<1>{_FIXED_TIME}\g<2>",
                    text,
                )
                data = text.encode("utf-8")
            info = zipfile.ZipInfo(item.filename, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, data)
    return out.getvalue()
