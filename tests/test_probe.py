"""Shortcut probes: hand-computed scores and rules, probe_run on models with known behaviour,
and (slow) models really trained on synthetic data with and without a planted shortcut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cxrlab.explain.probe import (
    THRESHOLDS,
    chance_levels,
    classification_scores,
    probe_run,
    shortcut_rules,
    source_probe,
    wilson_interval,
)
from cxrlab.explain.regions import border_frame, load_mask
from cxrlab.models import CxrClassifier, ModelMeta

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


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert np.isnan(wilson_interval(0, 0)[0])


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


# ---------------------------------------------------------------------------------------------
# probe_run on models whose behaviour is known by construction


class RegionLinear(nn.Module):
    """Logistic regression on the pixels of one fixed region: it sees nothing else.

    ``gate`` outputs ``region * (x + 1)`` (positive inside the region, 0 outside), the CAM layer;
    every class's weights get the same positive offset so each Grad-CAM weight is positive (adding
    the same value to every logit changes no prediction).
    """

    def __init__(self, region: np.ndarray, coef: np.ndarray, intercept: np.ndarray):
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32))[None, None])
        self.gate = _Gate()
        self.head = nn.Linear(region.size, len(coef))
        with torch.no_grad():
            offset = max(0.0, -float(coef[:, region.ravel()].mean(axis=1).min())) + 1.0
            self.head.weight.copy_(
                torch.from_numpy((coef + offset * region.ravel()).astype(np.float32))
            )
            self.head.bias.copy_(torch.from_numpy(intercept.astype(np.float32)))

    def forward(self, x):
        return self.head(self.gate(x, self.region).flatten(1))


class _Gate(nn.Module):
    def forward(self, x, region):
        return region * (x + 1.0)


def _dataset_arrays(dataset: Path):
    from cxrlab.data.images import load_for_model

    paths, labels, masks = [], [], []
    for c in CLASSES:
        for p in sorted((dataset / c / "images").glob("*.png")):
            paths.append(p)
            labels.append(c)
            masks.append(load_mask(dataset / c / "masks" / p.name, SIZE))
    images = np.stack([load_for_model(p, SIZE) for p in paths]).astype(np.float32) / 255
    return paths, np.array(labels), np.stack(masks), images


def _region_model(images, labels, region) -> CxrClassifier:
    from sklearn.linear_model import LogisticRegression

    feats = (region[None] * (images + 1.0)).reshape(len(images), -1)
    lr = LogisticRegression(C=1e4, max_iter=5000).fit(feats, labels)
    order = [list(lr.classes_).index(c) for c in CLASSES]
    net = RegionLinear(region, lr.coef_[order], lr.intercept_[order])
    meta = ModelMeta(
        model_name="region-linear",
        classes=tuple(CLASSES),
        image_size=SIZE,
        cam_layer="network.gate",
    )
    return CxrClassifier(net, meta).eval()


def _run_dir(tmp_path: Path, paths, labels, dataset: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    rows = [
        {"path": str(p), "label": lab, "source": f"src-{lab}-{i % 3}",
         "mask_path": str(dataset / lab / "masks" / p.name), "sha1": "", "width": SIZE,
         "height": SIZE, "split": "test"}
        for i, (p, lab) in enumerate(zip(paths, labels, strict=True))
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(run / "split.csv", index=False)
    return run


def _patch_model(monkeypatch, model):
    monkeypatch.setattr(
        "cxrlab.explain._rundir.load_classifier", lambda *a, **k: (model, model.meta)
    )


def test_probe_flags_a_model_that_reads_the_border(synth_shortcut_dataset, tmp_path, monkeypatch):
    paths, labels, _, images = _dataset_arrays(synth_shortcut_dataset)
    model = _region_model(images, labels, border_frame(SIZE))
    _patch_model(monkeypatch, model)
    run = _run_dir(tmp_path, paths, labels, synth_shortcut_dataset)
    result = probe_run(run, device="cpu")
    rep = json.loads((run / "probe.json").read_text())
    assert rep == json.loads(json.dumps(result.report))
    assert rep["chance"]["majority"] == 0.25 and rep["n_images"] == 24
    assert rep["clean"]["accuracy"] == 1.0
    # The border band and marker are outside the lungs: blacking the lungs out changes nothing.
    assert rep["probes"]["lungs_removed"]["accuracy"] == 1.0
    assert rep["probes"]["border_only"]["accuracy"] == 1.0
    assert rep["lung_region"]["source"] == "masks" and rep["lung_region"]["n_masks"] == 24
    assert result.shortcut_suspected and rep["shortcut_suspected"]
    fired = {r["name"] for r in rep["rules"] if r["triggered"]}
    assert {"lungs_removed", "border_only", "low_lung_attention"} <= fired
    # The CAM lies in the frame, outside every lung: attention ratio 0, pointing game missed.
    assert rep["lung_attention"]["overall"]["lung_ratio_mean"] == pytest.approx(0.0, abs=1e-6)
    assert rep["lung_attention"]["overall"]["pointing_rate"] == 0.0
    assert "Shortcut suspected" in rep["summary"]
    assert rep["thresholds"] == THRESHOLDS


def test_probe_clears_a_model_that_reads_only_the_lungs(synth_dataset, tmp_path, monkeypatch):
    paths, labels, masks, images = _dataset_arrays(synth_dataset)
    core = masks.all(axis=0)  # lung in every image: blacked out whatever the image
    assert core.sum() > 50
    model = _region_model(images, labels, core)
    _patch_model(monkeypatch, model)
    run = _run_dir(tmp_path, paths, labels, synth_dataset)
    rep = probe_run(run, device="cpu").report
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


def test_probe_without_masks_uses_the_central_fallback(synth_dataset, tmp_path, monkeypatch):
    paths, labels, masks, images = _dataset_arrays(synth_dataset)
    model = _region_model(images, labels, masks.all(axis=0))
    _patch_model(monkeypatch, model)
    run = _run_dir(tmp_path, paths, labels, synth_dataset)
    split = pd.read_csv(run / "split.csv")
    split["mask_path"] = ""
    split["source"] = ""
    split.to_csv(run / "split.csv", index=False)
    rep = probe_run(run, device="cpu").report
    assert (
        rep["lung_region"]["source"] == "central_fallback"
        and rep["lung_region"]["n_fallback"] == 24
    )
    assert rep["lung_attention"]["status"] == "skipped"
    assert rep["source_probe"]["status"] == "skipped"
    assert "approximate central lung region" in rep["summary"]
    assert rep["clean"]["accuracy"] == 1.0


def test_cli_probe(synth_shortcut_dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cxrlab.cli import app

    paths, labels, _, images = _dataset_arrays(synth_shortcut_dataset)
    _patch_model(monkeypatch, _region_model(images, labels, border_frame(SIZE)))
    run = _run_dir(tmp_path, paths, labels, synth_shortcut_dataset)
    res = CliRunner().invoke(app, ["probe", str(run), "--device", "cpu", "--no-attention"])
    assert res.exit_code == 0, res.output
    assert "SHORTCUT SUSPECTED" in res.output and "lungs removed" in res.output
    assert (run / "probe.json").is_file()
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
