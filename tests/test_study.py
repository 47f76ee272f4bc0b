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


def test_study_page_names_every_model_and_is_self_contained(finished_study):
    """study.html: the run report's template and CSS, every model, figures inline, no network."""
    from html.parser import HTMLParser

    from cxrlab.study.page import SECTIONS

    _, study, out, _ = finished_study
    report = write_report(out)
    page = report.files["html"]
    assert page == out / "report" / "study.html"
    html = page.read_text()
    for anchor, _ in SECTIONS:
        assert f'id="{anchor}"' in html
    models = html.split('id="models"')[1].split("</section>")[0]
    baseline = html.split('id="baseline"')[1].split("</section>")[0]
    for label in study.labels():
        assert f"<td>{label}</td>" in models
    assert "<td>seed-cnn</td>" in baseline and "small-cnn" in baseline
    assert "McNemar" in baseline and baseline.count("<svg") == 1  # the forest plot
    assert html.split('id="roc"')[1].split("</section>")[0].count("<svg") == 1
    assert "Every cell finished; none missing." in html
    assert "table.t {" in html  # report.css, shared with the run report
    assert "No external test set" in html and "not run (`cxrlab probe RUN`" in html

    class Attributes(HTMLParser):
        loads: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.loads.extend(v or "" for k, v in attrs if k in ("src", "href", "xlink:href"))

    parser = Attributes()
    parser.feed(html)
    # In-page anchors, and relative links to the cells' run directories (inside the study).
    links = [v for v in parser.loads if not v.startswith("#")]
    assert links and all(v.startswith("../runs/") for v in links), links
    for v in links:
        assert (page.parent / v).resolve().is_dir()
    assert "<script" not in html and "<link" not in html


def test_first_cell_trains_on_the_plans_scan_and_calibration_is_reused(
    tmp_path, synth_dataset, monkeypatch
):
    """The plan's scan is not thrown away: the first cell trains on it (no second scan), and
    its split is the one a scan of its own would give; a rerun reuses the saved calibration."""
    import pandas as pd

    import cxrlab.study.planner as planner
    from cxrlab.data.prepare import prepare_split

    study = _study(tmp_path, synth_dataset, models=["small-cnn"])
    out = tmp_path / "out"
    result = run_study(study, out, calibrate=True)
    handed = {k: s["plan_scan_seconds"] for k, s in result.statuses.items()}
    assert handed["small-cnn__fold0-seed0"] > 0 and handed["small-cnn__fold1-seed0"] == 0
    cell = result.plan.cells[0]
    own = prepare_split(cell.config.data, cell.config.split, seed=cell.config.seed,
                        cache_dir=cell.config.cache_dir).manifest  # fmt: skip
    saved = RunDir(cell.run_dir).read_split()
    pd.testing.assert_series_equal(
        saved.set_index("path")["split"].sort_index(), own.set_index("path")["split"].sort_index()
    )
    calibration = json.loads((out / "study.json").read_text())["calibration"]
    assert calibration["small-cnn"]["seconds_per_image"] > 0
    # Rerun of a study with no finished cell: the calibration comes from study.json.
    for c in result.plan.cells:
        (out / "cells" / f"{c.id}.json").unlink()
        RunDir(c.run_dir).metrics.unlink()
    calls = []
    monkeypatch.setattr(planner, "calibrate_cell", lambda *a, **k: calls.append(a) or 1.0)
    again = run_study(study, out, calibrate=True, dry_run=True)
    assert calls == [] and again.plan.seconds_per_image == {
        "small-cnn": calibration["small-cnn"]["seconds_per_image"]}  # fmt: skip
    # Another image size is another set-up: calibrated afresh.
    bigger = study.model_copy(update={"train": {**TINY, "image_size": 48}})
    run_study(bigger, out, calibrate=True, dry_run=True)
    assert len(calls) == 1


def test_rerun_skips_finished_and_edits_add_or_drop_cells(finished_study, monkeypatch):
    root, study, out, _ = finished_study
    trained = []
    import cxrlab.training

    real = cxrlab.training.train
    monkeypatch.setattr(
        "cxrlab.training.train",
        lambda cfg, progress=None, **kw: trained.append(cfg.out) or real(cfg, **kw),
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
    # A started cell (here: its training summary gone) is "changed" too, not resumed under
    # the new options; under its own options it is "partial".
    (out / "runs" / "small-cnn" / "fold0-seed1" / "train_summary.json").unlink()
    states = {str(c.run_dir.name): c.state for c in make_plan(changed, out).cells}
    assert states == {"fold0-seed0": "changed", "fold1-seed0": "changed",
                      "fold0-seed1": "changed", "fold1-seed1": "changed"}  # fmt: skip
    states = {str(c.run_dir.name): c.state for c in make_plan(grown, out).cells}
    assert states["fold0-seed1"] == "partial" and states["fold1-seed1"] == "finished"


def test_failed_cell_is_recorded_and_the_others_go_on(tmp_path, synth_dataset, monkeypatch):
    import cxrlab.training

    real = cxrlab.training.train

    def flaky(cfg, progress=None, **kw):
        if cfg.model == "seed-cnn" and cfg.split.fold == 1:
            raise RuntimeError("simulated out-of-memory")
        return real(cfg, **kw)

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
    page = report.files["html"].read_text()
    listed = page.split('id="cells"')[1].split("<details>")[0]
    assert "1 of 4 cell(s) missing" in listed
    assert "seed-cnn__fold1-seed0</code> (failed): RuntimeError: simulated out-of-memory" in listed
    assert "small-cnn__fold0-seed0" not in listed  # finished cells are not called missing
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


def test_cli_jobs_2_runs_two_cells_at_once_and_a_rerun_skips_both(tmp_path, synth_dataset):
    """``--jobs 2`` through the CLI: two worker processes, ordinary run dirs, rerun skips."""
    good = _write(tmp_path, name="jobs", data=str(synth_dataset), models=["small-cnn"],
                  seeds=[0, 1], train=TINY, n_boot=20)  # fmt: skip
    out = tmp_path / "out"
    res = _cli("run", str(good), "--out", str(out), "--jobs", "2", "--no-calibrate",
               "--no-report")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Ran 2 cell(s)" in res.stdout and "(0 failed" in res.stdout
    statuses = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    assert [s["state"] for s in statuses] == ["finished", "finished"]
    pids = {s["pid"] for s in statuses}
    assert len(pids) == 2  # one worker process per cell
    for seed in (0, 1):
        run = RunDir(out / "runs" / "small-cnn" / f"seed{seed}")
        assert run.is_finished() and run.metrics.is_file() and run.find_checkpoint() is not None
        assert run.read_split()["split"].nunique() == 3
    saved = json.loads((out / "study.json").read_text())
    assert saved["state"] == "finished"
    assert saved["last_run"]["launcher"] == "LocalLauncher"
    again = _cli("run", str(good), "--out", str(out), "--jobs", "2", "--no-calibrate",
                 "--no-report")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished; 0 to run" in again.stdout and "Ran 0 cell(s)" in again.stdout
    assert [json.loads(p.read_text())["pid"] for p in sorted((out / "cells").glob("*.json"))] == [
        s["pid"] for s in statuses]  # fmt: skip


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
