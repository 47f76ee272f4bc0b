"""inspect_dataset and the `cxrlab data inspect | split` and `cxrlab synth` commands."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxrlab.cli import app, main
from cxrlab.data.inspect import SUMMARY_COLUMNS, inspect_dataset
from cxrlab.errors import DataError
from cxrlab.rundir import split_fingerprint as fingerprint


@pytest.fixture
def messy(synth_dataset, tmp_path):
    """A copy of the synthetic dataset with one problem of several kinds."""
    root = tmp_path / "messy"
    shutil.copytree(synth_dataset, root)
    covid = root / "COVID" / "images"
    data = (covid / "COVID-2.png").read_bytes()
    (covid / "COVID-2.png").write_bytes(data[: len(data) // 2])  # truncated
    shutil.copy(covid / "COVID-3.png", root / "Normal" / "images" / "dup.png")  # exact duplicate
    (covid / "notes.txt").write_text("x")  # non-image file
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(root / "COVID" / "masks" / "ghost.png")
    Image.fromarray(np.full((64, 32), 255, np.uint8)).save(
        root / "Normal" / "masks" / "Normal-1.png"
    )
    return root


def test_summary_of_a_clean_dataset(synth_dataset):
    report = inspect_dataset(synth_dataset)
    assert report.classes == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert report.problems == [] and report.problem_counts() == {}
    summary = report.summary
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert list(summary.index) == [*report.classes, "total"]
    row = summary.loc["COVID"]
    assert (row["images"], row["masks"], row["sources"]) == (6, 6, 3)
    assert row["sizes"] == "64x64 x 6" and row["modes"] == "L x 6"
    assert row["mask_sizes"] == "64x64 x 6" and row["layout"] == "current"
    total = summary.loc["total"]
    assert (total["images"], total["masks"], total["sources"]) == (24, 24, 12)
    assert report.duplicate_groups() == [] and report.near_duplicate_groups() == []


def test_problems_of_a_messy_dataset(messy):
    report = inspect_dataset(messy)
    assert report.problem_counts() == {
        "truncated": 1,
        "not_image": 1,
        "duplicate": 1,
        "mask_without_image": 1,
        "size_mismatch": 1,
        "not_in_metadata": 1,  # dup.png is not in Normal.metadata.xlsx
    }
    assert report.summary.at["COVID", "images"] == 5  # the truncated one is left out
    assert report.summary.at["Normal", "images"] == 7
    assert report.summary.at["Normal", "masks"] == 5  # Normal-1's mask has the wrong shape
    groups = report.duplicate_groups()
    assert len(groups) == 1 and sorted(p.rsplit("/", 1)[-1] for p in groups[0]) == [
        "COVID-3.png",
        "dup.png",
    ]
    frame = report.problems_frame()
    assert list(frame.columns) == ["path", "kind", "detail"] and len(frame) == 6
    # Header-only inspection cannot see the truncation (perceptual hashing would decode).
    fast = inspect_dataset(messy, verify=False, near_duplicates=False)
    assert "truncated" not in fast.problem_counts()


def test_invalid_folder_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        inspect_dataset(tmp_path / "missing")


def test_cli_inspect_reports_problems_with_exit_code_0(messy, tmp_path):
    out_csv = tmp_path / "reports" / "problems.csv"
    result = CliRunner().invoke(
        app, ["data", "inspect", str(messy), "--problems-csv", str(out_csv)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    for text in (
        "COVID",
        "Viral Pneumonia",
        "64x64",
        "Truncated",
        "Exact duplicates",
        "dup.png",
    ):
        assert text in result.output
    problems = pd.read_csv(out_csv)
    assert sorted(problems["kind"]) == sorted(
        [
            "truncated",
            "not_image",
            "duplicate",
            "mask_without_image",
            "size_mismatch",
            "not_in_metadata",
        ]
    )


def test_cli_refuses_to_write_inside_the_dataset(messy):
    result = CliRunner().invoke(
        app, ["data", "inspect", str(messy), "--problems-csv", str(messy / "p.csv")]
    )
    assert isinstance(result.exception, DataError)
    assert not (messy / "p.csv").exists()


def test_cli_invalid_folder_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cxrlab", "data", "inspect", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_synth_then_split(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    result = runner.invoke(
        app, ["synth", str(out), "--per-class", "5", "--size", "32", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    images = sorted((out / "COVID-19_Radiography_Dataset" / "COVID" / "images").iterdir())
    assert [p.name for p in images] == [f"COVID-{i}.png" for i in range(1, 6)]
    again = runner.invoke(app, ["synth", str(out), "--per-class", "5"])
    assert isinstance(again.exception, DataError)  # not empty, no --overwrite

    split_csv = tmp_path / "split.csv"
    result = runner.invoke(
        app, ["data", "split", str(out), "--out", str(split_csv), "--method", "source"]
    )
    assert result.exit_code == 0, result.output
    split = pd.read_csv(split_csv, keep_default_na=False)
    assert len(split) == 20 and set(split["split"]) == {"train", "val", "test"}
    assert fingerprint(split)["sha1"] in result.output
    folds = runner.invoke(
        app, ["data", "split", str(out), "-o", str(tmp_path / "f.csv"), "--folds", "5"]
    )
    assert folds.exit_code == 0, folds.output
    assert "fold" in pd.read_csv(tmp_path / "f.csv").columns
