"""Ensembles: exact averaging, refused mismatches, the folder on disk, one ONNX graph, the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from cxrlab.config import load_config
from cxrlab.data.synth import synthesize
from cxrlab.errors import CheckpointError, ConfigError, DataError, RunDirError
from cxrlab.inference.ensemble import EnsemblePredictor, create_ensemble, resolve_members
from cxrlab.inference.predictor import OnnxPredictor, TorchPredictor, load_predictor
from cxrlab.inference.split import predict_split
from cxrlab.rundir import EnsembleDir, RunDir

CLASSES = ("COVID", "Normal", "Viral Pneumonia")


def _classes(run_dir):
    return RunDir(run_dir).read_classes()


def _images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def test_ensemble_of_one_is_the_member(informative_model):
    member = TorchPredictor(informative_model("small-cnn", CLASSES, 32), device="cpu")
    ens = EnsemblePredictor([member])
    images = _images()
    assert np.array_equal(ens.predict_images(images)[0], member.predict_images(images)[0])
    assert ens.model_name == "ensemble(1 x small-cnn)" and ens.backend == "ensemble"


def test_ensemble_of_two_is_the_mean(informative_model):
    a = TorchPredictor(informative_model("small-cnn", CLASSES, 32, seed=0), device="cpu")
    b = TorchPredictor(informative_model("small-cnn", CLASSES, 32, seed=3), device="cpu")
    ens = EnsemblePredictor([a, b])
    images = _images()
    pa, pb = a.predict_images(images)[0], b.predict_images(images)[0]
    assert np.abs(pa - pb).max() > 1e-3  # the members differ, so the test can fail
    probs, feats = ens.predict_images(images, features=True)
    np.testing.assert_allclose(probs, (pa + pb) / 2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    x = images[:, None].astype(np.float32) / 255
    np.testing.assert_allclose(ens.predict_proba(x), (pa + pb) / 2, rtol=0, atol=1e-12)
    fa = a.predict_images(images, features=True)[1]
    assert feats.shape == (len(images), 2 * fa.shape[1])  # members' features side by side
    np.testing.assert_array_equal(feats[:, : fa.shape[1]], fa)


def test_mismatched_members_are_refused(informative_model):
    base = TorchPredictor(informative_model("small-cnn", CLASSES, 32), device="cpu")
    cases = {
        "classes": informative_model("small-cnn", CLASSES[::-1], 32),
        "input size": informative_model("small-cnn", CLASSES, 48),
        "input channels": informative_model("small-cnn", CLASSES, 32, in_chans=3),
    }
    for what, model in cases.items():
        with pytest.raises(CheckpointError, match=f"second differs from first in its {what}"):
            EnsemblePredictor([base, TorchPredictor(model, device="cpu")],
                              names=["first", "second"])  # fmt: skip
    other = informative_model("small-cnn", CLASSES, 32)
    other.meta = dataclasses.replace(other.meta, preprocess={"method": "clahe"})
    with pytest.raises(CheckpointError, match="member 2 differs .* preprocessing"):
        EnsemblePredictor([base, TorchPredictor(other, device="cpu")])
    with pytest.raises(ConfigError):
        EnsemblePredictor([])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs a and b (seeds 0, 1) on one split; c on another split; and an external set."""
    from cxrlab.training import train

    tmp = tmp_path_factory.mktemp("ensemble")
    data = synthesize(tmp / "data", per_class=8, size=64, seed=0)
    out = {}
    for name, seed, split_seed in (("a", 0, 0), ("b", 1, 0), ("c", 2, 5)):
        cfg = load_config(
            data=data, out=tmp / name, model="small-cnn", image_size=32, epochs=2, batch_size=8,
            cache_dir=tmp / "cache", progress=False, seed=seed, split={"seed": split_seed},
        )  # fmt: skip
        out[name] = train(cfg).run_dir
    out["ext"] = synthesize(tmp / "ext", per_class=3, size=64, seed=7)
    out["tmp"] = tmp
    return out


