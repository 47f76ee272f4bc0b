"""Benchmark scripts' own logic: the plain-recipe cross-check tests on cxrlab's test split."""

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
