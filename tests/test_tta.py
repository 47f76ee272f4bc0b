"""Test-time augmentation: N = 1 is plain prediction, mild views, every back-end, recorded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cxrlab.errors import ConfigError
from cxrlab.inference.predictor import TorchPredictor
from cxrlab.inference.tta import MAX_TTA, TRANSFORMS, TTAPredictor, describe_tta, tta_transforms

CLASSES = ("COVID", "Normal", "Viral Pneumonia")


def _images(n=5, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def predictor(informative_model):
    return TorchPredictor(informative_model("small-cnn", CLASSES, 32), device="cpu")


def test_one_view_is_plain_prediction(predictor):
    images = _images()
    plain = predictor.predict_images(images)[0]
    assert np.array_equal(TTAPredictor(predictor, 1).predict_images(images)[0], plain)
    x = images[:, None].astype(np.float32) / 255
    assert np.array_equal(TTAPredictor(predictor, 1).predict_proba(x), predictor.predict_proba(x))


def test_more_views_differ_and_stay_probabilities(predictor):
    images = _images()
    plain = predictor.predict_images(images)[0]
    for n in (2, 3, MAX_TTA):
        probs = TTAPredictor(predictor, n).predict_images(images)[0]
        assert probs.shape == plain.shape and probs.dtype == np.float64
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        assert np.abs(probs - plain).max() > 1e-6
    views = [predictor.predict_images(t.apply(images))[0] for t in TRANSFORMS[:3]]
    np.testing.assert_allclose(
        TTAPredictor(predictor, 3).predict_images(images)[0], np.mean(views, axis=0), atol=1e-12
    )


def test_views_are_mild_and_never_flip():
    assert TRANSFORMS[0].is_identity and describe_tta(1) == ["identity"]
    assert len({(t.angle, t.scale, t.dx, t.dy) for t in TRANSFORMS}) == len(TRANSFORMS)
    # Left half bright, right half dark, with a bright block at the top: a flip or a quarter turn
    # would move them; a view of a few degrees / percent keeps them where they were.
    image = np.zeros((1, 64, 64), dtype=np.uint8)
    image[:, :, :32] = 200
    image[:, :8, 40:56] = 255
    for t in TRANSFORMS:
        assert abs(t.angle) <= 5 and 0.95 <= t.scale <= 1.05
        assert max(abs(t.dx), abs(t.dy)) <= 0.02
        out = t.apply(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert out[0, 16:48, :24].mean() > 150 and out[0, 16:48, 40:].mean() < 50
        assert out[0, :6, 42:54].mean() > out[0, -6:, 42:54].mean() + 100
        f = t.apply(image.astype(np.float32) / 255)
        assert f.dtype == np.float32 and f.shape == image.shape


@pytest.mark.parametrize("bad", [0, -1, MAX_TTA + 1, True, 2.5])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ConfigError, match="--tta"):
        tta_transforms(bad)


def test_tta_over_onnx_imports_no_torch(informative_model, tmp_path):
    from cxrlab.inference.export import export_onnx

    path = export_onnx(informative_model("small-cnn", CLASSES, 32), tmp_path / "m.onnx").path
    code = (
        "import sys, numpy as np;"
        "from cxrlab.inference.predictor import load_predictor;"
        "from cxrlab.inference.tta import TTAPredictor;"
        f"p = TTAPredictor(load_predictor({str(path)!r}), 4);"
        "probs = p.predict_images(np.full((2, 32, 32), 90, np.uint8))[0];"
        "print(round(float(probs.sum()), 6), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    assert out.stdout.split() == ["2.0", "False"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from cxrlab.config import load_config
    from cxrlab.data.synth import synthesize
    from cxrlab.training import train

    tmp = tmp_path_factory.mktemp("tta")
    data = synthesize(tmp / "data", per_class=8, size=64, seed=0)
    cfg = load_config(
        data=data, out=tmp / "run", model="small-cnn", image_size=32, epochs=2, batch_size=8,
        cache_dir=tmp / "cache", progress=False, seed=0,
    )  # fmt: skip
    return train(cfg).run_dir


def test_predict_split_and_evaluate_record_tta(run_dir):
    from cxrlab.evaluation import evaluate_run
    from cxrlab.inference.split import predict_split
    from cxrlab.rundir import RunDir

    plain = predict_split(run_dir, "test")
    assert predict_split(run_dir, "test", tta=1).equals(plain)
    three = predict_split(run_dir, "test", tta=3)
    classes = RunDir(run_dir).read_classes()
    assert list(three["path"]) == list(plain["path"])
    assert np.abs(three[classes].to_numpy() - plain[classes].to_numpy()).max() > 1e-6

    run = RunDir(run_dir)
    metrics = evaluate_run(run_dir, make_figures=False, tta=3).metrics
    assert metrics["tta"] == 3 and metrics["tta_transforms"][0] == "identity"
    assert json.loads(run.predictions_tta.read_text()) == {"val": 3, "test": 3}
    import pandas as pd

    saved = pd.read_csv(run.predictions("test"))
    np.testing.assert_allclose(saved[classes].to_numpy(), three[classes].to_numpy(), atol=1e-7)
    # Back to plain: the TTA predictions are recomputed, not reused.
    assert evaluate_run(run_dir, make_figures=False).metrics["tta"] == 1
    assert json.loads(run.predictions_tta.read_text()) == {"val": 1, "test": 1}
    saved = pd.read_csv(run.predictions("test"))
    np.testing.assert_allclose(saved[classes].to_numpy(), plain[classes].to_numpy(), atol=1e-7)