def test_shared_split_ensemble_evaluates_on_its_test_set(runs, tmp_path):
    from cxrlab.evaluation import evaluate_run
    from cxrlab.reports.report import build_report

    result = create_ensemble([runs["a"], runs["b"]], tmp_path / "ens")
    ens = result.out
    assert result.shared_split and ens.split.is_file() and ens.classes_file.is_file()
    manifest = ens.read_manifest()
    assert [m["run_dir"] for m in manifest["members"]] == [str(runs["a"]), str(runs["b"])]
    assert all(len(m["sha256"]) == 64 for m in manifest["members"])
    assert manifest["test_set"]["sha1"] == RunDir(runs["a"]).fingerprint()["sha1"]
    assert isinstance(RunDir.open(ens.path), EnsembleDir)

    evaluated = evaluate_run(ens.path, n_boot=1000, make_figures=False)
    assert evaluated.metrics["ensemble"]["model_name"] == "ensemble(2 x small-cnn)"
    assert evaluated.metrics["tta"] == 1
    saved = ens.predictions("test")
    pa = predict_split(runs["a"], "test")
    pb = predict_split(runs["b"], "test")
    joint = predict_split(runs["a"], "test", checkpoint=[runs["a"], runs["b"]])
    classes = _classes(runs["a"])
    mean = (pa[classes].to_numpy() + pb[classes].to_numpy()) / 2
    np.testing.assert_allclose(joint[classes].to_numpy(), mean, atol=1e-12)
    import pandas as pd

    np.testing.assert_allclose(pd.read_csv(saved)[classes].to_numpy(), mean, atol=1e-7)
    page = build_report(ens.path)
    assert page.html.is_file() and "test" in page.sections
    assert "ensemble(2 x small-cnn)" in page.html.read_text()


def test_members_from_other_splits_are_refused_for_internal_evaluation(runs, tmp_path):
    from cxrlab.evaluation import evaluate_run
    from cxrlab.evaluation.external import evaluate_external

    result = create_ensemble([runs["a"], runs["c"]], tmp_path / "ens")
    assert not result.shared_split and not result.out.split.is_file()
    with pytest.raises(RunDirError, match="not trained on one split"):
        evaluate_run(result.out.path, make_figures=False)
    with pytest.raises(DataError, match="trained on another split"):
        predict_split(runs["a"], "test", checkpoint=[runs["a"], runs["c"]])
    ext = evaluate_external(result.out.path, runs["ext"], n_boot=1000, make_figures=False)
    assert ext.metrics["ensemble"]["shared_split"] is False
    assert ext.metrics["internal_vs_external"] is None  # no held-out internal test set
    # The audit reference is every image any member saw: the whole development set.
    n_dev = len(RunDir(runs["a"]).read_split())
    assert len(result.out.reference_split()) == n_dev


def test_an_ensemble_with_a_refitted_member_does_not_score_its_val_split(runs, tmp_path):
    from cxrlab.evaluation import evaluate_run

    member = RunDir(tmp_path / "member")
    shutil.copytree(runs["b"], member.path)
    shutil.copy(member.best_checkpoint, member.refit_checkpoint)  # as `--refit` leaves it
    plain = create_ensemble([runs["a"], runs["b"]], tmp_path / "plain").out
    refitted = create_ensemble([runs["a"], member.path], tmp_path / "refitted").out
    assert not plain.is_refit() and refitted.is_refit()
    evaluated = evaluate_run(refitted.path, n_boot=200, make_figures=False)
    assert not refitted.predictions("val").exists()  # in-sample for the refitted member
    assert "refitted on train+val" in evaluated.metrics["calibration"]["note"]


