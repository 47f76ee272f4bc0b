"""One predictor: a run's saved predictions equal ``cxrlab predict`` on the same files.

``predictions/test.csv`` (written by ``cxrlab evaluate`` from the decode cache) and ``cxrlab predict
RUN <the test files>`` (decoded file by file) go through one forward pass and one precision policy,
so on the CPU they agree within 1e-6 per probability; the exported ONNX file within 1e-4.
"""

import numpy as np
import pandas as pd
import pytest

from cxrlab.config import load_config
from cxrlab.evaluation import evaluate_run
from cxrlab.inference.export import export_onnx
from cxrlab.inference.predictor import TorchPredictor, load_predictor
from cxrlab.models import load_classifier
from cxrlab.rundir import RunDir
from cxrlab.training import train


@pytest.fixture(scope="module")
def evaluated_run(synth_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    cfg = load_config(
        data=synth_dataset, out=tmp / "run", model="small-cnn", image_size=32, epochs=2,
        batch_size=8, cache_dir=tmp / "cache", progress=False, seed=0,
    )  # fmt: skip
    run = RunDir(train(cfg).run_dir)
    evaluate_run(run.path, n_boot=20, make_figures=False)
    return run, tmp


def test_saved_predictions_equal_cxrlab_predict(evaluated_run, cxrlab_cli):
    run, tmp = evaluated_run
    saved = pd.read_csv(run.predictions("test"))
    classes = run.read_classes()
    out = tmp / "predict.csv"
    done = cxrlab_cli("predict", run.path, *saved["path"], "--out", out)
    assert done.returncode == 0, done.stderr
    fresh = pd.read_csv(out, keep_default_na=False).set_index("path").loc[saved["path"]]
    assert (fresh["error"] == "").all()
    diff = np.abs(fresh[classes].to_numpy(float) - saved[classes].to_numpy(float)).max()
    assert diff <= 1e-6, diff
    assert fresh["predicted"].tolist() == saved["predicted"].tolist()


def test_onnx_predictions_agree_within_1e_4(evaluated_run, cxrlab_cli):
    run, tmp = evaluated_run
    saved = pd.read_csv(run.predictions("test"))
    classes = run.read_classes()
    onnx_file = export_onnx(run.path, tmp / "model.onnx").path
    out = tmp / "predict-onnx.csv"
    done = cxrlab_cli("predict", onnx_file, *saved["path"], "--out", out)
    assert done.returncode == 0, done.stderr
    fresh = pd.read_csv(out, keep_default_na=False).set_index("path").loc[saved["path"]]
    diff = np.abs(fresh[classes].to_numpy(float) - saved[classes].to_numpy(float)).max()
    assert diff <= 1e-4, diff


def test_batch_size_does_not_change_probabilities(evaluated_run):
    run, _ = evaluated_run
    model, meta = load_classifier(run.path)
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32), dtype=np.uint8)
    predictor = TorchPredictor(model, device="cpu")
    one, _ = predictor.predict_images(images, batch_size=1)
    all_at_once, feats = predictor.predict_images(images, batch_size=7, features=True)
    np.testing.assert_allclose(one, all_at_once, atol=1e-6, rtol=0)
    np.testing.assert_allclose(one.sum(axis=1), 1.0, atol=1e-12)
    assert one.dtype == np.float64 and feats.dtype == np.float32 and len(feats) == 7


def test_onnx_predictor_refuses_features(evaluated_run):
    run, tmp = evaluated_run
    onnx_file = tmp / "model.onnx"
    if not onnx_file.exists():
        export_onnx(run.path, onnx_file)
    predictor = load_predictor(onnx_file)
    images = np.zeros((2, 32, 32), dtype=np.uint8)
    assert predictor.predict_images(images)[0].shape == (2, 4)
    with pytest.raises(Exception, match="penultimate features"):
        predictor.predict_images(images, features=True)
