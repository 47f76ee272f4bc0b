"""ONNX export: parity with PyTorch, metadata, batch axis, and a torch-free prediction path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from PIL import Image

from cxrlab.errors import CheckpointError
from cxrlab.inference.export import export_onnx
from cxrlab.inference.files import predict_files
from cxrlab.inference.predictor import INPUT_CONTRACT, OnnxPredictor, TorchPredictor
from cxrlab.models import save_classifier

CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
SIZE = 64


@pytest.fixture(scope="module", params=["seed-cnn", "resnet18"])
def exported(informative_model, request, tmp_path_factory):
    """(model, ckpt, onnx path) for a randomly initialised model at 64 x 64."""
    model = informative_model(request.param, CLASSES, SIZE)
    folder = tmp_path_factory.mktemp(request.param)
    ckpt = save_classifier(model, folder / "model.ckpt")
    result = export_onnx(ckpt, folder / "model.onnx")
    assert result.path.is_file() and result.dynamic_batch
    return model, ckpt, result


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("images")
    for i in range(5):
        # Smooth gradients plus noise: varied inputs give varied logits.
        ramp = np.linspace(0, 255, 80)[None, :] * (i + 1) / 5
        img = np.clip(ramp + rng.normal(0, 30, (80, 80)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def test_probabilities_match_pytorch(exported, images):
    model, ckpt, result = exported
    x = np.random.default_rng(0).random((6, 1, SIZE, SIZE), dtype=np.float32)
    p_torch = TorchPredictor(model, device="cpu").predict_proba(x)
    p_onnx = OnnxPredictor(result.path).predict_proba(x)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4, rtol=0)
    assert result.max_abs_diff <= 1e-4

    # The same through the file pipeline, batch sizes differing between back-ends.
    from_ckpt = predict_files(ckpt, [images], batch_size=2, device="cpu", progress=False)
    from_onnx = predict_files(result.path, [images], batch_size=5, progress=False)
    assert list(from_onnx["path"]) == list(from_ckpt["path"])
    np.testing.assert_allclose(
        from_onnx[list(CLASSES)].to_numpy(float),
        from_ckpt[list(CLASSES)].to_numpy(float),
        atol=1e-4,
    )
    assert (from_onnx["predicted"] == from_ckpt["predicted"]).all()


def test_metadata_and_input_contract(exported):
    model, _, result = exported
    proto = onnx.load(str(result.path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == list(CLASSES)
    assert props["image_size"] == str(SIZE) and props["in_chans"] == "1"
    assert float(props["mean"]) == model.meta.mean and float(props["std"]) == model.meta.std
    assert props["model_name"] == model.meta.model_name
    assert props["cxrlab_version"]
    assert INPUT_CONTRACT in props["input"]
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, SIZE, SIZE]
    predictor = OnnxPredictor(result.path)
    assert predictor.classes == CLASSES and predictor.image_size == SIZE
    for n in (1, 7):  # dynamic batch axis
        assert predictor.predict_proba(np.zeros((n, 1, SIZE, SIZE), np.float32)).shape == (n, 4)


def test_old_opset_uses_torchscript_exporter(informative_model, tmp_path):
    model = informative_model("seed-cnn", CLASSES, 32)
    result = export_onnx(model, tmp_path / "old.onnx", opset=13)
    proto = onnx.load(str(result.path))
    assert result.opset == 13
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # still dynamic
    x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    expected = TorchPredictor(model, device="cpu").predict_proba(x)
    np.testing.assert_allclose(OnnxPredictor(result.path).predict_proba(x), expected, atol=1e-4)
    assert json.loads({p.key: p.value for p in proto.metadata_props}["classes"]) == list(CLASSES)


def test_onnx_prediction_never_imports_torch_or_training(exported, images):
    _, _, result = exported
    code = textwrap.dedent(
        f"""
        import json, sys
        from cxrlab.inference.files import predict_files
        df = predict_files({str(result.path)!r}, [{str(images)!r}], progress=False)
        assert len(df) == 5 and (df["error"] == "").all()
        bad = sorted(m for m in sys.modules
                     if m.split(".")[0] in ("torch", "lightning", "pytorch_lightning")
                     or m.startswith("cxrlab.training") or m.startswith("cxrlab.models"))
        print(json.dumps(bad))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_bad_onnx_files_raise_checkpoint_error(exported, tmp_path, images):
    _, _, result = exported
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(result.path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        predict_files(truncated, [images], progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxPredictor(tmp_path / "missing.onnx")
    bare = onnx.load(str(result.path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(CheckpointError, match="cxrlab metadata"):
        OnnxPredictor(tmp_path / "bare.onnx")


def test_cli_export_fixed_batch_and_opset(informative_model, tmp_path):
    from typer.testing import CliRunner

    from cxrlab.cli import app

    ckpt = save_classifier(informative_model("seed-cnn", CLASSES, 32), tmp_path / "m.ckpt")
    out = tmp_path / "exports" / "m.onnx"
    args = ["export", str(ckpt), "--onnx", str(out), "--no-dynamic-batch", "--opset", "18"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "fixed batch" in result.output and "opset 18" in result.output
    assert not list(out.parent.glob("*.tmp"))
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    p_torch = TorchPredictor.from_checkpoint(ckpt, device="cpu").predict_proba(x)
    np.testing.assert_allclose(OnnxPredictor(out).predict_proba(x), p_torch, atol=1e-4, rtol=0)
