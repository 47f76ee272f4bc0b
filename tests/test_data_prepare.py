"""The one scan -> split path: train and `data split` agree, skipped files, split seed and csv."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cxrlab.cli import app
from cxrlab.config import SplitConfig, load_config
from cxrlab.data.prepare import load_manifest, prepare_split
from cxrlab.errors import ConfigError, DataError
from cxrlab.rundir import RunDir, read_split_csv, split_fingerprint
from cxrlab.training import train

TRUNCATED = "COVID-2.png"


@pytest.fixture
def broken(synth_dataset, tmp_path) -> Path:
    """A copy of the synthetic dataset whose COVID-2.png is cut in half (header intact)."""
    root = tmp_path / "broken" / "COVID-19_Radiography_Dataset"
    shutil.copytree(synth_dataset, root)
    png = root / "COVID" / "images" / TRUNCATED
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    return root


#: A seconds-long training: the small demo CNN, 32 px, one epoch.
QUICK = {"model": "small-cnn", "image_size": 32, "epochs": 1, "batch_size": 8, "progress": False}


def _config(data, out, tmp_path, **kw):
    return load_config(data=data, out=out, cache_dir=tmp_path / "cache", **{**QUICK, **kw})


def _assignment(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    rows = zip(frame["path"], frame["label"], frame["split"], strict=True)
    return {path: (label, split) for path, label, split in rows}


# ------------------------------------------------------------------ train and data split agree


def test_data_split_and_train_make_the_same_split_with_a_broken_file(broken, tmp_path, caplog):
    # The CLI routes warnings to logging (logging.captureWarnings), hence caplog.
    runner = CliRunner()
    manifest = tmp_path / "out" / "s.csv"
    result = runner.invoke(app, ["data", "split", str(broken), "--seed", "3", "-o", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "1 undecodable image(s) skipped" in result.output
    assert re.search(r"Skipped 1 undecodable image file\(s\).*s\.skipped\.csv", caplog.text)
    caplog.clear()
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--data", str(broken), "--seed", "3", "--out", str(run), "--model",
         "small-cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
         "--cache-dir", str(tmp_path / "cache"), "--no-evaluate"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"Skipped 1 undecodable.*run/skipped\.csv", caplog.text)

    split = read_split_csv(manifest)
    run_split = RunDir(run).read_split()
    assert _assignment(split) == _assignment(run_split)
    assert len(split) == 23 and not split["path"].str.endswith(TRUNCATED).any()
    for listed in (manifest.with_name("s.skipped.csv"), run / "skipped.csv"):
        skipped = pd.read_csv(listed, keep_default_na=False)
        assert [Path(p).name for p in skipped["path"]] == [TRUNCATED]
        assert skipped["kind"].tolist() == ["truncated"] and skipped["reason"].iat[0]


def test_train_split_csv_uses_exactly_that_manifest(synth_dataset, tmp_path):
    """`data split -o s.csv` then `train --split-csv s.csv --seed 7` trains on s.csv's split."""
    runner = CliRunner()
    manifest = tmp_path / "s.csv"
    result = runner.invoke(
        app, ["data", "split", str(synth_dataset), "--seed", "3", "-o", str(manifest)]
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--data", str(synth_dataset), "--split-csv", str(manifest), "--seed", "7",
         "--out", str(run), "--model", "small-cnn", "--image-size", "32", "--epochs", "1",
         "--cache-dir", str(tmp_path / "cache"), "--no-evaluate"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _assignment(RunDir(run).read_split()) == _assignment(read_split_csv(manifest))
    assert RunDir(run).fingerprint()["sha1"] == split_fingerprint(read_split_csv(manifest))["sha1"]
    # With its own seed 7 the run would have split differently.
    assert _assignment(prepare_split(synth_dataset, seed=7).manifest) != _assignment(
        read_split_csv(manifest)
    )


def test_decode_check_runs_without_near_duplicates_and_strict_refuses(broken, tmp_path):
    with pytest.warns(UserWarning, match=TRUNCATED):
        prepared = prepare_split(
            broken, SplitConfig(near_duplicates=False), skipped_csv=tmp_path / "skipped.csv"
        )
    assert prepared.skipped_csv == tmp_path / "skipped.csv"
    assert not prepared.manifest["path"].str.endswith(TRUNCATED).any()
    assert len(prepared.manifest) == 23 and "phash" not in prepared.manifest
    with pytest.raises(DataError, match=TRUNCATED):
        prepare_split(broken, strict=True)
    assert not any(broken.rglob("*.csv"))  # nothing was written inside the dataset


def test_clean_dataset_skips_nothing(synth_dataset, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepared = prepare_split(synth_dataset, skipped_csv=tmp_path / "skipped.csv")
    assert prepared.skipped.empty and prepared.skipped_csv is None
    assert not (tmp_path / "skipped.csv").exists()


# ---------------------------------------------------------------------------- cxrlab data split


def test_data_split_options_and_refusals(synth_dataset, tmp_path):
    runner = CliRunner()
    by = runner.invoke(
        app,
        [
            "data",
            "split",
            str(synth_dataset),
            "--split-by",
            "source",
            "-o",
            str(tmp_path / "a.csv"),
        ],
    )
    old = runner.invoke(
        app,
        ["data", "split", str(synth_dataset), "--method", "source", "-o", str(tmp_path / "b.csv")],
    )
    assert by.exit_code == 0 and old.exit_code == 0, by.output + old.output
    assert "source coverage" in by.output
    a, b = read_split_csv(tmp_path / "a.csv"), read_split_csv(tmp_path / "b.csv")
    assert _assignment(a) == _assignment(b)
    assert "--method" not in runner.invoke(app, ["data", "split", "--help"]).output

    clash = runner.invoke(
        app,
        ["data", "split", str(synth_dataset), "--split-by", "stratified", "--method", "source",
         "-o", str(tmp_path / "c.csv")],
    )  # fmt: skip
    assert isinstance(clash.exception, ConfigError)
    bad = runner.invoke(
        app,
        [
            "data",
            "split",
            str(synth_dataset),
            "--split-by",
            "random",
            "-o",
            str(tmp_path / "d.csv"),
        ],
    )
    assert isinstance(bad.exception, ConfigError) and "method" in str(bad.exception)
    inside = runner.invoke(
        app, ["data", "split", str(synth_dataset), "-o", str(synth_dataset / "COVID" / "s.csv")]
    )
    assert isinstance(inside.exception, DataError) and "--out" in str(inside.exception)
    assert not (synth_dataset / "COVID" / "s.csv").exists()


# ----------------------------------------------------------------------- split seed and csv


def test_split_seed_is_shared_by_training_seeds(synth_dataset, tmp_path):
    splits = []
    for seed in (0, 1):
        cfg = _config(
            synth_dataset, tmp_path / f"run{seed}", tmp_path, seed=seed, split={"seed": 5}
        )
        splits.append(RunDir(train(cfg).run_dir).read_split())
        saved = yaml.safe_load((cfg.out / "config.yaml").read_text())
        assert saved["seed"] == seed and saved["split"]["seed"] == 5
    assert _assignment(splits[0]) == _assignment(splits[1])
    assert _assignment(splits[0]) == _assignment(prepare_split(synth_dataset, seed=5).manifest)
    # Without a split seed the training seed splits, as before.
    assert _assignment(prepare_split(synth_dataset, seed=0).manifest) != _assignment(splits[0])

    # --resume reuses the run's own split.csv, whatever the split options say now.
    from cxrlab.training.train import prepare_data

    resumed = _config(synth_dataset, tmp_path / "run0", tmp_path, resume=True, split={"seed": 11})
    assert _assignment(prepare_data(resumed, 32).split) == _assignment(splits[0])


def test_split_csv_is_the_run_split(synth_dataset, tmp_path):
    manifest = prepare_split(synth_dataset, seed=2).manifest
    # Move one training image to val, so a re-split could not reproduce the file by chance.
    moved = manifest.index[manifest["split"] == "train"][0]
    manifest.loc[moved, "split"] = "val"
    path = tmp_path / "given.csv"
    manifest.drop(columns=["sha1"]).to_csv(path, index=False)  # sha1 is recomputed

    cfg = _config(synth_dataset, tmp_path / "run", tmp_path, split={"csv": str(path)})
    run_split = RunDir(train(cfg).run_dir).read_split()
    assert _assignment(run_split) == _assignment(read_split_csv(path))
    assert run_split["sha1"].tolist() == manifest["sha1"].tolist()


def test_broken_file_in_a_split_csv_follows_the_skipped_policy(synth_dataset, tmp_path):
    data = tmp_path / "data" / "COVID-19_Radiography_Dataset"
    shutil.copytree(synth_dataset, data)
    manifest = prepare_split(data, seed=0).manifest
    path = tmp_path / "given.csv"
    manifest.to_csv(path, index=False)
    broken = Path(manifest.loc[manifest["split"] == "train", "path"].iloc[0])
    broken.write_bytes(broken.read_bytes()[:200])  # changed after the manifest was written

    strict = _config(data, tmp_path / "strict", tmp_path, split={"csv": str(path)}, strict=True)
    with (
        pytest.warns(UserWarning, match="changed since"),
        pytest.raises(DataError, match=broken.name),
    ):
        train(strict)
    cfg = _config(data, tmp_path / "run", tmp_path, split={"csv": str(path)})
    with pytest.warns(UserWarning) as caught:
        run = RunDir(train(cfg).run_dir)
    assert any(f"Skipped 1 undecodable image file(s) in {data}" in str(w.message) for w in caught)
    expected = _assignment(manifest[manifest["path"] != str(broken)])
    assert _assignment(run.read_split()) == expected
    skipped = pd.read_csv(run.path / "skipped.csv", keep_default_na=False)
    assert skipped["path"].tolist() == [str(broken)]


def test_manifest_validation(synth_dataset, tmp_path):
    good = prepare_split(synth_dataset).manifest

    def write(frame, name="m.csv") -> Path:
        frame.to_csv(tmp_path / name, index=False)
        return tmp_path / name

    frame, classes = load_manifest(write(good))
    assert classes == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert _assignment(frame) == _assignment(good)
    with pytest.raises(DataError, match="does not exist"):
        load_manifest(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"m\.csv.*'split'"):
        load_manifest(write(good.drop(columns="split")))
    with pytest.raises(DataError, match="holdout"):
        load_manifest(
            write(good.assign(split=np.where(good["split"] == "test", "holdout", good["split"])))
        )
    with pytest.raises(DataError, match="no 'val' rows"):
        load_manifest(write(good[good["split"] != "val"]))
    with pytest.raises(DataError, match="do not exist"):
        load_manifest(write(good.assign(path=good["path"] + ".gone")))
    with pytest.raises(DataError, match="not among the classes"):
        load_manifest(write(good), classes=["COVID", "Normal"])
    with pytest.raises(DataError, match="empty label"):
        load_manifest(write(good.assign(label="")))
    # Relative paths are relative to the manifest's folder.
    rel = good.assign(path=[os.path.relpath(p, tmp_path) for p in good["path"]])
    frame, _ = load_manifest(write(rel, name="rel.csv"))
    assert frame["path"].tolist() == good["path"].tolist()


def test_cv_uses_one_split_seed_for_every_training_seed(tmp_path, monkeypatch):
    from cxrlab.training import cv

    calls = []
    monkeypatch.setattr("cxrlab.training.train", lambda config, **k: calls.append(config))
    monkeypatch.setattr("cxrlab.evaluation.evaluate.evaluate_run", lambda *a, **k: None)
    # run_cv imports the summary where it needs it
    monkeypatch.setattr("cxrlab.evaluation.cv_summary.summarize_cv", lambda *a, **k: {})
    monkeypatch.setattr("cxrlab.evaluation.cv_summary.write_cv_summary", lambda *a, **k: {})
    (tmp_path / "data").mkdir()
    base = load_config(data=tmp_path / "data", out=tmp_path / "cv", model="small-cnn", seed=4)
    cv.run_cv(base, folds=2, seeds=[0, 1, 2], make_figures=False)
    assert [c.seed for c in calls] == [0, 1, 2, 0, 1, 2]
    assert {c.split.seed for c in calls} == {4}
    calls.clear()
    cv.run_cv(base.model_copy(update={"split": SplitConfig(seed=9)}), folds=2, seeds=2)
    assert {c.split.seed for c in calls} == {9} and {c.split.fold for c in calls} == {0, 1}


# ---------------------------------------------------------------------------------- DICOM


@pytest.fixture
def dicom_dataset(tmp_path, write_dicom) -> Path:
    """Two classes x 8 distinct 12-bit DICOMs (one suffix-less), and one truncated file."""
    root = tmp_path / "dicoms"
    rng = np.random.default_rng(0)
    for cls in ("COVID", "Normal"):
        for i in range(1, 9):
            name = f"{cls}-{i}" if i == 8 else f"{cls}-{i}.dcm"
            write_dicom(root / cls / name, rng.integers(0, 4096, (40, 40), dtype=np.uint16))
    bad = root / "COVID" / "COVID-9.dcm"
    data = write_dicom(bad, rng.integers(0, 4096, (40, 40), dtype=np.uint16)).read_bytes()
    bad.write_bytes(data[: len(data) - 1000])
    return root


def test_dicom_tree_scans_splits_and_trains(dicom_dataset, tmp_path):
    from cxrlab.data.images import load_for_model
    from cxrlab.data.scan import scan_dataset

    scan = scan_dataset(dicom_dataset, verify=True)
    assert scan.classes == ["COVID", "Normal"] and len(scan.index) == 16
    assert set(scan.index["mode"]) == {"DICOM MONOCHROME2 12-bit"}
    assert (scan.index[["width", "height"]] == 40).all().all()
    assert [(Path(p.path).name, p.kind) for p in scan.problems] == [("COVID-9.dcm", "truncated")]

    with pytest.warns(UserWarning, match="COVID-9.dcm"):
        prepared = prepare_split(dicom_dataset, skipped_csv=tmp_path / "skipped.csv")
    assert len(prepared.manifest) == 16
    assert set(prepared.manifest["split"]) == {"train", "val", "test"}

    cfg = _config(dicom_dataset, tmp_path / "run", tmp_path, batch_size=4, seed=1)
    with pytest.warns(UserWarning, match="COVID-9.dcm"):
        result = train(cfg)
    run = RunDir(result.run_dir)
    assert run.is_finished() and run.read_classes() == ["COVID", "Normal"]
    with pytest.warns(UserWarning, match="COVID-9.dcm"):
        again = prepare_split(dicom_dataset, seed=1)
    assert _assignment(run.read_split()) == _assignment(again.manifest)
    # The cache holds what the shared reader gives for each file.
    from cxrlab.data.cache import build_cache

    split = run.read_split()
    cache = build_cache(split["path"], split["sha1"], 32, cache_dir=tmp_path / "cache")
    assert not cache.errors
    np.testing.assert_array_equal(cache.read()[0], load_for_model(split["path"].iat[0], 32))
