"""Preprocessing: hand-checked enhancements, letterbox and lung crop, the decode path, the cache
key, model metadata (checkpoint and ONNX) and the config/CLI errors."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cxrlab.config import PreprocessConfig, load_config
from cxrlab.data import preprocess as pp
from cxrlab.data.cache import build_cache, cache_key
from cxrlab.data.images import decode_many, load_for_model, read_gray
from cxrlab.errors import ConfigError


def test_histogram_equalisation_two_levels():
    img = np.array([[10, 10], [20, 20]], dtype=np.uint8)
    # cv2: lut = round((cdf - cdf_min) * 255 / (N - cdf_min)); cdf(10) = 2 = cdf_min, cdf(20) = 4.
    np.testing.assert_array_equal(pp.equalize_hist(img), [[0, 0], [255, 255]])


def test_clahe_widens_local_contrast_and_respects_the_clip():
    rng = np.random.default_rng(0)
    img = (100 + rng.integers(0, 8, (64, 64))).astype(np.uint8)  # values 100..107
    strong = pp.clahe(img, clip_limit=40.0, tile_grid=2)
    weak = pp.clahe(img, clip_limit=1.0, tile_grid=2)
    assert np.ptp(strong) > 100 > np.ptp(img)
    assert np.ptp(weak) < np.ptp(strong)
    assert strong.dtype == np.uint8 and strong.shape == img.shape


def test_gamma_by_hand_and_automatic():
    img = np.array([[0, 128, 255]], dtype=np.uint8)
    # 255 * (128/255)**2 = 64.25 -> 64
    np.testing.assert_array_equal(pp.gamma_correct(img, 2.0), [[0, 64, 255]])
    dark = np.full((4, 4), 64, dtype=np.uint8)
    assert pp.auto_gamma(dark) == pytest.approx(math.log(0.5) / math.log(64 / 255))
    assert abs(int(pp.gamma_correct(dark, "auto")[0, 0]) - 128) <= 1
    assert pp.auto_gamma(np.zeros((2, 2), np.uint8)) == 1.0


def test_complement():
    np.testing.assert_array_equal(pp.complement(np.array([[0, 200]], np.uint8)), [[255, 55]])


def test_bcet_maps_min_max_mean_to_target():
    img = np.array([[20, 40, 60, 200]], dtype=np.uint8)
    out = pp.bcet(img).astype(float)
    assert out.min() == 0 and out.max() == 255
    assert out.mean() == pytest.approx(110, abs=1.0)
    flat = np.full((3, 3), 7, np.uint8)
    np.testing.assert_array_equal(pp.bcet(flat), flat)


def test_letterbox_keeps_aspect_and_pads_black():
    wide = np.full((50, 100), 200, dtype=np.uint8)
    out = pp.prepare(wide, 64, PreprocessConfig(resize="letterbox"))
    assert out.shape == (64, 64)
    assert (out[:16] == 0).all() and (out[48:] == 0).all()  # 32 rows of content, centred
    assert (out[16:48] == 200).all()


def test_lung_box_and_crop():
    mask = np.zeros((100, 100), bool)
    mask[10:20, 20:40] = True
    assert pp.lung_box(mask, 0.1) == (9, 21, 18, 42)
    assert pp.lung_box(np.zeros((5, 5), bool)) is None
    img = np.zeros((100, 100), np.uint8)
    img[10:20, 20:40] = 255
    cfg = PreprocessConfig(lungs="crop", lung_margin=0.0, segmenter="x")
    out = pp.prepare(img, 16, cfg, lung_mask=mask)
    assert (out == 255).all()  # the crop is exactly the lung box
    masked = pp.prepare(np.full((100, 100), 90, np.uint8), 100,
                        PreprocessConfig(lungs="mask", segmenter="x"), lung_mask=mask)  # fmt: skip
    assert masked[15, 30] == 90 and masked[50, 50] == 0


def test_config_names_and_errors():
    c = load_config(data="d", out="o", preprocess="CLAHE")
    assert c.preprocess.method == "clahe"
    with pytest.raises(ConfigError, match=r"unknown preprocessing 'clahee'.*Did you mean 'clahe'"):
        load_config(data="d", out="o", preprocess="clahee")
    with pytest.raises(ConfigError, match=r"clahe: unknown option.*preprocess: clahe"):
        load_config(data="d", out="o", clahe=True)
    with pytest.raises(ConfigError, match=r"lungs: crop needs a lung segmenter.*--segmenter"):
        load_config(data="d", out="o", preprocess={"lungs": "crop"})
    with pytest.raises(ConfigError, match=r"preprocess.clip_limt: unknown option.*'clip_limit'"):
        load_config(data="d", out="o", preprocess={"method": "clahe", "clip_limt": 3})


def test_decode_path_and_cache_key(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(40, 90, (48, 40), dtype=np.uint8)).save(p)
        paths.append(p)
    cfg = PreprocessConfig(method="he")
    one = load_for_model(paths[0], 32, cfg)
    np.testing.assert_array_equal(one, pp.prepare(read_gray(paths[0]), 32, cfg))
    assert one.max() == 255  # equalised
    many = decode_many(paths, 32, preprocess=pp.to_metadata(cfg))
    np.testing.assert_array_equal(many.images[0], one)
    plain = decode_many(paths, 32)
    assert not np.array_equal(plain.images, many.images)

    hashes = ["a", "b", "c"]
    assert cache_key(hashes, 32) == cache_key(hashes, 32, PreprocessConfig())  # old keys kept
    assert cache_key(hashes, 32, cfg) != cache_key(hashes, 32)
    assert cache_key(hashes, 32, cfg) != cache_key(hashes, 32, PreprocessConfig(method="clahe"))
    cache = build_cache(paths, hashes, 32, cache_dir=tmp_path / "c", workers=1, preprocess=cfg)
    np.testing.assert_array_equal(cache.read(), many.images)
    sidecar = json.loads(cache.path.with_suffix(".json").read_text())
    assert sidecar["preprocess"]["method"] == "he"


def test_metadata_travels_to_predict_and_onnx(tmp_path, informative_model):
    from cxrlab.inference.export import export_onnx
    from cxrlab.inference.files import predict_files
    from cxrlab.inference.predictor import ONNX_META_PREPROCESS, OnnxPredictor, TorchPredictor
    from cxrlab.models import ModelMeta, load_classifier, save_classifier

    assert (
        ModelMeta.from_dict({"model_name": "m", "classes": ["a"], "image_size": 8}).preprocess == {}
    )
    model = informative_model("small-cnn", ("A", "B"), 32)
    meta = pp.to_metadata(PreprocessConfig(method="gamma", gamma=2.0))
    model.meta = dataclasses.replace(model.meta, preprocess=meta)
    ckpt = save_classifier(model, tmp_path / "m.ckpt")
    loaded, lmeta = load_classifier(ckpt)
    assert lmeta.preprocess["method"] == "gamma"
    assert TorchPredictor(loaded, device="cpu").preprocess["gamma"] == 2.0
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = np.tile(np.linspace(30, 220, 40, dtype=np.uint8), (40, 1))
    Image.fromarray(img).save(folder / "x.png")
    got = predict_files(ckpt, [folder], device="cpu", progress=False)
    x = load_for_model(folder / "x.png", 32, meta)[None]
    want, _ = TorchPredictor(loaded, device="cpu").predict_images(x)
    np.testing.assert_allclose(got[["A", "B"]].to_numpy(float), want, atol=1e-6)
    plain, _ = TorchPredictor(loaded, device="cpu").predict_images(
        load_for_model(folder / "x.png", 32)[None]
    )
    assert np.abs(plain - want).max() > 1e-6  # the gamma changed what the model saw

    result = export_onnx(ckpt, tmp_path / "m.onnx")
    assert json.loads(result.metadata[ONNX_META_PREPROCESS])["method"] == "gamma"
    onnx_pred = OnnxPredictor(result.path)
    assert onnx_pred.preprocess["gamma"] == 2.0
    from_onnx = predict_files(result.path, [folder], progress=False)
    np.testing.assert_allclose(from_onnx[["A", "B"]].to_numpy(float), want, atol=1e-4)


def test_cli_refuses_unknown_preprocessing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlab", "train", "--data", str(tmp_path), "--out",
         str(tmp_path / "run"), "--preprocess", "gama"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "gamma" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_cli_preprocess_figure(tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 50, dtype=np.uint8), (40, 1))).save(img)
    out = tmp_path / "fig.png"
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlab", "preprocess-figure", str(img), "--out", str(out),
         "--size", "32"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and Image.open(out).size[0] > 100


def test_cli_train_with_preprocess_records_it(synth_dataset, tmp_path):
    import yaml

    from cxrlab.models import load_classifier

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlab", "train", "--data", str(synth_dataset), "--out", str(out),
         "--model", "small-cnn", "--image-size", "32", "--epochs", "1", "--preprocess", "clahe",
         "--resize", "letterbox", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())["preprocess"]
    assert saved["method"] == "clahe" and saved["resize"] == "letterbox"
    _, meta = load_classifier(out)
    assert meta.preprocess["method"] == "clahe" and meta.preprocess["resize"] == "letterbox"
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*.json")]
    assert any((s.get("preprocess") or {}).get("method") == "clahe" for s in sidecars)


def test_serve_applies_the_models_preprocessing(tmp_path, informative_model):
    import io

    from fastapi.testclient import TestClient

    from cxrlab.inference.predictor import TorchPredictor
    from cxrlab.models import save_classifier
    from cxrlab.serve.app import create_app

    model = informative_model("small-cnn", ("A", "B"), 32)
    meta = pp.to_metadata(PreprocessConfig(method="he", resize="letterbox"))
    model.meta = dataclasses.replace(model.meta, preprocess=meta)
    ckpt = save_classifier(model, tmp_path / "m.ckpt")
    gray = np.tile(np.linspace(60, 120, 48, dtype=np.uint8), (30, 1))
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    client = TestClient(create_app(ckpt, device="cpu"))
    response = client.post("/api/predict", files={"file": ("x.png", buf.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    got = np.array([response.json()["probabilities"][c] for c in ("A", "B")])
    x = pp.prepare(gray, 32, PreprocessConfig(method="he", resize="letterbox"))[None]
    want, _ = TorchPredictor(model, device="cpu").predict_images(x)
    np.testing.assert_allclose(got, want[0], atol=1e-6)
