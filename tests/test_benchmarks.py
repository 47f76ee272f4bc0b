"""Benchmark scripts' own logic: the plain-recipe cross-check's split, recipe_cv's scoring."""

import importlib.util
from argparse import Namespace
from pathlib import Path

import pandas as pd

from cxrlab.config import load_config
from cxrlab.training import train

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_recipe_uses_the_split_cxrlab_train_makes(synth_dataset, tmp_path):
    plain = _load_script("plain_recipe")
    seed = 3  # not the default, so a seed that is not passed through would show
    cfg = load_config(
        data=synth_dataset, out=tmp_path / "run", model="resnet18", image_size=32, epochs=1,
        batch_size=8, cache_dir=tmp_path / "cache", progress=False, seed=seed,
    )  # fmt: skip
    run_split = pd.read_csv(train(cfg).run_dir / "split.csv", keep_default_na=False)

    rows, classes = plain.split_for_seed(synth_dataset, seed)

    for name in ("train", "val", "test"):
        expected = run_split[run_split["split"] == name]
        assert sorted(rows[name][0]) == sorted(expected["path"]), name
        got = dict(zip(rows[name][0], rows[name][1], strict=True))
        assert [classes[got[p]] for p in expected["path"]] == expected["label"].tolist()

    args = Namespace(
        data=synth_dataset, image_size=32, epochs=1, batch_size=4, lr=1e-3, weight_decay=0.01,
        workers=0, device="cpu",
    )  # fmt: skip
    accuracy, n = plain.run(args, seed)
    assert n == int((run_split["split"] == "test").sum())
    assert 0.0 <= accuracy <= 1.0


def test_recipe_cv_scores_every_image_once_out_of_fold(synth_dataset, tmp_path):
    """recipe_cv.py end to end: each image predicted once by a model that did not train on it; the
    seed ensemble of a fold is the mean of its seeds' probabilities; per-seed accuracies."""
    import json
    import subprocess
    import sys

    import numpy as np

    out = tmp_path / "rcv"
    cmd = [
        sys.executable, str(REPO_ROOT / "benchmarks" / "recipe_cv.py"),
        "--data", str(synth_dataset), "--out", str(out), "--model", "small-cnn", "--size", "32",
        "--epochs", "1", "--folds", "2",
        "--seeds", "0", "1", "--recipes", "default", "lr1e-3", "--ensemble", "--n-boot", "50",
        "--cache-dir", str(tmp_path / "cache"), "--name", "table",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "table.json").read_text())
    n_images = len(pd.read_csv(next((out / "default").glob("fold0-seed0/split.csv"))))
    rows = {r["variant"]: r for r in record["rows"]}
    assert set(rows) == {
        "default seed 0", "default ensemble of 2", "lr1e-3 seed 0", "lr1e-3 ensemble of 2"
    }  # fmt: skip
    assert all(r["n"] == n_images for r in rows.values())
    assert "mcnemar" in rows["lr1e-3 seed 0"] and "mcnemar" not in rows["default seed 0"]
    assert [r["recipe"] for r in record["per_seed"]] == ["default", "lr1e-3"]
    assert set(record["per_seed"][1]["accuracy"]) == {"0", "1"}

    rcv = _load_script("recipe_cv")
    runs = sorted((out / "default").glob("fold*-seed*"))
    classes = json.loads((runs[0] / "classes.json").read_text())
    paths, labels, ensemble = rcv.oof(runs, [0, 1], classes, 1, tmp_path)
    assert len(set(paths)) == len(paths) == n_images
    singles = [rcv.oof(runs, [s], classes, 1, tmp_path) for s in (0, 1)]
    assert all(np.array_equal(s[0], paths) for s in singles)
    np.testing.assert_allclose(ensemble, (singles[0][2] + singles[1][2]) / 2, atol=1e-12)
