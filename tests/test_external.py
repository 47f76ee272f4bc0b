"""External validation: class mapping, the leakage audit, metrics, tables and the CLI."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from cxrlab.config import load_config
from cxrlab.data.external import load_external, parse_class_map, resolve_classes
from cxrlab.data.overlap import find_overlap, hash_images, overlap_folders, trim_borders
from cxrlab.data.synth import synthesize
from cxrlab.errors import ConfigError, DataError
from cxrlab.evaluation.external import evaluate_external
from cxrlab.evaluation.per_source import SetSummary, difference
from cxrlab.rundir import RunDir

SRC = Path(__file__).resolve().parents[1] / "src"
CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "cxrlab", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _edited_copies(src: Path, out_dir: Path, stem: str) -> list[Path]:
    """Brightened, contrast-changed, JPEG re-encoded, resized and letterboxed copies of ``src``."""
    im = Image.open(src).convert("L")
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    edits = {
        "bright": ImageEnhance.Brightness(im).enhance(1.15),
        "contrast": ImageEnhance.Contrast(im).enhance(0.85),
        "resized": im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BICUBIC),
    }
    for tag, edited in edits.items():
        made.append(out_dir / f"{stem}-{tag}.png")
        edited.save(made[-1])
    buf = io.BytesIO()
    ImageEnhance.Brightness(im).enhance(1.1).save(buf, format="JPEG", quality=70)
    made.append(out_dir / f"{stem}-bright-jpeg.jpg")
    made[-1].write_bytes(buf.getvalue())
    box = Image.new("L", (im.width, im.height), 0)  # letterboxed: squeezed to 3/4 height, padded
    squeezed = im.resize((im.width, im.height * 3 // 4), Image.Resampling.LANCZOS)
    box.paste(squeezed, (0, im.height // 8))
    made.append(out_dir / f"{stem}-letterbox.png")
    box.save(made[-1])
    return made


def _tree_digest(folder: Path, skip: str | None = None) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not (skip and rel.parts[0] == skip):
            out[str(rel)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from cxrlab.training import train

    tmp = tmp_path_factory.mktemp("external")
    data = synthesize(tmp / "data", per_class=8, size=64, seed=0)
    cfg = load_config(
        data=data, out=tmp / "run", model="small-cnn", image_size=32, epochs=2,
        batch_size=8, cache_dir=tmp / "cache", progress=False, seed=0,
    )  # fmt: skip
    run = RunDir(train(cfg).run_dir)
    return run, tmp


@pytest.fixture(scope="module")
def external(trained):
    """A second synthetic set (another seed) with planted exact and near copies of train images."""
    run, tmp = trained
    ext = synthesize(tmp / "ext", per_class=4, size=64, seed=7)
    split = run.read_split()
    train_covid = split[(split["split"] == "train") & (split["label"] == "COVID")]["path"].tolist()
    shutil.copy(train_covid[0], ext / "COVID" / "images" / "planted-exact.png")
    im = Image.open(train_covid[1]).convert("L")
    buf = io.BytesIO()
    ImageEnhance.Brightness(im).enhance(1.1).save(buf, format="JPEG", quality=75)
    (ext / "COVID" / "images" / "planted-near.jpg").write_bytes(buf.getvalue())
    return ext, train_covid[:2]


def test_parse_and_resolve_class_map():
    assert parse_class_map(["COVID-19=COVID", "a=b=c"]) == {"COVID-19": "COVID", "a=b": "c"}
    with pytest.raises(ConfigError, match="EXTERNAL=MODEL_CLASS"):
        parse_class_map(["COVID"])
    mapping = resolve_classes(
        ["COVID-19", "normal", "SARS", "Pneumonia"], CLASSES,
        class_map={"covid-19": "covid", "Pneumonia": "viral pneumonia"}, drop_class=["sars"],
    )  # fmt: skip
    assert mapping == {
        "COVID-19": "COVID", "normal": "Normal", "SARS": None, "Pneumonia": "Viral Pneumonia"
    }  # fmt: skip
    with pytest.raises(DataError, match="--drop-unmapped") as err:
        resolve_classes(["Tuberculosis", "COVID"], CLASSES)
    assert "'Tuberculosis' (1 images)" in str(err.value) and "--class-map" in str(err.value)
    with pytest.raises(ConfigError, match="not a class of the model"):
        resolve_classes(["x"], CLASSES, class_map={"x": "Tuberculosis"})
    assert resolve_classes(["a", "COVID"], CLASSES, drop_unmapped=True) == {
        "a": None, "COVID": "COVID"
    }  # fmt: skip


def test_trim_borders():
    img = np.zeros((40, 40), np.uint8)
    img[5:35, :] = 100
    assert trim_borders(img).shape == (30, 40)
    img[:, :2] = 0  # the film's own dark margin on the other axis is kept
    assert trim_borders(img).shape == (30, 40)
    assert trim_borders(np.full((10, 10), 50, np.uint8)) is None
    tiny = np.zeros((40, 40), np.uint8)
    tiny[18:20, 18:20] = 200
    assert trim_borders(tiny) is None  # not a letterbox


def test_every_edited_copy_of_a_training_image_is_flagged(trained):
    run, tmp = trained
    split = run.read_split()
    originals = split[split["split"] == "train"]["path"].tolist()[:3]
    made = []
    for i, path in enumerate(originals):
        made += _edited_copies(Path(path), tmp / "edited", f"img{i}")
    hashed = hash_images(made)
    assert not hashed.errors
    pairs = find_overlap(hashed.frame, split)
    best = pairs.drop_duplicates("path").set_index("path")
    assert set(best.index) == {str(p) for p in made}
    for i, path in enumerate(originals):
        stem = f"img{i}-"
        mine = best[[Path(p).name.startswith(stem) for p in best.index]]
        assert (mine["matched_path"] == path).all()
        assert (mine["matched_split"] == "train").all()
    letterboxed = best[[p.endswith("letterbox.png") for p in best.index]]
    assert (letterboxed["match"] == "near (borders trimmed)").all()


def test_unrelated_images_are_not_flagged(trained, tmp_path):
    run, _ = trained
    other = synthesize(tmp_path / "other", per_class=3, size=64, seed=123)
    found = overlap_folders(other, run.read_split()["path"].map(lambda p: Path(p).parents[2])[0])
    assert found.n_a == 12 and found.pairs.empty


def test_external_evaluation_audits_scores_and_writes(trained, external):
    run, _ = trained
    ext, planted_from = external
    from cxrlab.evaluation import evaluate_run

    evaluate_run(run.path, n_boot=20, make_figures=False)  # the internal metrics.json
    before = _tree_digest(run.path)
    before_ext = _tree_digest(ext)
    result = evaluate_external(run.path, ext, name="synth7", n_boot=200, make_figures=True)
    assert _tree_digest(run.path, skip="external") == before
    assert _tree_digest(ext) == before_ext
    out = run.path / "external" / "synth7"
    assert result.out.path == out
    overlap = pd.read_csv(out / "overlap.csv", keep_default_na=False)
    found = overlap.drop_duplicates("external_path").set_index("external_path")
    exact = str(ext / "COVID" / "images" / "planted-exact.png")
    near = str(ext / "COVID" / "images" / "planted-near.jpg")
    assert found.loc[exact, "match"] == "exact" and found.loc[exact, "distance"] == 0
    assert found.loc[exact, "matched_path"] == planted_from[0]
    assert found.loc[near, "match"].startswith("near")
    assert found.loc[near, "matched_path"] == planted_from[1]
    assert (found["matched_split"] == "train").loc[[exact, near]].all()
    pred = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert exact not in set(pred["path"]) and near not in set(pred["path"])
    assert len(pred) == 16 and set(pred["label"]) == set(CLASSES)
    assert np.allclose(pred[CLASSES].sum(axis=1), 1)
    m = result.metrics
    assert m["overlap"]["n_matched"] >= 2 and m["overlap"]["excluded"] is True
    assert m["n"] == 16 and m["split"] == "external"
    internal = run.read_json(run.metrics)  # the same schema as the internal test's
    assert set(internal) <= set(m)
    assert m["intervals"] == internal["intervals"] and m["format"] == internal["format"]
    assert set(m["metrics"]) == set(internal["metrics"])
    assert m["calibration"]["fit"]["temperature"] == internal["calibration"]["fit"]["temperature"]
    assert m["metrics"]["accuracy"]["method"] == "clopper-pearson"
    assert len(m["confusion_matrix"]["counts"]) == 4
    assert m["calibration"]["fitted_on"] == "val"
    assert m["operating_points"]["chosen_on"] == "val"
    assert m["operating_points"]["applied_to"] == "synth7"
    versus = m["internal_vs_external"]
    assert "sensitivity:COVID" in versus["synth7"]["difference"]
    assert versus["synth7"]["accuracy"]["value"] == pytest.approx(
        (pred["label"] == pred["predicted"]).mean()
    )
    for stem in ("metrics", "per_class", "internal_vs_external", "per_source", "transfer"):
        assert (out / "tables" / f"{stem}.md").is_file()
        assert (out / "tables" / f"{stem}.tex").is_file()
    assert (out / "figures" / "confusion_matrix.png").is_file()
    skipped = pd.read_csv(out / "skipped.csv")
    assert {exact, near} <= set(skipped["path"])


def test_keep_overlap_keeps_and_says_so(trained, external):
    run, _ = trained
    ext, _ = external
    result = evaluate_external(
        run.path, ext, name="kept", keep_overlap=True, n_boot=50, make_figures=False
    )
    assert result.metrics["n"] == 18
    assert result.metrics["overlap"]["excluded"] is False
    for table in (result.out.tables).glob("*.md"):
        assert "OVERLAP KEPT" in table.read_text(), table


def test_subset_of_classes(trained, tmp_path):
    run, _ = trained
    ext = synthesize(tmp_path / "sub", per_class=4, size=64, seed=9, classes=["COVID", "Normal"])
    result = evaluate_external(run.path, ext, name="sub", n_boot=50, make_figures=False)
    m = result.metrics
    assert m["classes_present"] == ["COVID", "Normal"]
    assert m["classes_absent"] == ["Lung_Opacity", "Viral Pneumonia"]
    assert np.array(m["confusion_matrix"]["counts"]).shape == (4, 4)
    assert m["n_per_class"]["Lung_Opacity"] == 0
    assert m["internal_vs_external"]["classes_compared"] == ["COVID", "Normal"]


def test_unknown_class_is_refused_then_dropped(trained, tmp_path):
    run, _ = trained
    ext = synthesize(tmp_path / "unk", per_class=3, size=64, seed=11, classes=["COVID", "Normal"])
    shutil.copytree(ext / "Normal", ext / "Tuberculosis")
    with pytest.raises(DataError, match="Tuberculosis"):
        evaluate_external(run.path, ext, name="unk", n_boot=20)
    assert not (run.path / "external" / "unk").exists()
    result = evaluate_external(
        run.path, ext, name="unk", drop_class=["tuberculosis"], n_boot=20, make_figures=False
    )
    assert result.metrics["n"] == 6
    assert result.metrics["class_mapping"]["Tuberculosis"] is None


def test_index_csv_with_class_map_and_sources(trained, tmp_path):
    run, _ = trained
    ext = synthesize(tmp_path / "idx", per_class=3, size=64, seed=13, classes=["COVID", "Normal"])
    files = sorted(ext.rglob("images/*.png"))
    table = pd.DataFrame(
        {
            "file": [str(p.relative_to(ext)) for p in files] + ["missing.png"],
            "finding": [
                "COVID-19" if p.relative_to(ext).parts[0] == "COVID" else "No Finding"
                for p in files
            ]
            + ["COVID-19"],
            "site": ["A", "B"] * 3 + ["A"],
        }
    )
    table.loc[0, "finding"] = "SARS"
    csv = tmp_path / "pairs.csv"
    table.to_csv(csv, index=False)
    loaded = load_external(
        ext, CLASSES, index=csv, path_column="file", label_column="finding",
        source_column="site", class_map=["COVID-19=COVID", "No Finding=Normal"],
        drop_unmapped=True,
    )  # fmt: skip
    assert len(loaded.index) == 5 and loaded.mapping["SARS"] is None
    assert loaded.index["label"].value_counts().to_dict() == {"Normal": 3, "COVID": 2}
    assert set(loaded.skipped["reason"]) >= {"class SARS dropped"}
    result = evaluate_external(
        run.path, ext, name="idx", index=csv, path_column="file", label_column="finding",
        source_column="site", class_map=["COVID-19=COVID", "No Finding=Normal"],
        drop_unmapped=True, n_boot=50, make_figures=False,
    )  # fmt: skip
    assert set(result.metrics["per_source"]["idx"]) == {"A", "B"}
    assert sum(e["n"] for e in result.metrics["per_source"]["idx"].values()) == 5
    with pytest.raises(DataError, match="--path-column 'nope'"):
        load_external(ext, CLASSES, index=csv, path_column="nope", label_column="finding")


def test_bad_folders_are_refused(tmp_path, tiny_layout):
    with pytest.raises(DataError, match="does not exist"):
        load_external(tmp_path / "absent", CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        load_external(tmp_path / "empty", CLASSES)
    (tmp_path / "loose").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "loose" / "a.png")
    with pytest.raises(DataError, match="--index"):
        load_external(tmp_path / "loose", CLASSES)


def test_independent_difference_interval():
    rng = np.random.default_rng(0)
    y = np.repeat(["COVID", "Normal"], 50)
    good = np.where((y == "COVID")[:, None], [0.9, 0.1], [0.1, 0.9])
    noisy = rng.dirichlet([1, 1], 100)
    labels = ["COVID", "Normal"]
    a = SetSummary(y, good, labels=labels, present=labels, n_boot=300, seed=0)
    b = SetSummary(y, noisy, labels=labels, present=labels, n_boot=300, seed=1)
    d = difference(b, a, "accuracy")
    assert d["value"] == pytest.approx(b.entries["accuracy"]["value"] - 1.0)
    assert d["ci_low"] <= d["value"] <= d["ci_high"] < 0
    same = difference(a, a, "accuracy")
    assert same["value"] == 0


def test_cli_evaluate_data_and_bad_inputs(trained, external, tmp_path):
    run, _ = trained
    ext, _ = external
    done = _cli("evaluate", str(run.path), "--data", str(ext), "--name", "cli", "--n-boot", "50",
                "--no-figures", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Leakage audit" in done.stdout and "match an image of the run" in done.stdout
    assert (run.path / "external" / "cli" / "metrics.json").is_file()
    before = _tree_digest(run.path)
    bad = _cli("evaluate", str(run.path), "--data", str(tmp_path / "nope"), cwd=tmp_path)
    assert bad.returncode == 2 and "does not exist" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
    # every image overlaps: a folder of the run's own training images
    copy = tmp_path / "own" / "COVID"
    copy.mkdir(parents=True)
    split = run.read_split()
    for p in split[(split["split"] == "train") & (split["label"] == "COVID")]["path"][:3]:
        shutil.copy(p, copy)
    bad = _cli("evaluate", str(run.path), "--data", str(tmp_path / "own"), cwd=tmp_path)
    assert bad.returncode == 2 and "--keep-overlap" in bad.stderr + bad.stdout
    (tmp_path / "empty").mkdir()
    bad = _cli("evaluate", str(run.path), "--data", str(tmp_path / "empty"), cwd=tmp_path)
    assert bad.returncode == 2 and "is empty" in bad.stderr + bad.stdout
    unknown = tmp_path / "unknown" / "Tuberculosis"
    unknown.mkdir(parents=True)
    shutil.copy(ext / "Normal" / "images" / "Normal-1.png", unknown)
    bad = _cli("evaluate", str(run.path), "--data", str(unknown.parent), cwd=tmp_path)
    assert bad.returncode == 2 and "--drop-class 'Tuberculosis'" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
    assert _tree_digest(run.path) == before
    assert [p.name for p in unknown.parent.rglob("*")] == ["Tuberculosis", "Normal-1.png"]
    assert _tree_digest(tmp_path / "own")  # nothing added inside it
    assert not list((tmp_path / "own").rglob("*.csv"))


def test_cli_data_overlap(trained, external, tmp_path):
    run, tmp = trained
    ext, _ = external
    out = tmp_path / "pairs.csv"
    done = _cli("data", "overlap", str(ext), str(tmp / "data"), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 of 18 images" in done.stdout
    pairs = pd.read_csv(out)
    assert {"planted-exact.png", "planted-near.jpg"} <= {Path(p).name for p in pairs["path"]}
    assert _cli("data", "overlap", str(tmp_path / "x"), str(ext), cwd=tmp_path).returncode == 2


def _rdb_images(rdb_mini: Path, cls: str) -> list[Path]:
    return sorted((rdb_mini / cls / "images").glob("*.png"))


def test_edited_copies_of_real_images_are_all_flagged(rdb_mini, tmp_path):
    """Real radiographs: brightened, contrast, JPEG, resized, letterboxed copies all match."""
    reference = []
    for cls in ("COVID", "Normal", "Viral Pneumonia"):
        reference += _rdb_images(rdb_mini, cls)[:20]
    originals = reference[::15]  # 4 images, from every class
    made = []
    for i, path in enumerate(originals):
        made += _edited_copies(path, tmp_path / "edited", f"img{i}")
    others = [p for cls in ("COVID", "Normal") for p in _rdb_images(rdb_mini, cls)[100:110]]
    ref = hash_images(reference, trimmed=False).frame.assign(split="train")
    pairs = find_overlap(hash_images(made + others).frame, ref)
    best = pairs.drop_duplicates("path").set_index("path")
    assert set(best.index) == {str(p) for p in made}, "every edited copy, and nothing else"
    for i, path in enumerate(originals):
        mine = best[[Path(p).name.startswith(f"img{i}-") for p in best.index]]
        assert len(mine) == 5 and (mine["matched_path"] == str(path)).all()
    assert (best["distance"] <= 20).all()


def test_external_images_get_the_models_preprocessing(trained, tmp_path):
    """A model trained with an enhancement is scored on external images under that enhancement."""
    import dataclasses

    from cxrlab.config import PreprocessConfig
    from cxrlab.data.images import decode_many
    from cxrlab.data.preprocess import to_metadata
    from cxrlab.inference.predictor import TorchPredictor
    from cxrlab.models import load_classifier, save_classifier

    run, tmp = trained
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("external"))
    model, _ = load_classifier(run.checkpoint())
    pre = to_metadata(PreprocessConfig(method="complement"))
    model.meta = dataclasses.replace(model.meta, preprocess=pre)
    save_classifier(model, RunDir(copy).checkpoint())
    ext = synthesize(tmp_path / "ext", per_class=2, size=64, seed=11)
    result = evaluate_external(copy, ext, name="pre", n_boot=20, make_figures=False)
    pred = pd.read_csv(result.out.path / "predictions.csv", keep_default_na=False)
    predictor = TorchPredictor(model, device="cpu")
    for preprocess, same in ((pre, True), (None, False)):
        decoded = decode_many(pred["path"].tolist(), 32, preprocess=preprocess)
        probs, _ = predictor.predict_images(decoded.images)
        assert np.allclose(probs, pred[CLASSES].to_numpy(), atol=1e-6) is same
