"""The web API (FastAPI TestClient): page, model info, predictions, and clear 400s for bad files."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cxrlab.data.images import resize_square
from cxrlab.models import save_classifier
from cxrlab.serve.app import DISCLAIMER, create_app

CLASSES = ("COVID", "Normal", "Viral Pneumonia")  # conftest's seed_cnn_3class
SIZE = 32


@pytest.fixture(scope="module")
def model(seed_cnn_3class):
    return seed_cnn_3class


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    assert tuple(model.meta.classes) == CLASSES and model.meta.image_size == SIZE
    ckpt = save_classifier(model, tmp_path_factory.mktemp("serve") / "model.ckpt")
    return TestClient(create_app(ckpt, device="cpu", max_upload_mb=1))


def _png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


def _decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_page_is_self_contained_with_banner(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.text
    assert DISCLAIMER in html
    assert 'type="file"' in html
    # Nothing external: no CDN scripts, styles or fonts.
    assert "http://" not in html and "https://" not in html and "//cdn" not in html


def test_info(client):
    info = client.get("/api/info").json()
    assert info["classes"] == list(CLASSES)
    assert info["image_size"] == SIZE and info["backend"] == "torch"
    assert info["disclaimer"] == DISCLAIMER


def test_predict_png(client, model):
    gray = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    response = client.post("/api/predict", files={"file": ("x.png", _png(gray), "image/png")})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["filename"] == "x.png" and data["classes"] == list(CLASSES)
    probs = np.array([data["probabilities"][c] for c in CLASSES])
    # Same numbers as the model on the same preprocessing (resize to 32, scale to [0, 1]).
    x = torch.from_numpy(resize_square(gray, SIZE).astype(np.float32)[None, None] / 255)
    with torch.inference_mode():
        expected = torch.softmax(model(x), 1)[0].numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert data["predicted"] == CLASSES[int(np.argmax(expected))]
    assert _decode_data_url(data["image"]).shape == (SIZE, SIZE)
    assert data["disclaimer"] == DISCLAIMER
    if data["cam"] is not None:
        assert _decode_data_url(data["cam"]).shape == (SIZE, SIZE, 3)
        assert data["cam_message"] == ""
    else:
        assert data["cam_message"].startswith("CAM unavailable")


def test_predict_dicom_upload_without_suffix(client):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("upload", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.set_pixel_data(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), "MONOCHROME2", 12)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    response = client.post(
        "/api/predict", files={"file": ("IM0001", buf.getvalue(), "application/dicom")}
    )
    assert response.status_code == 200, response.text
    image = _decode_data_url(response.json()["image"])
    # min-max over a 0..4095 ramp, then antialiased resize 64 -> 32: dark top, bright bottom.
    assert image[0, 0] < 8 and image[-1, -1] > 247 and (np.diff(image.mean(axis=1)) > 0).all()


@pytest.mark.parametrize(
    ("name", "payload", "status", "words"),
    [
        ("notes.txt", b"hello, not an image", 400, "could not be read as an image"),
        ("empty.png", b"", 400, "empty"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "could not be read"),
        ("huge.png", b"\x00" * (2 * 2**20), 413, "larger than 1 MiB"),
    ],
)
def test_bad_uploads_are_clear_errors(client, name, payload, status, words):
    response = client.post(
        "/api/predict", files={"file": (name, payload, "application/octet-stream")}
    )
    assert response.status_code == status
    detail = response.json()["detail"]
    assert words in detail and name in detail


def test_dicom_without_pixels_is_400(client):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("sr", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    response = client.post(
        "/api/predict", files={"file": ("report.dcm", buf.getvalue(), "application/dicom")}
    )
    assert response.status_code == 400
    assert "no pixel data" in response.json()["detail"]


def test_onnx_model_serves_without_cam(model, tmp_path):
    from cxrlab.inference.export import export_onnx

    path = export_onnx(model, tmp_path / "m.onnx").path
    client = TestClient(create_app(path))
    assert client.get("/api/info").json()["cam_available"] is False
    gray = np.full((20, 20), 128, np.uint8)
    data = client.post("/api/predict", files={"file": ("g.png", _png(gray), "image/png")}).json()
    assert data["cam"] is None and data["cam_message"].startswith("CAM unavailable")
    assert sum(data["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
