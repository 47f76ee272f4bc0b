"""Lung segmenter: pair checks (bad inputs), Dice/IoU by hand, a tiny training, predict, ONNX
export, the CLI, and lungs: crop through the decode path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlab.errors import DataError
from cxrlab.segment.data import find_pairs, read_mask
from cxrlab.segment.model import dice_iou

SIZE = 64


def _lungs(rng, size=SIZE):
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for cx in (0.32, 0.68):
        cy, ry, rx = 0.5 + rng.uniform(-0.05, 0.05), 0.3, 0.13
        mask |= ((xx / size - cx) / rx) ** 2 + ((yy / size - cy) / ry) ** 2 <= 1
    img = np.where(mask, 60, 180) + rng.normal(0, 10, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _pairs(root: Path, n: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = _lungs(rng)
        Image.fromarray(img).save(root / "images" / f"p{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"p{i}.png")
    return root


def test_dice_iou_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    d, j = dice_iou(a, b)
    assert d == pytest.approx(2 * 4 / 16) and j == pytest.approx(4 / 12)
    assert dice_iou(np.zeros((2, 2)), np.zeros((2, 2))) == (1.0, 1.0)
    valid = np.ones((4, 4), bool)
    valid[2:] = False  # leave b's third row out: 4 shared of 8 and 4
    assert dice_iou(a, b, valid)[0] == pytest.approx(8 / 12)


def test_bad_pairs_are_named(tmp_path):
    root = _pairs(tmp_path / "d")
    assert len(find_pairs(root)) == 8
    (root / "masks" / "p0.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) in .*images have no mask.*p0.png"):
        find_pairs(root)
    bad = tmp_path / "m.png"
    Image.fromarray(np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8)).save(bad)
    with pytest.raises(DataError, match=r"m.png is not binary"):
        read_mask(bad)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(bad)
    with pytest.raises(DataError, match=r"m.png is empty"):
        read_mask(bad)
    wide = np.zeros((64, 128), np.uint8)
    wide[10:20, 10:20] = 255
    Image.fromarray(wide).save(bad)
    with pytest.raises(DataError, match=r"m.png is 128x64 but its image is 64x64"):
        read_mask(bad, (64, 64))
    half = np.zeros((32, 32), np.uint8)
    half[:16] = 1  # 0/1 coding at half the resolution: accepted and resized
    Image.fromarray(half).save(bad)
    assert read_mask(bad, (64, 64))[:32].all()
    with pytest.raises(DataError, match=r"holds no images/ and masks/"):
        find_pairs(tmp_path / "d" / "images")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from cxrlab.segment.train import SegmentConfig, train_segmenter

    root = tmp_path_factory.mktemp("seg")
    data = _pairs(root / "data", n=10)
    result = train_segmenter(SegmentConfig(data=data, out=root / "run", image_size=32, epochs=2,
                                           batch_size=4, threads=1))  # fmt: skip
    return data, result


def test_training_writes_a_run_directory(trained):
    from cxrlab.rundir import RunDir
    from cxrlab.segment.model import load_segmenter

    _, result = trained
    run = RunDir(result.run_dir)
    assert run.is_finished() and run.best_checkpoint.is_file() and run.split.is_file()
    metrics = json.loads(run.metrics.read_text())
    assert 0 <= metrics["dice"]["value"] <= 1 and metrics["n"] >= 1
    per_image = run.predictions("test").read_text().splitlines()
    assert per_image[0].startswith("image,mask,group,dice,iou")
    assert len(per_image) == metrics["n"] + 1
    model = load_segmenter(run.path)
    assert model.meta.image_size == 32


def test_predict_and_export(trained, tmp_path):
    from cxrlab.segment.apply import export_segmenter_onnx, predict_files

    data, result = trained
    out = predict_files(result.run_dir, [data / "images"], tmp_path / "out")
    assert out.n_ok == 10 and not out.errors
    mask = np.asarray(Image.open(out.masks_dir / "p0.png"))
    assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
    assert (out.overlays_dir / "p0.png").is_file()
    diff = export_segmenter_onnx(result.run_dir, tmp_path / "seg.onnx")
    assert diff <= 1e-4 and (tmp_path / "seg.onnx").is_file()


def test_lungs_crop_in_the_decode_path(trained):
    from cxrlab.config import PreprocessConfig
    from cxrlab.data import preprocess as pp
    from cxrlab.data.images import load_for_model, read_gray
    from cxrlab.segment.model import load_segmenter, segment_grays

    data, result = trained
    cfg = PreprocessConfig(lungs="crop", segmenter=result.run_dir)
    path = data / "images" / "p1.png"
    got = load_for_model(path, 32, cfg)
    gray = read_gray(path)
    mask = segment_grays(load_segmenter(result.run_dir), [gray])[0]
    np.testing.assert_array_equal(got, pp.prepare(gray, 32, cfg, lung_mask=mask))
    meta = pp.to_metadata(cfg)
    assert len(meta["segmenter_sha1"]) == 40 and "segmenter_sha1" in pp.preprocess_key(cfg)


def test_cli_train_and_predict(tmp_path):
    data = _pairs(tmp_path / "data", n=6)
    base = [sys.executable, "-m", "cxrlab", "segment"]
    proc = subprocess.run(
        [*base, "train", "--data", str(data), "--out", str(tmp_path / "seg"), "--image-size",
         "32", "--epochs", "1", "--batch-size", "4", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Dice" in proc.stdout
    proc = subprocess.run(
        [*base, "predict", str(tmp_path / "seg"), str(data / "images" / "p0.png"), "--out",
         str(tmp_path / "pred")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pred" / "masks" / "p0.png").is_file()
    proc = subprocess.run(
        [*base, "train", "--data", str(data / "images"), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "holds no images/ and masks/" in proc.stdout + proc.stderr


def _classifier_run(tmp_path, data, informative_model, with_file_masks: int):
    import pandas as pd

    from cxrlab.models import save_classifier
    from cxrlab.rundir import RunDir

    model = informative_model("small-cnn", ("A", "B"), 32)
    run = RunDir(tmp_path / "run")
    save_classifier(model, run.best_checkpoint)
    images = sorted((data / "images").iterdir())
    rows = [
        {"path": str(p), "label": "AB"[i % 2], "source": "",
         "mask_path": str(data / "masks" / p.name) if i < with_file_masks else "", "sha1": "",
         "split": "test"}
        for i, p in enumerate(images)
    ]  # fmt: skip
    run.write_split(pd.DataFrame(rows))
    return run.path


def test_probe_takes_masks_from_the_segmenter(trained, tmp_path, informative_model):
    from cxrlab.explain.probe import probe_run

    data, result = trained
    run = _classifier_run(tmp_path, data, informative_model, with_file_masks=3)
    without = probe_run(run, device="cpu", attention=False).report
    assert without["lung_region"]["n_fallback"] == 7
    assert without["mask_origin"]["counts"] == {"file": 3, "segmenter": 0, "none": 7}
    rep = probe_run(run, device="cpu", attention=False, segmenter=result.run_dir).report
    origin = rep["mask_origin"]
    assert origin["counts"]["file"] == 3
    assert origin["counts"]["segmenter"] + origin["counts"]["none"] == 7
    assert len(origin["segmenter"]["sha1"]) == 40
    assert rep["lung_region"]["n_fallback"] == origin["counts"]["none"]
    first = sorted((data / "images").iterdir())[0]
    assert origin["per_image"][str(first)] == "file"


def test_cli_probe_with_segmenter(trained, tmp_path, informative_model):
    data, result = trained
    run = _classifier_run(tmp_path, data, informative_model, with_file_masks=0)
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlab", "probe", str(run), "--segmenter", str(result.run_dir),
         "--no-attention", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "from the segmenter" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "cxrlab", "probe", str(run), "--segmenter", str(tmp_path / "nope"),
         "--no-attention", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "--segmenter" in bad.stdout + bad.stderr


def test_explain_takes_masks_from_the_segmenter(trained, tmp_path, informative_model):
    from cxrlab.explain import explain_run

    data, result = trained
    run = _classifier_run(tmp_path, data, informative_model, with_file_masks=0)
    res = explain_run(run, n=4, device="cpu", segmenter=result.run_dir, out=tmp_path / "ex")
    info = json.loads((tmp_path / "ex" / "explain.json").read_text())
    counts = info["mask_origin"]["counts"]
    assert counts["file"] == 0 and counts["segmenter"] + counts["none"] == len(res.table)
    assert info["lung_attention"]["n_with_mask"] == counts["segmenter"]


def test_a_changed_segmenter_is_refused(trained, tmp_path):
    import shutil

    from cxrlab.config import PreprocessConfig
    from cxrlab.data import preprocess as pp
    from cxrlab.errors import ConfigError

    data, result = trained
    seg = tmp_path / "seg.ckpt"
    shutil.copy(result.run_dir / "checkpoints" / "best.ckpt", seg)
    meta = pp.to_metadata(PreprocessConfig(lungs="crop", segmenter=seg))
    assert pp.as_config(meta).lungs == "crop"
    import torch

    ckpt = torch.load(seg, weights_only=True)
    ckpt["epoch"] = -1
    torch.save(ckpt, seg)
    with pytest.raises(ConfigError, match=r"has changed since.*retrain"):
        pp.as_config(meta)


def test_time_limit_stops_training(trained, tmp_path):
    from cxrlab.segment.train import SegmentConfig, train_segmenter

    data, _ = trained
    res = train_segmenter(SegmentConfig(data=data, out=tmp_path / "t", image_size=32, epochs=500,
                                        batch_size=2, threads=1, time_limit=0.01))  # fmt: skip
    assert res.epochs_run < 500 and (tmp_path / "t" / "checkpoints" / "best.ckpt").is_file()


def test_release_layout_pairs_with_smaller_masks(tmp_path):
    from cxrlab.segment.data import load_pair

    rng = np.random.default_rng(3)
    for cls in ("COVID", "Normal"):
        (tmp_path / cls / "images").mkdir(parents=True)
        (tmp_path / cls / "masks").mkdir()
        for i in range(2):
            img, mask = _lungs(rng, 60)
            Image.fromarray(img).save(tmp_path / cls / "images" / f"{cls}-{i}.png")
            small = Image.fromarray(mask.astype(np.uint8) * 255).resize((40, 40), Image.NEAREST)
            small.save(tmp_path / cls / "masks" / f"{cls}-{i}.png")
    pairs = find_pairs(tmp_path)
    assert len(pairs) == 4 and {p.group.split("/")[0] for p in pairs} == {"COVID", "Normal"}
    image, mask, valid = load_pair(pairs[0], 32)
    assert image.shape == mask.shape == (32, 32) and mask.any() and valid.all()
