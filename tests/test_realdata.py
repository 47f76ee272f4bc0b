"""Real-data smoke test: a few rdb-mini images per class through train -> evaluate."""

import json

import pytest

from cxrlab.config import load_config
from cxrlab.evaluation.evaluate import evaluate_run
from cxrlab.training import train

pytestmark = pytest.mark.realdata


def test_train_and_evaluate_on_rdb_mini(rdb_mini, tmp_path):
    cfg = load_config(
        data=rdb_mini, out=tmp_path / "run", model="seed-cnn", image_size=64, epochs=1,
        limit_per_class=14, cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    result = train(cfg)
    assert result.classes == ["COVID", "Normal", "Viral Pneumonia"]
    evaluation = evaluate_run(result.run_dir, n_boot=1000, make_figures=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["classes"] == result.classes
    assert len(metrics["confusion_matrix"]["counts"]) == 3
    acc = evaluation.metrics["metrics"]["accuracy"]
    assert 0 <= acc["ci_low"] <= acc["value"] <= acc["ci_high"] <= 1
