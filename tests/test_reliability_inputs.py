"""Bad inputs as a user meets them: image formats and modes, DICOM variants, symbolic links,
unreadable files, unwritable outputs, EXIF orientation, and the CLI's usage errors.

The principle for each (docs/reliability.md): a one-paragraph message naming the file and what to
do, no traceback, the rest of a batch processed, nothing written into the input folders.
"""

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab.data.images import read_gray
from cxrlab.errors import ConfigError, DataError, ImageReadError
from cxrlab.inference.files import iter_input_files, predict_files, predict_to_csv
from cxrlab.models import save_classifier

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def cxrlab(cxrlab_cli):
    """Run the CLI in a subprocess: ``(exit code, output)``."""

    def run(*args, timeout=300):
        proc = cxrlab_cli(*args, timeout=timeout, columns=120)
        return proc.returncode, proc.stdout + proc.stderr

    return run


def _gray(h=24, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


@pytest.fixture(scope="module")
def ckpt(seed_cnn_3class, tmp_path_factory):
    return save_classifier(seed_cnn_3class, tmp_path_factory.mktemp("model") / "model.ckpt")


# -- image formats and modes ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
     ("I;16", "PNG"), ("RGB", "JPEG"), ("CMYK", "JPEG"), ("L", "TIFF"), ("F", "TIFF"),
     ("L", "BMP")],
)  # fmt: skip
def test_every_image_mode_decodes_to_gray(mode, fmt, tmp_path):
    gray = _gray()
    image = Image.fromarray(gray, "L")
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(gray.astype(np.float32) / 7)
    elif mode != "L":
        image = image.convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt)
    out = read_gray(path)
    assert out.dtype == np.uint8 and out.shape == (24, 16)
    if mode in ("L", "I;16", "RGB", "P") and fmt != "JPEG":
        np.testing.assert_array_equal(out, gray)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"", "empty"),
        (b"hello", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image"),
    ],
    ids=["empty", "text", "png-signature-only"],
)
def test_broken_files_name_the_reason(payload, says, tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(payload)
    with pytest.raises(ImageReadError, match=says) as info:
        read_gray(path)
    assert str(path) in str(info.value)


def test_truncated_png_is_reported(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_gray(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_gray(path)


# -- EXIF orientation --------------------------------------------------------------------------
def _sideways_jpeg(path: Path, upright: np.ndarray, orientation: int = 6) -> Path:
    """Store ``upright`` as a viewer would need to turn it back with ``orientation``."""
    from PIL import ImageOps

    stored = Image.fromarray(upright, "L")
    # Invert the transform the tag asks for: storing = inverse(exif_transpose).
    turn = Image.Transpose
    inverse = {6: turn.ROTATE_90, 8: turn.ROTATE_270, 3: turn.ROTATE_180}
    stored = stored.transpose(inverse[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, format="JPEG", quality=100, subsampling=0, exif=exif)
    with Image.open(path) as check:  # what every viewer shows
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(check)).shape, upright.shape)
    return path


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_when_decoding(orientation, tmp_path):
    upright = np.zeros((40, 20), np.uint8)
    upright[:10] = 255  # a bright band at the top
    path = _sideways_jpeg(tmp_path / "side.jpg", upright, orientation)
    with Image.open(path) as im:
        assert np.asarray(im).shape != upright.shape or orientation == 3
    decoded = read_gray(path)
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright).max() < 40  # JPEG rounding only
    reduced = read_gray(path, max_side=10)  # the scan's reduced decode turns it as well
    assert reduced.shape[0] > reduced.shape[1]


def test_exif_orientation_same_prediction_as_the_upright_file(ckpt, tmp_path):
    upright = _gray(64, 48, seed=3)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    _sideways_jpeg(tmp_path / "side.jpg", upright)
    frame = predict_files(ckpt, [tmp_path / "upright.png", tmp_path / "side.jpg"], progress=False)
    probs = frame[["COVID", "Normal", "Viral Pneumonia"]].to_numpy()
    assert (frame["error"] == "").all()
    np.testing.assert_allclose(probs[0], probs[1], atol=0.05)


def test_exif_orientation_in_serve(ckpt, tmp_path):
    from fastapi.testclient import TestClient

    from cxrlab.serve.app import create_app

    upright = np.zeros((40, 20), np.uint8)
    upright[:10] = 255
    data = _sideways_jpeg(tmp_path / "side.jpg", upright).read_bytes()
    client = TestClient(create_app(ckpt, device="cpu"))
    png = io.BytesIO()
    Image.fromarray(upright).save(png, format="PNG")
    a = client.post("/api/predict", files={"file": ("side.jpg", data, "image/jpeg")}).json()
    b = client.post("/api/predict", files={"file": ("up.png", png.getvalue(), "image/png")}).json()
    for c in ("COVID", "Normal", "Viral Pneumonia"):
        assert abs(a["probabilities"][c] - b["probabilities"][c]) < 0.05


def test_exif_orientation_is_recorded_by_the_scan(tiny_layout):
    from cxrlab.data.scan import scan_dataset

    root = tiny_layout({"COVID": 2, "Normal": 2}, masks=False)
    upright = np.zeros((40, 20), np.uint8)
    upright[:10] = 255
    side = _sideways_jpeg(root / "COVID" / "images" / "COVID-9.jpg", upright)
    result = scan_dataset(root)
    kinds = {(p.path, p.kind) for p in result.problems}
    assert (str(side), "exif_oriented") in kinds
    row = result.index.set_index("path").loc[str(side)]
    assert (row["width"], row["height"]) == (20, 40)  # the upright size


# -- DICOM variants ----------------------------------------------------------------------------
def test_png_named_dcm_says_what_it_is(tmp_path):
    path = tmp_path / "x.dcm"
    Image.fromarray(_gray()).save(path, format="PNG")
    with pytest.raises(ImageReadError, match="not a DICOM file: it is a PNG image"):
        read_gray(path)


def test_jpeg_named_dcm_says_what_it_is(tmp_path):
    path = tmp_path / "x.dcm"
    Image.fromarray(_gray()).save(path, format="JPEG")
    with pytest.raises(ImageReadError, match="not a DICOM file: it is a JPEG image"):
        read_gray(path)


@pytest.mark.parametrize("name", ["garbage.dcm", "garbage"])
def test_preamble_then_garbage_is_not_a_valid_dicom(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(600))
    with pytest.raises(ImageReadError, match="not a valid DICOM file") as info:
        read_gray(path)
    assert "no pixel data (a structured report" not in str(info.value)


def test_dicom_without_file_meta_decodes(write_dicom, tmp_path):
    import pydicom

    pixels = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 60).astype(np.uint16)
    full = write_dicom(tmp_path / "full.dcm", pixels)
    ds = pydicom.dcmread(full)
    bare = pydicom.Dataset()
    bare.update(ds)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, bare, enforce_file_format=False, implicit_vr=True, little_endian=True)
    (tmp_path / "bare.dcm").write_bytes(buf.getvalue())
    np.testing.assert_array_equal(read_gray(tmp_path / "bare.dcm"), read_gray(full))


