"""The synthetic generator: layout, metadata, determinism, shortcut placement, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab.data.classes import CANONICAL_CLASSES
from cxrlab.data.synth import (
    DATASET_DIRNAME,
    MARKER_NAME,
    class_sources,
    draw_radiograph,
    shortcut_border_value,
    synthesize,
)
from cxrlab.errors import ConfigError, DataError


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


def test_layout_and_metadata(synth_dataset):
    assert synth_dataset.name == DATASET_DIRNAME
    assert (synth_dataset / MARKER_NAME).is_file()
    for k, cls in enumerate(CANONICAL_CLASSES):
        images = sorted(p.name for p in (synth_dataset / cls / "images").iterdir())
        masks = sorted(p.name for p in (synth_dataset / cls / "masks").iterdir())
        assert images == sorted(f"{cls}-{i}.png" for i in range(1, 7))
        assert masks == images
        img = _read(synth_dataset / cls / "images" / f"{cls}-1.png")
        mask = _read(synth_dataset / cls / "masks" / f"{cls}-1.png")
        assert img.shape == mask.shape == (64, 64)
        assert set(np.unique(mask)) == {0, 255}
        # Lungs cover a plausible share of the image, and are darker than the body around them.
        assert 0.1 < (mask > 0).mean() < 0.5
        meta = pd.read_excel(synth_dataset / f"{cls}.metadata.xlsx")
        assert list(meta.columns) == ["FILE NAME", "FORMAT", "SIZE", "URL"]
        assert list(meta["FILE NAME"]) == [f"{cls}-{i}" for i in range(1, 7)]
        assert set(meta["FORMAT"]) == {"PNG"} and set(meta["SIZE"]) == {"64*64"}
        # Sources follow SOURCE_PATTERN (a, b, a, c, a, b, ...), distinct between classes.
        a, b, c = class_sources(k)[:3]
        assert list(meta["URL"]) == [a, b, a, c, a, b]
    all_sources = [s for k in range(4) for s in class_sources(k)]
    assert len(set(all_sources)) == 20
    assert class_sources(0)[0] == "https://synthetic.example/hospital-a"


def test_same_seed_is_byte_identical_and_prefix_stable(tmp_path):
    a = synthesize(tmp_path / "a", per_class=3, size=48, seed=7)
    b = synthesize(tmp_path / "b", per_class=3, size=48, seed=7)
    c = synthesize(tmp_path / "c", per_class=3, size=48, seed=8)
    d = synthesize(tmp_path / "d", per_class=4, size=48, seed=7)
    fa, fb, fc, fd = _files(a), _files(b), _files(c), _files(d)
    assert fa == fb  # .xlsx included: fixed zip/document timestamps
    png = "COVID/images/COVID-1.png"
    assert fa[png] != fc[png]
    # A larger dataset extends the smaller one: image i does not depend on per_class.
    assert all(fd[k] == v for k, v in fa.items() if k.endswith(".png"))


@pytest.mark.parametrize("signal", ["COVID", "Lung_Opacity", "Viral Pneumonia"])
def test_class_signal_is_inside_the_lungs_only(signal):
    """Same generator state, different class: the images differ only inside the lung mask."""
    for seed in range(4):
        sick, mask = draw_radiograph(np.random.default_rng(seed), size=96, signal=signal)
        normal, mask2 = draw_radiograph(np.random.default_rng(seed), size=96, signal="Normal")
        np.testing.assert_array_equal(mask, mask2)
        lung = mask > 0
        np.testing.assert_array_equal(sick[~lung], normal[~lung])
        diff = sick.astype(float) - normal.astype(float)
        assert diff[lung].min() >= 0  # every signal adds density
        assert diff[lung].mean() > 3 and diff[lung].max() > 25
        # Texture vs patches: the viral reticulation changes from pixel to pixel, the
        # ground-glass and lobar patches are smooth (mean |d/dx| relative to the mean change).
        pairs = lung[:, 1:] & lung[:, :-1]
        texture = np.abs(np.diff(diff, axis=1))[pairs].mean() / diff[lung].mean()
        assert texture > 0.5 if signal == "Viral Pneumonia" else texture < 0.45


def test_shortcut_is_outside_lungs_and_class_dependent(synth_dataset, synth_shortcut_dataset):
    for k, cls in enumerate(CANONICAL_CLASSES):
        for i in (1, 4):
            plain = _read(synth_dataset / cls / "images" / f"{cls}-{i}.png")
            short = _read(synth_shortcut_dataset / cls / "images" / f"{cls}-{i}.png")
            lung = _read(synth_dataset / cls / "masks" / f"{cls}-{i}.png") > 0
            np.testing.assert_array_equal(plain[lung], short[lung])
            assert not np.array_equal(plain, short)
            # Border band: constant, class-dependent value (64 px -> band of 2 px).
            assert short[0, 10] == short[-1, 30] == short[30, 0] == shortcut_border_value(k)
            # Corner marker: saturated square in the class's corner only.
            corners = {
                "top-left": short[5, 5],
                "top-right": short[5, -6],
                "bottom-left": short[-6, 5],
                "bottom-right": short[-6, -6],
            }
            expected = ("top-left", "top-right", "bottom-left", "bottom-right")[k]
            assert corners[expected] == 255
            assert all(v < 255 for name, v in corners.items() if name != expected)


def test_refuses_non_empty_out_and_only_replaces_own_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        synthesize(tmp_path, per_class=1, size=32)
    root = synthesize(tmp_path, per_class=1, size=32, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    root2 = synthesize(tmp_path, per_class=2, size=32, overwrite=True)
    assert root2 == root and len(list((root / "COVID" / "images").iterdir())) == 2
    # No staging folders left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [DATASET_DIRNAME, "notes.txt"]
    # A dataset folder that synth did not write is never replaced.
    other = tmp_path / "other"
    (other / DATASET_DIRNAME / "COVID").mkdir(parents=True)
    with pytest.raises(DataError, match="not written by cxrlab synth"):
        synthesize(other, per_class=1, size=32, overwrite=True)
    assert (other / DATASET_DIRNAME / "COVID").is_dir()


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="per_class"):
        synthesize(tmp_path / "a", per_class=0)
    with pytest.raises(ConfigError, match="size"):
        synthesize(tmp_path / "a", per_class=1, size=8)
    with pytest.raises(ConfigError, match="Did you mean"):
        synthesize(tmp_path / "a", per_class=1, classes=["COVID", "Lung_Opacty", "Pneumothorax"])
    root = synthesize(tmp_path / "b", per_class=1, size=32, classes=["covid", "normal"])
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["covid", "normal"]
