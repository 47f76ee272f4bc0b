"""Prediction on files and folders: streaming, error rows, checkpoints, ``cxrlab predict``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlab.data.images import load_for_model
from cxrlab.errors import CheckpointError, ConfigError, DataError
from cxrlab.inference.files import (
    count_input_files,
    iter_input_files,
    iter_predictions,
    predict_files,
    predict_to_csv,
)
from cxrlab.models import save_classifier

CLASSES = ("COVID", "Normal", "Viral Pneumonia")
SIZE = 32


@pytest.fixture(scope="module")
def model(seed_cnn_3class):
    return seed_cnn_3class


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    return save_classifier(model, tmp_path_factory.mktemp("ckpt") / "model.ckpt")


@pytest.fixture()
def folder(tmp_path, write_dicom):
    """A folder mixing good images of every flavour with bad files, in nested folders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "inputs"
    (root / "b_nested").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(root / "a_gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "c_rgb.jpg")
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(root / "d_16bit.png")
    Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8)).save(root / "e.tiff")
    write_dicom(
        root / "b_nested" / "f.dcm",
        rng.integers(0, 4096, (48, 48), dtype=np.uint16),
        "MONOCHROME1",
    )
    write_dicom(root / "b_nested" / "g_no_pixels.dcm", None)
    (root / "b_nested" / "h_empty.png").write_bytes(b"")
    (root / "b_nested" / "i_text.png").write_text("not an image")
    (root / "notes.txt").write_text("ignored: not an image suffix")
    (root / ".hidden.png").write_bytes(b"ignored: hidden")
    return root


GOOD = ["a_gray.png", "f.dcm", "c_rgb.jpg", "d_16bit.png", "e.tiff"]
BAD = {"g_no_pixels.dcm": "no pixel data", "h_empty.png": "empty", "i_text.png": "not an image"}


def test_walk_is_sorted_recursive_and_skips_other_files(folder):
    names = [p.name for p in iter_input_files([folder])]
    # sorted by folder then name: root files a_, then folder b_nested, then c_, d_, e.
    assert names == [
        "a_gray.png", "f.dcm", "g_no_pixels.dcm", "h_empty.png", "i_text.png",
        "c_rgb.jpg", "d_16bit.png", "e.tiff",
    ]  # fmt: skip
    assert all(p.is_absolute() for p in iter_input_files([folder]))
    assert count_input_files([folder, folder / "a_gray.png"]) == 9


def test_rows_columns_and_errors(ckpt, folder):
    df = predict_files(ckpt, [folder], batch_size=3, progress=False)
    assert list(df.columns) == ["path", "predicted", *CLASSES, "error"]
    assert len(df) == 8
    df.index = df["path"].map(lambda p: Path(p).name)
    assert set(df.index) == set(GOOD) | set(BAD)
    for name in GOOD:
        row = df.loc[name]
        assert row["error"] == "", name
        probs = row[list(CLASSES)].to_numpy(dtype=float)
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
        assert row["predicted"] == CLASSES[int(np.argmax(probs))]
    for name, reason in BAD.items():
        row = df.loc[name]
        assert reason in row["error"], (name, row["error"])
        assert row["predicted"] == ""
        assert all(math.isnan(row[c]) for c in CLASSES)


def test_probabilities_match_the_model_on_the_same_pixels(model, ckpt, folder):
    df = predict_files(ckpt, [folder / "a_gray.png", folder / "b_nested" / "f.dcm"], progress=False)
    x = np.stack([load_for_model(p, SIZE) for p in df["path"]])[:, None].astype(np.float32) / 255
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(x)).double(), dim=1).numpy()
    np.testing.assert_allclose(df[list(CLASSES)].to_numpy(float), expected, atol=1e-6)


def test_batch_size_does_not_change_results(ckpt, folder):
    one = predict_files(ckpt, [folder], batch_size=1, progress=False)
    many = predict_files(ckpt, [folder], batch_size=8, progress=False)
    pd.testing.assert_frame_equal(one, many, atol=1e-6, check_exact=False)


def test_images_are_decoded_lazily_batch_by_batch(ckpt, folder):
    rows = iter_predictions(ckpt, [folder], batch_size=2, progress=False)
    first = [next(rows), next(rows)]
    assert [r["error"] for r in first] == ["", ""]
    # Files not yet reached are only read when their batch comes: delete them now.
    for path in folder.rglob("*"):
        if path.is_file() and path.name not in ("a_gray.png", "f.dcm"):
            path.unlink()
    rest = list(rows)
    assert len(rest) == 6
    assert all("does not exist" in r["error"] for r in rest)


def test_predict_to_csv_streams_into_a_temp_file_then_renames(ckpt, folder, tmp_path):
    out = tmp_path / "out" / "predictions.csv"
    seen: list[tuple[int, bool, int]] = []

    def progress(done: int) -> None:
        temps = list(out.parent.glob(".predictions.csv.*.tmp"))
        lines = temps[0].read_text().count("\n") if temps else -1
        seen.append((done, out.exists(), lines))

    summary = predict_to_csv(ckpt, [folder], out, batch_size=3, progress=progress)
    assert [s[0] for s in seen] == [3, 6, 8]
    assert not any(exists for _, exists, _ in seen)  # never visible half-written
    # Each finished batch is on disk in the temporary file: header + 3 rows, header + 6 rows.
    assert [lines for _, _, lines in seen[:2]] == [4, 7]
    assert out.is_file() and not list(out.parent.glob("*.tmp"))
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 == summary.n_files
    assert summary.n_errors == 3
    assert sum(summary.counts.values()) == 5
    assert list(summary.counts) == list(CLASSES)
    good = [r for r in rows if not r["error"]]
    assert all(abs(sum(float(r[c]) for c in CLASSES) - 1) < 1e-6 for r in good)
    assert all(r[c] == "" for r in rows if r["error"] for c in CLASSES)


