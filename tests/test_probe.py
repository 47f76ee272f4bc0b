"""Shortcut probes: hand-computed scores and rules, the pure probes on in-memory models with known
behaviour, probe_run and ``cxrlab probe`` on a saved checkpoint, and (slow) models really trained
on synthetic data with and without a planted shortcut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cxrlab.errors import DataError
from cxrlab.evaluation.intervals import proportion_interval
from cxrlab.explain.probe import probe_images, probe_run
from cxrlab.explain.probes import (
    OCCLUSIONS,
    chance_levels,
    classification_scores,
    lung_fields,
    occluded_images,
    occlusion_probes,
    source_probe,
)
from cxrlab.explain.regions import border_frame, central_lung_region, load_mask
from cxrlab.explain.shortcut_rules import THRESHOLDS, shortcut_rules
from cxrlab.models import CxrClassifier, ModelMeta, save_classifier
from cxrlab.models import registry as model_registry
from cxrlab.rundir import RunDir

SIZE = 64
CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]

# ---------------------------------------------------------------------------------------------
# Hand-computed pieces


def test_classification_scores_and_chance_hand_computed():
    y_true = np.array(["A", "A", "A", "B"])
    y_pred = np.array(["A", "A", "B", "B"])
    s = classification_scores(y_true, y_pred, labels=["A", "B", "C"])
    assert s["accuracy"] == 0.75
    # A: P 1, R 2/3 -> 0.8; B: P 1/2, R 1 -> 2/3; C never occurs -> 0
    assert s["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert s["predicted_fraction"] == {"A": 0.5, "B": 0.5, "C": 0.0}
    c = chance_levels(y_true, labels=["A", "B"])
    assert c["uniform"] == 0.5 and c["majority"] == 0.75 and c["majority_class"] == "A"
    assert c["macro_f1_majority"] == pytest.approx(2 * 0.75 / 1.75 / 2)
    assert c["macro_f1_uniform"] == pytest.approx((2 * 0.75 / 2.5 + 2 * 0.25 / 1.5) / 2)


def test_probe_accuracy_interval_is_the_one_metrics_json_uses():
    """One interval method per metric: the probe's accuracy CI is metrics.json's Clopper-Pearson."""
    y_true = np.array(["A"] * 8 + ["B"] * 2)
    y_pred = np.array(["A"] * 10)
    scores = classification_scores(y_true, y_pred, labels=["A", "B"])
    lo, hi = scores["accuracy_ci95"]
    assert (lo, hi) == proportion_interval(8, 10)
    assert lo == pytest.approx(0.4439, abs=1e-4) and hi == pytest.approx(0.9748, abs=1e-4)
    assert scores["accuracy_ci_method"] == "Clopper-Pearson"
    assert proportion_interval(5, 5)[0] < 1.0  # never zero width at 100%


def test_shortcut_rules_thresholds():
    kw = dict(chance=0.25, border_only_accuracy=0.25)
    # Clean 0.95: lungs-removed threshold is max(0.50, 0.25 + 0.5 * 0.70) = 0.60.
    rules = {
        r["name"]: r for r in shortcut_rules(clean_accuracy=0.95, lungs_removed_accuracy=0.59, **kw)
    }
    assert rules["lungs_removed"]["threshold"] == pytest.approx(0.60)
    assert not rules["lungs_removed"]["triggered"]
    rules = {
        r["name"]: r for r in shortcut_rules(clean_accuracy=0.95, lungs_removed_accuracy=0.61, **kw)
    }
    assert rules["lungs_removed"]["triggered"]
    # A weak model (clean 0.55): the floor chance + 0.25 = 0.50 applies.
    rules = {
        r["name"]: r for r in shortcut_rules(clean_accuracy=0.55, lungs_removed_accuracy=0.45, **kw)
    }
    assert rules["lungs_removed"]["threshold"] == pytest.approx(0.50)
    assert not rules["lungs_removed"]["triggered"]
    rules = {
        r["name"]: r
        for r in shortcut_rules(
            clean_accuracy=0.9, lungs_removed_accuracy=0.3, chance=0.25, border_only_accuracy=0.51
        )
    }
    assert rules["border_only"]["triggered"] and rules["border_only"]["threshold"] == 0.5
    # The source rule needs enough images and beats max(majority, label baseline) + margin.
    src = {
        "status": "ok",
        "n": 40,
        "accuracy": 0.9,
        "majority_rate": 0.4,
        "label_baseline_accuracy": 0.7,
    }
    rules = {
        r["name"]: r
        for r in shortcut_rules(clean_accuracy=0.9, lungs_removed_accuracy=0.3, source=src, **kw)
    }
    assert rules["source_identifiable"]["evaluated"] and rules["source_identifiable"]["triggered"]
    assert rules["source_identifiable"]["threshold"] == pytest.approx(0.85)
    src["n"] = THRESHOLDS["source_min_images"] - 1
    rules = {
        r["name"]: r
        for r in shortcut_rules(clean_accuracy=0.9, lungs_removed_accuracy=0.3, source=src, **kw)
    }
    assert not rules["source_identifiable"]["evaluated"]
    # Low lung attention is reported but never sets the flag on its own.
    att = {"overall": {"n": 5, "lung_ratio_mean": 0.1, "lung_area_mean": 0.3}}
    rules = {
        r["name"]: r
        for r in shortcut_rules(clean_accuracy=0.9, lungs_removed_accuracy=0.3, attention=att, **kw)
    }
    assert rules["low_lung_attention"]["triggered"] and not rules["low_lung_attention"]["flags"]


def test_source_probe_separates_encoded_from_unencoded_sources():
    rng = np.random.default_rng(0)
    sources = np.repeat(["s1", "s2", "s3"], 20)
    labels = np.tile(["A", "B"], 30)  # independent of the source
    encoded = np.eye(3)[np.repeat([0, 1, 2], 20)] * 3 + rng.normal(size=(60, 3))
    out = source_probe(np.hstack([encoded, rng.normal(size=(60, 5))]), sources, labels=labels)
    assert out["status"] == "ok" and out["folds"] == 5 and out["n_sources"] == 3
    assert out["accuracy"] > 0.9 and out["majority_rate"] == pytest.approx(1 / 3)
    assert out["label_baseline_accuracy"] < 0.5
    noise = source_probe(rng.normal(size=(60, 8)), sources, labels=labels)
    assert noise["accuracy"] < 0.6
    # Sources that follow the class are predictable from the class alone: the label baseline.
    confounded = source_probe(
        rng.normal(size=(60, 8)), np.where(labels == "A", "s1", "s2"), labels=labels
    )
    assert confounded["label_baseline_accuracy"] == 1.0
    # Unknown sources and singletons are left out; fewer than two sources is skipped.
    skipped = source_probe(rng.normal(size=(4, 2)), np.array(["", "s1", "s1", "s2"]))
    assert skipped["status"] == "skipped" and skipped["excluded"] == {
        "unknown_source": 1,
        "single_image_sources": 1,
    }


def test_lung_fields_use_the_fallback_where_a_mask_is_missing_or_empty():
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:12, 2:7] = True
    lung, n_masks = lung_fields([mask, None, np.zeros((16, 16), dtype=bool)], 16)
    assert lung.shape == (3, 16, 16) and lung.dtype == bool and n_masks == 1
    assert (lung[0] == mask).all()
    assert (lung[1] == central_lung_region(16)).all() and (lung[2] == central_lung_region(16)).all()


def test_occluded_images_hand_checked():
    images = np.arange(2 * 16 * 16, dtype=np.int64).reshape(2, 16, 16) % 200 + 1
    images = images.astype(np.uint8)  # no zero pixel, so every 0 below was blacked out
    lung = np.zeros((2, 16, 16), dtype=bool)
    lung[0, 4:8, 4:8] = True
    lung[1, 8:12, 8:12] = True
    out = occluded_images(images, lung)
    assert set(out) == set(OCCLUSIONS)
    assert all(x.dtype == np.uint8 and x.shape == images.shape for x in out.values())
    assert (out["lungs_removed"][lung] == 0).all()
    assert (out["lungs_removed"][~lung] == images[~lung]).all()
    assert (out["lungs_only"][lung] == images[lung]).all() and (out["lungs_only"][~lung] == 0).all()
    frame = np.broadcast_to(border_frame(16), images.shape)
    assert (out["border_only"][frame] == images[frame]).all()
    assert (out["border_only"][~frame] == 0).all()


class ConstantNet(nn.Module):
    """Always the same logits (class ``favourite`` wins); features are the image mean twice."""

    def __init__(self, k: int, favourite: int):
        super().__init__()
        self.head = nn.Linear(2, k)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.eye(k)[favourite] * 5)

    def forward(self, x):
        return self.head(x.mean(dim=(1, 2, 3))[:, None].repeat(1, 2))


def _constant_model(favourite: int = 2) -> CxrClassifier:
    meta = ModelMeta(model_name="constant", classes=tuple(CLASSES), image_size=16)
    return CxrClassifier(ConstantNet(len(CLASSES), favourite), meta).eval()


def test_occlusion_probes_of_a_model_that_reads_nothing():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 16, 16), dtype=np.uint8)
    labels = np.array(CLASSES * 2)
    lung = np.broadcast_to(central_lung_region(16), images.shape)
    probes = occlusion_probes(_constant_model(), images, lung, labels, device="cpu")
    assert set(probes) == set(OCCLUSIONS)
    for name, entry in probes.items():
        assert entry["description"] == OCCLUSIONS[name]
        assert entry["n"] == 8 and entry["accuracy"] == 0.25  # 2 of 8 images are "Normal"
        assert entry["predicted_fraction"] == {c: float(c == "Normal") for c in CLASSES}


def test_probe_images_of_a_model_at_chance_says_so():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(8, 16, 16), dtype=np.uint8)
    rep = probe_images(_constant_model(), images, CLASSES * 2, device="cpu")
    assert rep["clean"]["accuracy"] == rep["chance"]["majority"] == 0.25
    assert not rep["shortcut_suspected"]
    assert rep["lung_region"]["source"] == "central_fallback"
    assert "near chance on unmodified images" in rep["summary"]
    assert "Only 8 images" in rep["summary"]
    assert rep["model"] == "constant" and rep["image_size"] == 16 and rep["split"] == "test"


def test_probe_images_checks_its_input():
    images = np.zeros((4, 16, 16), dtype=np.uint8)
    with pytest.raises(DataError, match="3 labels"):
        probe_images(_constant_model(), images, CLASSES[:3], device="cpu")
    with pytest.raises(DataError, match="not classes of the model"):
        probe_images(_constant_model(), images, ["COVID", "Normal", "Normal", "Cat"], device="cpu")
    with pytest.raises(DataError, match="2 masks"):
        probe_images(_constant_model(), images, CLASSES, masks=[None, None], device="cpu")


# ---------------------------------------------------------------------------------------------
# The probes on models whose behaviour is known by construction


class RegionLinear(nn.Module):
    """Logistic regression on the pixels of one fixed region: it sees nothing else.

    ``gate`` outputs ``region * (x + 1)`` (positive inside the region, 0 outside), the CAM layer.
    The region is a buffer, so a saved checkpoint carries it.
    """

    def __init__(self, region: np.ndarray, num_classes: int):
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32))[None, None])
        self.gate = _Gate()
        self.head = nn.Linear(region.size, num_classes)

    def forward(self, x):
        return self.head(self.gate(x, self.region).flatten(1))


class _Gate(nn.Module):
    def forward(self, x, region):
        return region * (x + 1.0)


def _dataset_arrays(dataset: Path):
    """Paths, labels, (N, S, S) bool masks and (N, S, S) uint8 images of a synthetic dataset."""
    from cxrlab.data.images import load_for_model

    paths, labels, masks = [], [], []
    for c in CLASSES:
        for p in sorted((dataset / c / "images").glob("*.png")):
            paths.append(p)
            labels.append(c)
            masks.append(load_mask(dataset / c / "masks" / p.name, SIZE))
    images = np.stack([load_for_model(p, SIZE) for p in paths])
    return paths, np.array(labels), np.stack(masks), images


def _sources(labels) -> list[str]:
    """Three sources per class (class-specific: the label baseline explains them)."""
    return [f"src-{lab}-{i % 3}" for i, lab in enumerate(labels)]


def _region_model(images, labels, region) -> CxrClassifier:
    """A :class:`RegionLinear` fitted on ``region`` of the images.

    Every class's weights get the same positive offset so each Grad-CAM weight is positive
    (adding the same value to every logit changes no prediction).
    """
    from sklearn.linear_model import LogisticRegression

    feats = (region[None] * (images.astype(np.float32) / 255 + 1.0)).reshape(len(images), -1)
    lr = LogisticRegression(C=1e4, max_iter=5000).fit(feats, labels)
    order = [list(lr.classes_).index(c) for c in CLASSES]
    coef, intercept = lr.coef_[order], lr.intercept_[order]
    net = RegionLinear(region, len(CLASSES))
    with torch.no_grad():
        offset = max(0.0, -float(coef[:, region.ravel()].mean(axis=1).min())) + 1.0
        net.head.weight.copy_(torch.from_numpy((coef + offset * region.ravel()).astype(np.float32)))
        net.head.bias.copy_(torch.from_numpy(intercept.astype(np.float32)))
    meta = ModelMeta(
        model_name="region-linear",
        classes=tuple(CLASSES),
        image_size=SIZE,
        cam_layer="network.gate",
    )
    return CxrClassifier(net, meta).eval()


def test_probe_flags_a_model_that_reads_the_border(synth_shortcut_dataset):
    paths, labels, masks, images = _dataset_arrays(synth_shortcut_dataset)
    model = _region_model(images, labels, border_frame(SIZE))
    rep = probe_images(
        model, images, labels, masks=list(masks), sources=_sources(labels), paths=paths,
        device="cpu",
    )  # fmt: skip
    assert rep["chance"]["majority"] == 0.25 and rep["n_images"] == 24
    assert rep["clean"]["accuracy"] == 1.0
    # The border band and marker are outside the lungs: blacking the lungs out changes nothing.
    assert rep["probes"]["lungs_removed"]["accuracy"] == 1.0
    assert rep["probes"]["border_only"]["accuracy"] == 1.0
    assert rep["lung_region"]["source"] == "masks" and rep["lung_region"]["n_masks"] == 24
    assert rep["shortcut_suspected"]
    fired = {r["name"] for r in rep["rules"] if r["triggered"]}
    assert {"lungs_removed", "border_only", "low_lung_attention"} <= fired
    # The CAM lies in the frame, outside every lung: attention ratio 0, pointing game missed.
    assert rep["lung_attention"]["overall"]["lung_ratio_mean"] == pytest.approx(0.0, abs=1e-6)
    assert rep["lung_attention"]["overall"]["pointing_rate"] == 0.0
    assert "Shortcut suspected" in rep["summary"]
    assert rep["thresholds"] == THRESHOLDS


def test_probe_clears_a_model_that_reads_only_the_lungs(synth_dataset):
    paths, labels, masks, images = _dataset_arrays(synth_dataset)
    core = masks.all(axis=0)  # lung in every image: blacked out whatever the image
    assert core.sum() > 50
    model = _region_model(images, labels, core)
    rep = probe_images(
        model, images, labels, masks=list(masks), sources=_sources(labels), paths=paths,
        device="cpu",
    )  # fmt: skip
    assert rep["clean"]["accuracy"] == 1.0
    assert rep["probes"]["lungs_only"]["accuracy"] == 1.0
    # Without its region the model sees a constant input: one class for all, i.e. chance.
    assert rep["probes"]["lungs_removed"]["accuracy"] == 0.25
    assert max(rep["probes"]["lungs_removed"]["predicted_fraction"].values()) == 1.0
    assert rep["probes"]["border_only"]["accuracy"] == 0.25
    assert not rep["shortcut_suspected"]
    assert rep["lung_attention"]["overall"]["lung_ratio_mean"] == pytest.approx(1.0)
    assert rep["lung_attention"]["overall"]["pointing_rate"] == 1.0
    # Sources are class-specific here: the label baseline explains them (24 images: not judged).
    assert rep["source_probe"]["status"] == "ok"
    assert rep["source_probe"]["n_sources"] == 12
    assert "No rule flags a shortcut" in rep["summary"]


def test_probe_without_masks_uses_the_central_fallback(synth_dataset):
    _, labels, masks, images = _dataset_arrays(synth_dataset)
    model = _region_model(images, labels, masks.all(axis=0))
    rep = probe_images(model, images, labels, masks=None, sources=[""] * len(labels), device="cpu")
    assert (
        rep["lung_region"]["source"] == "central_fallback"
        and rep["lung_region"]["n_fallback"] == 24
    )
    assert rep["lung_attention"]["status"] == "skipped"
    assert rep["source_probe"]["status"] == "skipped"
    assert "approximate central lung region" in rep["summary"]
    assert rep["clean"]["accuracy"] == 1.0


# ---------------------------------------------------------------------------------------------
# probe_run and `cxrlab probe` on a run directory holding a saved checkpoint


@pytest.fixture
def region_linear_registered(monkeypatch):
    """``region-linear`` in the model registry for this test, so its checkpoint loads for real."""

    def build(num_classes, *, pretrained=False, in_chans=1, image_size=SIZE):
        return RegionLinear(np.zeros((image_size, image_size), dtype=bool), num_classes)

    spec = model_registry.ModelSpec(
        name="region-linear", builder=build, image_size=SIZE, cam_layer="gate", recipe="seed",
        description="test model: logistic regression on one fixed region",
    )  # fmt: skip
    model_registry.list_models()  # load the real entries first
    monkeypatch.setitem(model_registry._REGISTRY, "region-linear", spec)


def _run_dir(tmp_path: Path, model: CxrClassifier, paths, labels, dataset: Path) -> Path:
    """A run directory with the model's checkpoint and a test split of the dataset's images."""
    run = RunDir(tmp_path / "run")
    save_classifier(model, run.best_checkpoint)
    rows = [
        {"path": str(p), "label": lab, "source": src,
         "mask_path": str(dataset / lab / "masks" / p.name), "sha1": "", "width": SIZE,
         "height": SIZE, "split": "test"}
        for p, lab, src in zip(paths, labels, _sources(labels), strict=True)
    ]  # fmt: skip
    run.write_split(pd.DataFrame(rows))
    return run.path


def test_probe_run_writes_probe_json(synth_shortcut_dataset, tmp_path, region_linear_registered):
    paths, labels, masks, images = _dataset_arrays(synth_shortcut_dataset)
    model = _region_model(images, labels, border_frame(SIZE))
    run = _run_dir(tmp_path, model, paths, labels, synth_shortcut_dataset)
    result = probe_run(run, device="cpu", attention=False)
    rep = json.loads(RunDir(run).probe.read_text())
    assert result.path == RunDir(run).probe
    assert rep == json.loads(json.dumps(result.report))
    assert rep["run_dir"] == str(run) and rep["skipped_images"] == {} and rep["cxrlab_version"]
    assert result.shortcut_suspected and rep["shortcut_suspected"]
    assert result.summary == rep["summary"]
    # The same report as the pure probes give on the same images (the run adds its own fields).
    pure = probe_images(
        model, images, labels, masks=list(masks), sources=_sources(labels), attention=False,
        device="cpu",
    )  # fmt: skip
    assert {k: rep[k] for k in pure} == json.loads(json.dumps(pure))


def test_cli_probe(synth_shortcut_dataset, tmp_path, region_linear_registered):
    from typer.testing import CliRunner

    from cxrlab.cli import app

    paths, labels, _, images = _dataset_arrays(synth_shortcut_dataset)
    model = _region_model(images, labels, border_frame(SIZE))
    run = _run_dir(tmp_path, model, paths, labels, synth_shortcut_dataset)
    res = CliRunner().invoke(app, ["probe", str(run), "--device", "cpu", "--no-attention"])
    assert res.exit_code == 0, res.output
    assert "SHORTCUT SUSPECTED" in res.output and "lungs removed" in res.output
    assert RunDir(run).probe.is_file()
    bad = CliRunner().invoke(app, ["probe", str(run), "--split", "val", "--device", "cpu"])
    assert bad.exit_code != 0 and "splits present: test" in str(bad.exception)


# ---------------------------------------------------------------------------------------------
# Real training (slow): a model trained with the planted shortcut is flagged, one without is not.


@pytest.mark.slow
@pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "clean"])
def test_trained_models_with_and_without_planted_shortcut(tmp_path, shortcut):
    """~5-10 min per case on 2 CPU cores (ResNet-18, 64 px, 240 images, 20 epochs)."""
    from cxrlab.config import load_config
    from cxrlab.data.synth import synthesize
    from cxrlab.training import train

    data = synthesize(tmp_path / "data", per_class=60, size=SIZE, seed=0, shortcut=shortcut)
    config = load_config(
        data=data, out=tmp_path / "run", model="resnet18", image_size=SIZE, epochs=20,
        batch_size=16, seed=0, progress=False, cache_dir=tmp_path / "cache",
    )  # fmt: skip
    run = train(config).run_dir
    # layer3 (4x4 at 64 px) rather than layer4 (2x2): fine enough to tell lungs from borders.
    rep = probe_run(run, cam_layer="network.layer3").report
    chance = rep["chance"]["majority"]
    removed = rep["probes"]["lungs_removed"]["accuracy"]
    att = rep["lung_attention"]["overall"]
    if shortcut:
        assert rep["shortcut_suspected"], rep["summary"]
        assert removed > chance + 0.4, rep["summary"]
        assert rep["probes"]["border_only"]["accuracy"] > chance + 0.4, rep["summary"]
        assert att["lung_ratio_mean"] < att["lung_area_mean"], rep["lung_attention"]
    else:
        assert rep["clean"]["accuracy"] > chance + 0.15, rep["summary"]  # it did learn
        assert not rep["shortcut_suspected"], rep["summary"]
        assert removed < chance + 0.15, rep["summary"]
        assert rep["probes"]["border_only"]["accuracy"] < chance + 0.15, rep["summary"]