def test_a_changed_member_is_noticed(runs, tmp_path):
    member = tmp_path / "member"
    shutil.copytree(runs["a"], member)
    ens = create_ensemble([member, runs["b"]], tmp_path / "ens").out
    assert load_predictor(ens.path).model_name == "ensemble(2 x small-cnn)"
    with open(RunDir(member).checkpoint(), "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CheckpointError, match="changed since the ensemble was created"):
        load_predictor(ens.path)
    with pytest.raises(CheckpointError, match="is an ensemble"):
        RunDir.open(ens.path).checkpoint()


def test_cv_folder_gives_its_finished_runs(runs, tmp_path):
    cv = tmp_path / "cv"
    shutil.copytree(runs["a"], cv / "fold0-seed0")
    shutil.copytree(runs["c"], cv / "fold1-seed0")
    shutil.copytree(runs["b"], cv / "fold2-seed0")
    RunDir(cv / "fold2-seed0").summary.unlink()  # unfinished: skipped
    (cv / "cv_summary").mkdir()
    members = resolve_members([cv])
    assert [m.run_dir.name for m in members] == ["fold0-seed0", "fold1-seed0"]
    with pytest.raises(ConfigError, match="named twice"):
        resolve_members([cv, cv / "fold0-seed0"])
    with pytest.raises(ConfigError, match="neither a run directory"):
        resolve_members([tmp_path / "cv" / "cv_summary"])
    study = tmp_path / "study"
    shutil.copytree(runs["a"], study / "runs" / "small-cnn" / "seed0")
    shutil.copytree(runs["b"], study / "runs" / "small-cnn" / "seed1")
    assert [m.run_dir.name for m in resolve_members([study])] == ["seed0", "seed1"]


def test_onnx_export_is_one_graph_equal_to_the_ensemble(runs, tmp_path):
    from cxrlab.inference.export import export_onnx

    ens = create_ensemble([runs["a"], runs["b"], runs["c"]], tmp_path / "ens").out
    result = export_onnx(ens.path, tmp_path / "ens.onnx")
    assert result.metadata["model_name"] == "ensemble(3 x small-cnn)"
    assert json.loads(result.metadata["classes"]) == _classes(runs["a"])
    onnx_pred = OnnxPredictor(result.path)
    images = _images(8, 32, seed=4)
    np.testing.assert_allclose(
        onnx_pred.predict_images(images)[0], load_predictor(ens.path).predict_images(images)[0],
        rtol=0, atol=1e-5,
    )  # fmt: skip


def test_serve_turns_cam_off_for_an_ensemble(runs, tmp_path):
    from cxrlab.serve.app import _cam_support

    ens = create_ensemble([runs["a"], runs["b"]], tmp_path / "ens").out
    fns, message = _cam_support(load_predictor(ens.path))
    assert fns is None and "ensemble" in message


def test_cli_create_predict_evaluate(runs, tmp_path, cxrlab_cli):
    ens = tmp_path / "ens"
    done = cxrlab_cli("ensemble", "create", runs["a"], runs["c"], "--out", ens)
    assert done.returncode == 0, done.stderr
    assert "do not share one split" in done.stdout and (ens / EnsembleDir.MANIFEST).is_file()

    files = sorted((runs["ext"] / "COVID" / "images").glob("*.png"))[:2]
    out = tmp_path / "p.csv"
    done = cxrlab_cli("predict", ens, *files, "--out", out, "--tta", "3")
    assert done.returncode == 0, done.stderr
    assert "TTA x3" in done.stdout and "ensemble(2 x small-cnn)" in done.stdout
    import pandas as pd

    frame = pd.read_csv(out)
    assert len(frame) == 2 and (frame["error"].isna()).all()

    done = cxrlab_cli("evaluate", ens, "--data", runs["ext"], "--no-figures", "--tta", "2")
    assert done.returncode == 0, done.stderr
    metrics = RunDir(ens).external(runs["ext"].name).metrics
    assert json.loads(metrics.read_text())["tta"] == 2

    done = cxrlab_cli("evaluate", ens)
    assert done.returncode == 2 and "not trained on one split" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_usage_errors(runs, tmp_path, cxrlab_cli):
    done = cxrlab_cli("predict", runs["a"], runs["ext"], "--tta", "0")
    assert done.returncode == 2 and "--tta" in done.stderr and "Traceback" not in done.stderr
    done = cxrlab_cli("ensemble", "create", tmp_path, "--out", tmp_path / "ens")
    assert done.returncode == 2 and "neither a run directory" in done.stderr
    assert "Traceback" not in done.stderr