def test_huge_image_is_downscaled_while_decoding(ckpt, tmp_path):
    big = np.zeros((10_000, 10_000), np.uint8)
    big[:, 5_000:] = 255
    path = tmp_path / "huge.png"
    Image.fromarray(big).save(path, compress_level=1)
    del big
    df = predict_files(ckpt, [path], progress=False)
    assert df.loc[0, "error"] == ""
    assert load_for_model(path, SIZE).shape == (SIZE, SIZE)


def test_three_channel_model_gets_repeated_gray(informative_model, tmp_path, folder):
    rgb_model = informative_model("seed-cnn", CLASSES, SIZE, in_chans=3)
    df = predict_files(rgb_model, [folder / "a_gray.png"], progress=False)
    x = load_for_model(folder / "a_gray.png", SIZE).astype(np.float32)[None, None] / 255
    with torch.inference_mode():
        expected = torch.softmax(rgb_model(torch.from_numpy(x).repeat(1, 3, 1, 1)), 1).numpy()
    np.testing.assert_allclose(df[list(CLASSES)].to_numpy(float), expected, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "format", "missing", "empty_run_dir"])
def test_bad_checkpoints_raise_checkpoint_error(ckpt, folder, tmp_path, damage):
    bad = tmp_path / "bad.ckpt"
    if damage == "truncated":
        bad.write_bytes(Path(ckpt).read_bytes()[:2000])
    elif damage == "format":
        payload = torch.load(ckpt, weights_only=True)
        payload["cxrlab_meta"]["format"] = 99
        torch.save(payload, bad)
    elif damage == "empty_run_dir":
        bad = tmp_path / "run"
        bad.mkdir()
    with pytest.raises(CheckpointError) as info:
        predict_files(bad, [folder], progress=False)
    assert str(bad) in str(info.value)


def test_input_and_output_checks(ckpt, folder, tmp_path):
    with pytest.raises(DataError, match="do not exist"):
        predict_files(ckpt, [tmp_path / "nope"], progress=False)
    with pytest.raises(DataError, match="inside the input folder"):
        predict_to_csv(ckpt, [folder], folder / "predictions.csv", progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        predict_files(ckpt, [folder], batch_size=0, progress=False)


def test_cam_overlays(ckpt, folder, tmp_path):
    pytest.importorskip("cxrlab.explain.cam", reason="the explain module is not in this tree")
    cams = tmp_path / "cams"
    df = predict_files(ckpt, [folder], cam_dir=cams, progress=False)
    written = df.loc[df["error"] == "", "cam"]
    assert len(written) == 5 and all(Path(p).parent == cams for p in written)
    assert (df.loc[df["error"] != "", "cam"] == "").all()
    path = Path(df.loc[written.index[0], "path"])
    image = np.asarray(Image.open(written.iloc[0]))
    with Image.open(path) as source:  # drawn at the source's resolution, not the model's
        assert image.shape == (source.height, source.width, 3) and image.dtype == np.uint8
    assert image.shape[:2] != (SIZE, SIZE)
    with pytest.raises(DataError, match="inside the input folder"):
        predict_files(ckpt, [folder], cam_dir=folder / "cams", progress=False)


def test_cli_predict(ckpt, folder, tmp_path):
    from typer.testing import CliRunner

    from cxrlab.cli import app

    out = tmp_path / "p.csv"
    result = CliRunner().invoke(app, ["predict", str(ckpt), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Predictions written to" in result.output and "unreadable" in result.output
    assert len(pd.read_csv(out)) == 8

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 10)
    result = CliRunner().invoke(app, ["predict", str(bad), str(folder), "--out", str(out)])
    assert isinstance(result.exception, CheckpointError)


def test_cli_main_prints_one_paragraph_for_bad_checkpoint(tmp_path, folder, monkeypatch, capsys):
    from cxrlab.cli import main

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 10)
    monkeypatch.setattr("sys.argv", ["cxrlab", "predict", str(bad), str(folder)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "could not be read as a checkpoint" in err and "Traceback" not in err


REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rdb-mini"


@pytest.mark.realdata
def test_real_radiographs_predict_without_errors(ckpt, tmp_path):
    root = REAL_DATA / "COVID-19_Radiography_Dataset"
    if not root.is_dir():
        pytest.skip(f"real-data subset not found at {root}")
    files = [p for c in sorted(root.iterdir()) for p in sorted(c.glob("images/*.png"))[:3]]
    assert files
    summary = predict_to_csv(ckpt, files, tmp_path / "real.csv", batch_size=4, progress=False)
    assert summary.n_files == len(files) and summary.n_errors == 0
    df = pd.read_csv(tmp_path / "real.csv")
    np.testing.assert_allclose(df[list(CLASSES)].sum(axis=1), 1.0, atol=1e-6)


def test_release_layout_masks_are_skipped_and_counted(ckpt, tiny_layout, tmp_path):
    """A release-layout folder: ``<Class>/masks/*.png`` are lung masks, not X-rays."""
    from typer.testing import CliRunner

    from cxrlab.cli import app

    root = tiny_layout({"COVID": 3, "Normal": 2}, layout="current", size=16, masks=True)
    summary = predict_to_csv(ckpt, [root], tmp_path / "p.csv", progress=False)
    rows = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert summary.n_files == 5 and summary.n_mask_files == 5
    assert not rows["path"].str.contains("/masks/").any()
    result = CliRunner().invoke(
        app, ["predict", str(ckpt), str(root), "--out", str(tmp_path / "q.csv")]
    )
    assert result.exit_code == 0, result.output
    assert "Skipped 5 file(s) in lung-mask folders" in " ".join(result.output.split())
