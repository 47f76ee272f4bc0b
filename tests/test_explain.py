"""Lung attention, regions, example selection and ``explain_run`` / ``cxrlab explain``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlab.errors import ConfigError, DataError, RunDirError
from cxrlab.explain import (
    attention_frame,
    border_frame,
    central_lung_region,
    explain_run,
    load_mask,
    lung_area_fraction,
    lung_attention_ratio,
    pointing_game,
    summarize_attention,
)
from cxrlab.explain.run import select_examples
from cxrlab.models import create_classifier, save_classifier

# ---------------------------------------------------------------------------------------------
# Pure functions, hand-computed


def test_lung_attention_ratio_hand_computed():
    cam = np.array([[1.0, 3.0], [0.0, 4.0]])
    mask = np.array([[True, False], [False, True]])
    assert lung_attention_ratio(cam, mask) == pytest.approx(5.0 / 8.0)
    # A uniform CAM scores the lung-area fraction.
    assert lung_attention_ratio(np.ones((4, 4)), np.eye(4, dtype=bool)) == pytest.approx(0.25)
    assert lung_area_fraction(np.eye(4, dtype=bool)) == pytest.approx(0.25)
    with pytest.warns(UserWarning, match="empty"):
        assert np.isnan(lung_attention_ratio(cam, np.zeros((2, 2), bool)))
    with pytest.warns(UserWarning, match="no positive mass"):
        assert np.isnan(lung_attention_ratio(np.zeros((2, 2)), mask))
    with pytest.raises(ValueError, match="same shape"):
        lung_attention_ratio(np.ones((3, 3)), mask)


def test_pointing_game():
    cam = np.array([[0.1, 0.9], [0.2, 0.3]])
    assert pointing_game(cam, np.array([[False, True], [False, False]])) is True
    assert pointing_game(cam, np.array([[True, False], [True, True]])) is False
    assert pointing_game(np.zeros((2, 2)), np.ones((2, 2), bool)) is False  # points nowhere


def test_border_frame_and_central_region():
    frame = border_frame(10, 0.2)
    assert frame.sum() == 100 - 36  # a 2-px frame around a 6x6 centre
    assert not frame[2:8, 2:8].any()
    region = central_lung_region(100)
    assert region.shape == (100, 100)
    assert region[48, 31] and region[48, 69]  # ellipse centres
    assert not region[48, 50]  # mediastinum gap between the ellipses
    assert not (region & border_frame(100)).any()  # fallback lungs never touch the 12% frame
    assert 0.25 < region.mean() < 0.45


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)
    return path


def test_load_mask_resizes_like_images_and_warns_on_mismatch(tmp_path):
    mask = np.zeros((20, 40), np.uint8)
    mask[:, :20] = 255
    path = _png(tmp_path / "m.png", mask)
    with pytest.warns(
        UserWarning, match=r"is 40x20 but its image is 30x30 \(another size and aspect\)"
    ):
        out = load_mask(path, 10, image_shape=(30, 30))
    assert out.shape == (10, 10) and out.dtype == bool
    assert out[:, :5].all() and not out[:, 5:].any()  # stretched, left half
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_mask(path, 10, image_shape=(20, 40))  # matching shape: no warning


def test_attention_frame_and_summary_exclude_missing_and_empty_masks():
    cams = np.zeros((4, 2, 2))
    cams[:, 0, 0] = 1.0  # all mass top-left
    top_left = np.array([[True, False], [False, False]])
    bottom = np.array([[False, False], [True, True]])
    frame = attention_frame(
        cams,
        [top_left, bottom, None, np.zeros((2, 2), bool)],
        paths=["a", "b", "c", "d"],
        labels=["COVID", "Normal", "COVID", "Normal"],
        predicted=["COVID", "COVID", "COVID", "Normal"],
    )
    assert frame["mask_status"].tolist() == ["ok", "ok", "missing", "empty"]
    assert frame["lung_ratio"].iloc[0] == 1.0 and frame["lung_ratio"].iloc[1] == 0.0
    assert frame["pointing_hit"].iloc[:2].tolist() == [1.0, 0.0]
    summary = summarize_attention(frame, classes=["COVID", "Normal"])
    assert summary["n_with_mask"] == 2 and summary["n_without_mask"] == 1
    assert summary["empty_masks"] == ["d"]
    assert summary["overall"]["lung_ratio_mean"] == pytest.approx(0.5)
    assert summary["overall"]["lung_area_mean"] == pytest.approx((0.25 + 0.5) / 2)
    assert summary["overall"]["pointing_rate"] == pytest.approx(0.5)
    assert summary["per_class"]["COVID"]["lung_ratio_mean"] == 1.0
    assert summary["per_class"]["Normal"]["lung_ratio_mean"] == 0.0
    assert summary["correct"]["n"] == 1 and summary["incorrect"]["lung_ratio_mean"] == 0.0
    assert "1 of 4 images have no lung mask" in summary["notice"]
    assert "1 empty mask" in summary["notice"]


def test_select_examples_covers_classes_and_correctness():
    labels = ["A"] * 5 + ["B"] * 5
    predicted = ["A", "A", "A", "B", "B"] + ["B", "B", "B", "B", "A"]
    pick = select_examples(labels, predicted, classes=["A", "B"], n=4, seed=0)
    chosen = [(labels[i], labels[i] == predicted[i]) for i in pick]
    assert chosen == [("A", True), ("A", False), ("B", True), ("B", False)]
    assert len(select_examples(labels, predicted, classes=["A", "B"], n=50)) == 10
    same = select_examples(labels, predicted, classes=["A", "B"], n=4, seed=0)
    assert same.tolist() == pick.tolist()  # seeded


# ---------------------------------------------------------------------------------------------
# explain_run on a hand-made run directory (random-weight model, synthetic images with masks)

SIZE = 64


def make_run(tmp_path: Path, dataset: Path, *, model: str = "resnet18", masks: bool = True) -> Path:
    """A minimal run directory: split.csv (all images in 'test') and checkpoints/best.ckpt."""
    rows = []
    for class_dir in sorted(p for p in dataset.iterdir() if p.is_dir()):
        for i, image in enumerate(sorted((class_dir / "images").glob("*.png"))):
            mask = class_dir / "masks" / image.name
            rows.append(
                {
                    "path": str(image),
                    "label": class_dir.name,
                    "source": f"src{i % 2}",
                    "mask_path": str(mask) if masks else "",
                    "sha1": "",
                    "width": SIZE,
                    "height": SIZE,
                    "split": "test",
                }
            )
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "split.csv", index=False)
    classes = sorted({r["label"] for r in rows})
    torch.manual_seed(0)
    save_classifier(
        create_classifier(model, classes, image_size=SIZE), run / "checkpoints" / "best.ckpt"
    )
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synth_dataset) -> Path:
    return make_run(tmp_path_factory.mktemp("explain"), synth_dataset)


def test_explain_run_writes_overlays_panel_and_tables(run_dir):
    result = explain_run(run_dir, n=6, device="cpu", layer="network.layer3")
    assert result.out_dir == run_dir / "explain"
    assert len(result.overlays) == 6 and all(p.is_file() for p in result.overlays)
    with Image.open(result.overlays[0]) as im:
        assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    assert result.panel_png.is_file() and result.panel_pdf.read_bytes()[:4] == b"%PDF"
    with Image.open(result.panel_png) as im:
        assert im.width > 1000  # 200 dpi, readable in print
    table = pd.read_csv(run_dir / "explain" / "explain.csv")
    assert len(table) == 6
    assert {
        "path",
        "label",
        "predicted",
        "target",
        "lung_ratio",
        "pointing_hit",
        "lung_area",
    } <= set(table.columns)
    assert (table["target"] == table["predicted"]).all()
    assert table["mask_status"].eq("ok").all()
    # The 4 classes each appear, in class order (grouped rows).
    order = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert list(dict.fromkeys(table["label"])) == order
    probs = table[order].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert result.attention["n_with_mask"] == 6
    ratios = table["lung_ratio"].dropna()
    assert ((ratios >= 0) & (ratios <= 1)).all()
    assert not list(run_dir.glob("explain/.*.tmp"))  # atomic writes leave no temp files


def test_explain_run_true_target_and_explicit_images(run_dir, tmp_path, synth_dataset):
    listed = sorted((synth_dataset / "Normal" / "images").glob("*.png"))[:2]
    result = explain_run(run_dir, images=listed, target="true", out=tmp_path / "e", device="cpu")
    assert result.table["target"].tolist() == ["Normal", "Normal"]
    assert result.table["mask_status"].eq("ok").all()  # masks found through split.csv
    foreign = _png(tmp_path / "foreign" / "x.png", np.full((SIZE, SIZE), 90))
    with pytest.raises(ConfigError, match="not in the run's split.csv"):
        explain_run(run_dir, images=[foreign], target="true", out=tmp_path / "f", device="cpu")
    # An image outside the run explains fine for the predicted class, without a mask.
    result = explain_run(
        run_dir, images=[foreign], target="Normal", out=tmp_path / "g", device="cpu"
    )
    assert result.table["target"].tolist() == ["Normal"]
    assert result.attention["n_without_mask"] == 1 and result.attention["notice"]


def test_explain_run_errors_at_the_boundary(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'network.layer4'"):
        explain_run(run_dir, layer="network.layr4", device="cpu")
    with pytest.raises(DataError, match="splits present: test"):
        explain_run(run_dir, split="val", device="cpu")
    with pytest.raises(RunDirError, match="does not exist"):
        explain_run(tmp_path / "nope", device="cpu")


def test_cli_explain(run_dir, tmp_path):
    from typer.testing import CliRunner

    from cxrlab.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app, ["explain", str(run_dir), "--n", "2", "--out", str(out), "--device", "cpu",
              "--method", "eigencam", "--layer", "network.layer3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Panel:" in res.output and "Lung attention" in res.output
    assert (out / "cam_panel.png").is_file() and (out / "cam_panel.pdf").is_file()
    assert len(list((out / "overlays").glob("*.png"))) == 2
    bad = CliRunner().invoke(app, ["explain", str(run_dir), "--method", "gradcamm"])
    assert bad.exit_code != 0
