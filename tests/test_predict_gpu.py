"""Prediction on a CUDA device agrees with the CPU; CAMs and export work from a GPU model.

Marked ``gpu``; skips where PyTorch sees no CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlab.inference.files import predict_files
from cxrlab.models import save_classifier

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("gpu_images")
    for i in range(7):
        ramp = np.linspace(0, 255, 96)[None, :] * (i + 1) / 7
        img = np.clip(ramp + rng.normal(0, 25, (96, 96)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def _conv_precision():
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision
    return torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("name", ["seed-cnn", "resnet18"])
def test_cuda_matches_cpu(informative_model, name, images, tmp_path):
    ckpt = save_classifier(informative_model(name, CLASSES, 64), tmp_path / "m.ckpt")
    cpu = predict_files(ckpt, [images], batch_size=3, device="cpu", progress=False)
    before = _conv_precision()
    gpu = predict_files(ckpt, [images], batch_size=3, device="cuda", progress=False)
    assert _conv_precision() == before  # the global setting is restored
    assert list(gpu["error"] != "") == list(cpu["error"] != "") and (gpu["error"] != "").sum() == 1
    # Full fp32 on both (prediction turns TF32 off): only summation order differs.
    np.testing.assert_allclose(
        gpu[list(CLASSES)].to_numpy(float), cpu[list(CLASSES)].to_numpy(float), atol=1e-4
    )


def test_cam_overlays_on_cuda(informative_model, images, tmp_path):
    pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed")
    pytest.importorskip("cxrlab.explain.cam", reason="the explain module is not in this tree")
    model = informative_model("resnet18", CLASSES, 64)
    df = predict_files(model, [images], device="cuda", cam_dir=tmp_path / "cams", progress=False)
    written = df.loc[df["error"] == "", "cam"]
    assert len(written) == 7
    assert np.asarray(Image.open(written.iloc[0])).shape == (64, 64, 3)


def test_export_leaves_a_gpu_model_on_the_gpu(informative_model, tmp_path):
    from cxrlab.inference.export import export_onnx

    model = informative_model("seed-cnn", CLASSES, 32).cuda().train()
    result = export_onnx(model, tmp_path / "m.onnx")
    assert result.max_abs_diff <= 1e-4
    assert next(model.parameters()).is_cuda and model.training
