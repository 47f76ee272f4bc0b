"""cxrlab study: study.yaml validation, resumable runs, failed cells, SLURM via submitit, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxrlab.errors import ConfigError
from cxrlab.rundir import RunDir
from cxrlab.study import LocalLauncher, SlurmLauncher, load_study, make_plan, run_study
from cxrlab.study.report import write_report

TINY = {"image_size": 32, "epochs": 1, "accelerator": "cpu", "decode_workers": 1}


def _write(tmp_path: Path, name="study.yaml", **values) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def _study(tmp_path, data, **extra):
    values = {
        "name": "t", "data": str(data), "models": ["small-cnn", "seed-cnn"], "seeds": [0],
        "folds": 2, "train": TINY, "n_boot": 50,
    }  # fmt: skip
    values.update(extra)
    return load_study(_write(tmp_path, **values))


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"modles": ["small-cnn"]}, "unknown study key. Did you mean 'models'"),
        ({"models": ["resnet-18"]}, "resnet18"),
        ({"train": {"epochz": 3}}, "train.epochz: unknown train option. Did you mean 'epochs'"),
        ({"train": {"seed": 3}}, "set per cell by the study"),
        ({"data": "does/not/exist"}, "does not exist"),
        ({"baseline": "resnet50"}, "baseline: 'resnet50' is not among the models"),
        ({"external": {"x": "nowhere"}}, "external.x: the folder"),
        ({"split": {"fold": 1}}, "split.fold: unknown split option"),
        ({"train": {"epochs": 0}}, "epochs"),
        ({"seeds": [1, 1]}, "distinct"),
    ],
)
def test_bad_study_files_fail_before_training(tmp_path, synth_dataset, change, match):
    values = {"data": str(synth_dataset), "models": ["small-cnn", "seed-cnn"], "train": TINY}
    values.update(change)
    with pytest.raises(ConfigError, match=match):
        load_study(_write(tmp_path, **values))


def test_relative_paths_and_defaults(tmp_path, synth_dataset):
    study = load_study(_write(tmp_path, "grid.yaml", data=str(synth_dataset), models=["small-cnn"]))
    assert study.name == "grid" and study.seeds == [0] and study.baseline_label == "small-cnn"
    (tmp_path / "sub").mkdir()
    (tmp_path / "ds").symlink_to(synth_dataset, target_is_directory=True)
    rel = _write(tmp_path / "sub", data="../ds", models=["small-cnn"])
    assert load_study(rel).data.resolve() == synth_dataset.resolve()


def test_out_folder_of_another_study_or_not_a_study(tmp_path, synth_dataset):
    study = _study(tmp_path, synth_dataset)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no study.json"):
        run_study(study, other, calibrate=False)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "study.json").write_text(json.dumps({"name": "else", "data": str(synth_dataset)}))
    with pytest.raises(ConfigError, match="holds another study"):
        run_study(study, taken, calibrate=False)
    with pytest.raises(Exception, match="never writes into"):
        run_study(study, synth_dataset / "out", calibrate=False)


# ------------------------------------------------------------------------------ running


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, synth_dataset):
    root = tmp_path_factory.mktemp("study")
    study = _study(root, synth_dataset)
    out = root / "out"
    result = run_study(study, out, calibrate=True)
    return root, study, out, result


def test_study_runs_every_cell_and_reports(finished_study):
    root, study, out, result = finished_study
    assert len(result.plan.cells) == 4 and not result.failed
    assert {s["state"] for s in result.statuses.values()} == {"finished"}
    assert result.plan.seconds_per_image  # calibrated
    plan = make_plan(study, out)
    assert [c.state for c in plan.cells] == ["finished"] * 4
    # Every model of one fold shares the split: same test-set fingerprint.
    for fold in (0, 1):
        prints = {RunDir(c.run_dir).fingerprint()["sha1"] for c in plan.cells if c.fold == fold}
        assert len(prints) == 1
    report = write_report(out)
    assert set(report.summaries) == {"small-cnn", "seed-cnn"}
    (comp,) = report.comparisons
    assert comp["model"] == "seed-cnn" and comp["n_cells"] == 2
    assert comp["n_images"] == len(RunDir(plan.cells[0].run_dir).read_split())  # out-of-fold
    assert 0 <= comp["mcnemar"]["p_value_holm"] <= 1
    for key in ("models_md", "models_tex", "comparison_tex", "roc_png", "forest_pdf", "json"):
        assert report.files[key].is_file()
    assert "\\begin{table}" in report.files["models_tex"].read_text()
    saved = json.loads((out / "study.json").read_text())
    assert saved["state"] == "finished" and len(saved["cells"]) == 4


def test_rerun_skips_finished_and_edits_add_or_drop_cells(finished_study, monkeypatch):
    root, study, out, _ = finished_study
    trained = []
    import cxrlab.training

    real = cxrlab.training.train
    monkeypatch.setattr(
        "cxrlab.training.train", lambda cfg, progress=None: trained.append(cfg.out) or real(cfg)
    )
    again = run_study(study, out, calibrate=False)
    assert again.statuses == {} and trained == []
    grown = study.model_copy(update={"seeds": [0, 1], "models": ["small-cnn"]})
    result = run_study(grown, out, calibrate=False)
    assert sorted(p.name for p in trained) == ["fold0-seed1", "fold1-seed1"]
    assert len(result.statuses) == 2
    plan = make_plan(grown, out)
    assert len(plan.removed) == 2 and all("seed-cnn" in str(p) for p in plan.removed)
    # Changed train options: refused unless asked to retrain.
    changed = grown.model_copy(update={"train": {**TINY, "lr": 0.5}})
    with pytest.raises(ConfigError, match="retrain-changed"):
        run_study(changed, out, calibrate=False)


def test_failed_cell_is_recorded_and_the_others_go_on(tmp_path, synth_dataset, monkeypatch):
    import cxrlab.training

    real = cxrlab.training.train

    def flaky(cfg, progress=None):
        if cfg.model == "seed-cnn" and cfg.split.fold == 1:
            raise RuntimeError("simulated out-of-memory")
        return real(cfg)

    monkeypatch.setattr("cxrlab.training.train", flaky)
    study = _study(tmp_path, synth_dataset)
    out = tmp_path / "out"
    result = run_study(study, out, calibrate=False)
    assert result.failed == ["seed-cnn__fold1-seed0"]
    status = json.loads((out / "cells" / "seed-cnn__fold1-seed0.json").read_text())
    assert "simulated out-of-memory" in status["error"] and "Traceback" in status["traceback"]
    assert json.loads((out / "study.json").read_text())["state"] == "incomplete"
    report = write_report(out)
    assert [m["id"] for m in report.missing] == ["seed-cnn__fold1-seed0"]
    assert report.comparisons[0]["n_cells"] == 1
    assert "seed-cnn__fold1-seed0 (failed)" in report.files["md"].read_text()
    plan = make_plan(study, out)
    assert [c.state for c in plan.cells].count("failed") == 1  # retried next time


def test_external_sets_are_scored_for_every_finished_cell(tmp_path, synth_dataset):
    """``external:`` scores each finished cell with the external validation, into its run dir."""
    from cxrlab.data.synth import synthesize

    other = synthesize(tmp_path / "ext", per_class=3, size=64, seed=7)
    study = _study(tmp_path, synth_dataset, models=["small-cnn"], external={"other": str(other)})
    out = tmp_path / "out"
    plan = make_plan(study, out)
    assert {s for _, _, s in plan.external} == {"ready"}
    run_study(study, out, calibrate=False)
    plan = make_plan(study, out)
    assert {s for _, _, s in plan.external} == {"finished"}
    for cell in plan.cells:
        assert RunDir(cell.run_dir).external("other").metrics.is_file()
    saved = json.loads((out / "study.json").read_text())["external_results"]
    assert {r["state"] for r in saved} == {"finished"} and len(saved) == len(plan.cells)
    report = write_report(out)
    table = report.files["external_md"].read_text()
    assert "other" in table and "Acc (%)" in table


def test_slurm_launcher_through_submitit_local_executor(tmp_path, synth_dataset):
    pytest.importorskip("submitit")
    study = _study(tmp_path, synth_dataset, models=["small-cnn"])
    out = tmp_path / "out"
    launcher = SlurmLauncher(folder=out / "slurm", cluster="local", time_min=10)
    result = run_study(study, out, launcher=launcher, calibrate=False)
    assert not result.failed and len(result.statuses) == 2
    assert len(launcher.job_ids) == 2 and any((out / "slurm").iterdir())  # logs kept
    assert os.getpid() not in {s["pid"] for s in result.statuses.values()}
    again = run_study(study, out, launcher=launcher, calibrate=False)
    assert again.statuses == {}  # resubmitting skips finished cells


def test_local_launcher_rejects_bad_jobs():
    with pytest.raises(ConfigError):
        LocalLauncher(jobs=0).run([{"id": "x"}, {"id": "y"}])


# ------------------------------------------------------------------------------ CLI


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cxrlab", "study", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


def test_cli_study_plan_errors_and_report(tmp_path, synth_dataset, finished_study):
    good = _write(tmp_path, data=str(synth_dataset), models=["small-cnn"], train=TINY, folds=2)
    plan = _cli("run", str(good), "--out", str(tmp_path / "o"), "--dry-run", "--no-calibrate")
    assert plan.returncode == 0, plan.stderr
    assert "1 model(s) x 1 seed(s) x 2 fold(s) = 2 cells" in plan.stdout
    assert "image-passes to run" in plan.stdout and not (tmp_path / "o").exists()
    bad = _write(tmp_path, "bad.yaml", data=str(synth_dataset), models=["small-cnn"], seds=[1])
    res = _cli("run", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "Did you mean 'seeds'" in res.stderr
    assert "Traceback" not in res.stderr
    res = _cli("report", str(tmp_path))
    assert res.returncode == 2 and "study.json" in res.stderr
    _, _, out, _ = finished_study
    res = _cli("report", str(out), "--n-boot", "20")
    assert res.returncode == 0, res.stderr
    assert (out / "report" / "report.md").is_file()