def test_dicom_structured_report_still_says_no_pixel_data(write_dicom, tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", None)
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_gray(path)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_dicom_photometric_variants(photometric, write_dicom, tmp_path):
    pixels = np.tile(np.arange(16, dtype=np.uint16) * 250, (8, 1))
    out = read_gray(write_dicom(tmp_path / "x.dcm", pixels, photometric=photometric))
    increasing = out[0, -1] > out[0, 0]
    assert increasing == (photometric == "MONOCHROME2")  # bone is bright either way


# -- symbolic links, unreadable files, outputs ------------------------------------------------
def test_symlink_loop_inside_a_folder_is_an_error_row(ckpt, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_gray()).save(folder / "a.png")
    os.symlink("loop.png", folder / "loop.png")  # points at itself
    os.symlink(tmp_path / "gone.png", folder / "broken.png")
    os.symlink(folder, folder / "again")  # a folder loop: not followed
    frame = predict_files(ckpt, [folder], progress=False)
    errors = dict(zip(frame["path"].map(lambda p: Path(p).name), frame["error"], strict=True))
    assert errors["a.png"] == ""
    assert "symbolic links" in errors["loop.png"]
    assert "broken symbolic link" in errors["broken.png"]
    assert len(frame) == 3


def test_symlink_loop_given_directly_keeps_the_batch(ckpt, tmp_path, cxrlab):
    Image.fromarray(_gray()).save(tmp_path / "a.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    out = tmp_path / "out" / "p.csv"
    code, text = cxrlab("predict", ckpt, tmp_path / "a.png", tmp_path / "loop.png", "--out", out)
    assert code == 0, text
    assert "Traceback" not in text
    frame = pd.read_csv(out, keep_default_na=False)
    assert frame["error"].tolist()[0] == "" and "symbolic links" in frame["error"].tolist()[1]


def test_missing_input_is_still_refused_before_work(tmp_path):
    with pytest.raises(DataError, match="do not exist"):
        list(iter_input_files([tmp_path / "nothing.png"]))


def test_folder_named_like_an_image_is_not_read_as_one(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_gray(tmp_path / "dir.png")


def test_unreadable_file_is_an_error_row(ckpt, tmp_path, monkeypatch):
    Image.fromarray(_gray()).save(tmp_path / "a.png")
    Image.fromarray(_gray()).save(tmp_path / "locked.png")
    real_open = Path.open

    def no_permission(self, *args, **kwargs):
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", no_permission)
    frame = predict_files(ckpt, [tmp_path], progress=False)
    errors = dict(zip(frame["path"].map(lambda p: Path(p).name), frame["error"], strict=True))
    assert errors == {"a.png": "", "locked.png": "cannot read the file (Permission denied)"}


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their permissions")
def test_unreadable_file_through_the_cli(ckpt, tmp_path, cxrlab):
    locked = tmp_path / "locked.png"
    Image.fromarray(_gray()).save(locked)
    locked.chmod(0)
    code, text = cxrlab("predict", ckpt, locked, "--out", tmp_path / "p.csv")
    assert code == 0 and "Traceback" not in text
    assert "Permission denied" in pd.read_csv(tmp_path / "p.csv")["error"].iloc[0]


def test_out_that_is_a_folder_is_refused_before_predicting(ckpt, tmp_path, monkeypatch):
    import cxrlab.inference.files as files

    Image.fromarray(_gray()).save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(files, "load_predictor", _must_not_run)
    with pytest.raises(ConfigError, match="is a folder"):
        predict_to_csv(ckpt, [tmp_path / "a.png"], tmp_path / "out")


def test_out_in_an_unwritable_place_is_refused_before_predicting(ckpt, tmp_path, monkeypatch):
    import cxrlab.inference.files as files

    Image.fromarray(_gray()).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setattr(files, "load_predictor", _must_not_run)
    with pytest.raises(ConfigError, match="cannot be written.*nothing was predicted"):
        predict_to_csv(ckpt, [tmp_path / "a.png"], tmp_path / "file" / "p.csv")


def test_out_in_a_read_only_folder_through_the_cli(ckpt, tmp_path, cxrlab):
    Image.fromarray(_gray()).save(tmp_path / "a.png")
    if IS_ROOT:  # root writes into mode-0555 folders; a path under a file is unwritable for all
        out = tmp_path / "a.png" / "p.csv"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = ro / "p.csv"
    code, text = cxrlab("predict", ckpt, tmp_path / "a.png", "--out", out)
    assert code == 2, text
    assert "Traceback" not in text and "cannot be written" in " ".join(text.split())
    code, text = cxrlab("predict", ckpt, tmp_path / "a.png", "--out", tmp_path)
    assert code == 2 and "is a folder" in " ".join(text.split()) and "Traceback" not in text


def _must_not_run(*args, **kwargs):
    raise AssertionError("the model was loaded before the output was checked")


# -- usage errors (fixed on main; kept here per case of the corpus) ----------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["train", "--epochs", "abc"],  # bad value
        ["train", "--epochs", "0"],  # out of range
        ["evaluate"],  # missing argument
        ["frobnicate"],  # unknown command
        ["predict", "run"],  # missing PATHS
    ],
)
def test_usage_errors_exit_2_without_a_traceback(args, cxrlab):
    code, text = cxrlab(*args)
    assert code == 2, text
    assert "Traceback" not in text and "Usage:" in text
