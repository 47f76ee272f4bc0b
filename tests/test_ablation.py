"""The preprocessing ablation: variants share the test set, each run records its preprocessing,
McNemar against none; bad variants are named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxrlab.config import load_config
from cxrlab.errors import ConfigError
from cxrlab.training.ablation import run_ablation, variant_configs, variant_minus_reference


def _base(data, tmp_path):
    return load_config(
        data=data, out=tmp_path / "x", model="small-cnn", image_size=32, epochs=1,
        batch_size=16, cache_dir=tmp_path / "cache", progress=False, seed=0,
    )  # fmt: skip


def test_variant_errors(synth_dataset, tmp_path):
    base = _base(synth_dataset, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown variant 'clache'.*Did you mean 'clahe'"):
        variant_configs(base, ["none", "clache"], tmp_path, None)
    with pytest.raises(ConfigError, match=r"lungs-crop needs --segmenter"):
        variant_configs(base, ["none", "lungs-crop"], tmp_path, None)
    with pytest.raises(ConfigError, match=r"must include none"):
        variant_configs(base, ["he"], tmp_path, None)
    cfgs = variant_configs(base, ["none", "he"], tmp_path, None)
    assert cfgs["he"].preprocess.method == "he" and cfgs["he"].split.seed == 0


def test_ablation_trains_compares_and_resumes(synth_dataset, tmp_path):
    from cxrlab.models import load_classifier

    base = _base(synth_dataset, tmp_path)
    result = run_ablation(base, out=tmp_path / "abl", variants=["none", "he"], n_boot=50)
    assert result.trained == ["none", "he"]
    rows = {r["variant"]: r for r in result.rows}
    assert rows["he"]["vs_none"]["mcnemar"]["p_value"] <= 1
    assert rows["none"]["n"] == rows["he"]["n"] > 0
    diff = rows["he"]["vs_none"]["accuracy_difference"]  # variant - none, not the reverse
    gap = rows["he"]["accuracy"]["value"] - rows["none"]["accuracy"]["value"]
    assert diff["value"] == pytest.approx(gap)
    assert diff["ci_low"] <= diff["value"] <= diff["ci_high"]
    _, meta = load_classifier(tmp_path / "abl" / "he")
    assert meta.preprocess["method"] == "he"
    text = result.files["md"].read_text()
    assert "| he |" in text and "McNemar" in text
    again = run_ablation(base, out=tmp_path / "abl", variants=["none", "he"], n_boot=50)
    assert again.trained == []
    assert json.loads(again.files["json"].read_text())["rows"][1]["variant"] == "he"


def test_cli_ablate_refuses_unknown_variant(synth_dataset, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlab", "ablate", "--data", str(synth_dataset), "--out",
         str(tmp_path / "a"), "--variants", "none,gama"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "'gamma'" in proc.stdout + proc.stderr


def test_difference_is_variant_minus_none():
    diff = {"value": -0.02, "ci_low": -0.05, "ci_high": 0.01}
    pair = {"run_a": "none", "run_b": "he", "difference": {"accuracy": diff}}
    assert variant_minus_reference(pair, "he", "accuracy") == {
        "value": 0.02, "ci_low": -0.01, "ci_high": 0.05}  # fmt: skip
    flipped = {**pair, "run_a": "he", "run_b": "none"}
    assert variant_minus_reference(flipped, "he", "accuracy") == pair["difference"]["accuracy"]
