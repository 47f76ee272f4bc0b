"""Dataset-folder defects as a user meets them: one class, the same image in two classes, many
undecodable files, empty or odd folders; each refused or reported before any training."""

import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cxrlab.config import SplitConfig, load_config
from cxrlab.data.prepare import prepare_split
from cxrlab.errors import DataError


@pytest.fixture
def cxrlab(cxrlab_cli):
    """Run the CLI in a subprocess: ``(exit code, output)``."""

    def run(*args, timeout=300):
        proc = cxrlab_cli(*args, timeout=timeout, columns=160)
        return proc.returncode, " ".join((proc.stdout + proc.stderr).split())

    return run


def _tree(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


# -- one class ------------------------------------------------------------------------------
def test_one_class_is_refused_before_training(tiny_layout):
    root = tiny_layout({"COVID": 8}, masks=False)
    with pytest.raises(DataError, match="at least two classes") as info:
        prepare_split(root, SplitConfig())
    assert "'COVID'" in str(info.value)


def test_one_class_through_train_cli(tiny_layout, tmp_path, cxrlab):
    root = tiny_layout({"Normal": 8}, masks=False)
    out = tmp_path / "run"
    args = ["train", "--data", root, "--out", out, "--model", "small-cnn", "--image-size", "32"]
    code, text = cxrlab(*args, "--epochs", "1", "--cache-dir", tmp_path / "cache")
    assert code == 2, text
    assert "at least two classes" in text and "Traceback" not in text
    assert not out.exists()  # nothing left behind, so the next run starts clean


def test_one_class_split_manifest_is_refused(tiny_layout, tmp_path):
    root = tiny_layout({"COVID": 6, "Normal": 6}, masks=False)
    manifest = prepare_split(root, SplitConfig()).manifest
    one = manifest.assign(label="COVID")
    one.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match="at least two classes"):
        prepare_split(root, SplitConfig(csv=tmp_path / "one.csv"))


# -- the same image in two class folders ------------------------------------------------------
@pytest.fixture
def conflicted(tiny_layout):
    root = tiny_layout({"COVID": 6, "Normal": 6}, masks=False)
    shutil.copy(root / "COVID/images/COVID-1.png", root / "Normal/images/Normal-99.png")
    return root


def test_label_conflict_is_dropped_and_listed(conflicted, tmp_path):
    before = _tree(conflicted)
    with pytest.warns(UserWarning, match="the same image in two classes"):
        prepared = prepare_split(conflicted, SplitConfig(), skipped_csv=tmp_path / "skipped.csv")
    paths = set(prepared.manifest["path"])
    assert str(conflicted / "COVID/images/COVID-1.png") not in paths
    assert str(conflicted / "Normal/images/Normal-99.png") not in paths
    assert len(prepared.manifest) == 13 - 2  # 13 files, both copies out
    skipped = pd.read_csv(tmp_path / "skipped.csv", keep_default_na=False)
    assert set(skipped["kind"]) == {"label_conflict"} and len(skipped) == 2
    assert all("labelled" in r for r in skipped["reason"])
    assert _tree(conflicted) == before  # nothing written into the dataset


def test_label_conflict_with_strict_is_refused(conflicted):
    with pytest.raises(DataError, match="strict mode"):
        prepare_split(conflicted, SplitConfig(), strict=True)


def test_label_conflict_reported_by_data_inspect(conflicted, cxrlab):
    code, text = cxrlab("data", "inspect", conflicted)
    assert code == 0, text
    assert "Label conflicts (the same image in two classes): 2" in text
    assert "COVID-1.png" in text and "Normal-99.png" in text


def test_train_leaves_the_conflict_out_and_says_where(conflicted, tmp_path):
    from cxrlab.training import train

    cfg = load_config(
        data=conflicted, out=tmp_path / "run", model="small-cnn", image_size=32, epochs=1,
        batch_size=4, cache_dir=tmp_path / "cache", progress=False, seed=0,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert any("run/skipped.csv" in str(w.message) for w in caught)
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert not split["path"].str.endswith(("COVID-1.png", "Normal-99.png")).any()
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert sorted(skipped["kind"]) == ["label_conflict", "label_conflict"]


# -- undecodable files: every one named, in one file ------------------------------------------
def test_every_skipped_image_is_in_skipped_csv(tiny_layout, tmp_path):
    root = tiny_layout({"COVID": 6, "Normal": 6}, masks=False)
    broken = [root / "COVID/images" / f"bad-{i}.png" for i in range(5)]
    for path in broken:
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "Normal/images/empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"Skipped 6 undecodable.*and 3 more.*skipped\.csv"):
        prepare_split(root, SplitConfig(), skipped_csv=tmp_path / "skipped.csv")
    skipped = pd.read_csv(tmp_path / "skipped.csv", keep_default_na=False)
    expected = {str(p) for p in broken} | {str(root / "Normal/images/empty.png")}
    assert set(skipped["path"]) == expected
    assert (skipped["reason"] != "").all()


# -- other folder defects ---------------------------------------------------------------------
def test_missing_dataset_folder_is_named(tmp_path, cxrlab):
    code, text = cxrlab("data", "inspect", tmp_path / "nope")
    assert code == 2 and "nope" in text and "Traceback" not in text


def test_folder_without_class_folders_is_explained(tmp_path):
    (tmp_path / "data").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "data" / "loose.png")
    with pytest.raises(DataError):
        prepare_split(tmp_path / "data", SplitConfig())


def test_non_images_and_empty_folders_are_reported_not_fatal(tiny_layout):
    from cxrlab.data.scan import scan_dataset

    root = tiny_layout({"COVID": 3, "Normal": 3}, masks=False)
    (root / "COVID/images/notes.txt").write_text("x")
    (root / "Empty").mkdir()
    result = scan_dataset(root)
    kinds = {p.kind for p in result.problems}
    assert {"not_image", "empty_class"} <= kinds
    assert len(result.index) == 6


# -- run-directory damage -------------------------------------------------------------------
def test_damaged_run_files_are_named(tmp_path):
    from cxrlab.errors import CheckpointError, RunDirError
    from cxrlab.models import load_classifier
    from cxrlab.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("model: [unclosed\n")
    with pytest.raises(RunDirError, match="config.yaml is not valid YAML"):
        run.read_config()
    run.classes_file.write_text("{not json")
    with pytest.raises(RunDirError, match="classes.json is not valid JSON"):
        run.read_classes()
    with pytest.raises(CheckpointError, match="holds no checkpoints/best.ckpt"):
        run.checkpoint()
    run.best_checkpoint.write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="best.ckpt"):
        load_classifier(run.best_checkpoint)


def test_evaluate_a_folder_that_is_not_a_run(tmp_path, cxrlab):
    (tmp_path / "empty").mkdir()
    code, text = cxrlab("evaluate", tmp_path / "empty")
    assert code == 2 and "Traceback" not in text and "empty" in text
