"""``cxrlab report``: report.html, model_card.md and claim_checklist.md from a run's files.

The run is small and real in every file the report reads: a synthetic dataset split by
``prepare_split``, a random seed-CNN checkpoint, then ``evaluate_run``, ``probe_run`` and
``explain_run`` (CPU, 32 px, seconds); history.csv, config.yaml, environment.json and
train_summary.json are written as training writes them. The external test set is a hand-made
fixture (``external/<name>/{metrics.json, overlap.csv, predictions.csv}``). The browser test
renders the page in headless Chromium (``scripts/install-browser.sh``) and skips without it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrlab.reports.claim import ITEMS, claim_checklist
from cxrlab.reports.facts import chosen_epoch, collect_facts
from cxrlab.reports.model_card import SECTIONS as CARD_SECTIONS
from cxrlab.reports.report import SECTIONS, build_report
from cxrlab.rundir import RunDir

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def _history(epochs: int = 6) -> pd.DataFrame:
    e = np.arange(epochs)
    return pd.DataFrame({
        "epoch": e, "train_loss": 1.3 - 0.1 * e, "val_loss": 1.2 - 0.05 * e,
        "val_acc": 0.4 + 0.05 * e, "val_f1": [0.3, 0.4, 0.55, 0.5, 0.52, 0.51],
        "lr": np.linspace(1e-3, 1e-5, epochs),
    })  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, informative_model):
    """A run directory holding every file ``cxrlab report`` reads (no external set)."""
    import torch

    from cxrlab.config import SplitConfig
    from cxrlab.data.prepare import prepare_split
    from cxrlab.data.synth import synthesize
    from cxrlab.evaluation.evaluate import evaluate_run
    from cxrlab.explain import explain_run, probe_run
    from cxrlab.io import write_csv, write_json
    from cxrlab.models import save_classifier

    root = tmp_path_factory.mktemp("report")
    data = synthesize(root / "data", per_class=10, size=64, seed=0)
    prepared = prepare_split(data, SplitConfig(val=0.2, test=0.3), seed=0)
    classes = list(prepared.classes)
    run = RunDir(root / "run")
    run.path.mkdir()
    run.write_split(prepared.manifest)
    run.write_classes(classes)
    config = {
        "data": str(data), "out": str(run.path), "model": "seed-cnn", "pretrained": False,
        "epochs": 6, "batch_size": 16, "lr": 0.001, "weight_decay": 0.01, "optimizer": "adamw",
        "scheduler": "onecycle", "label_smoothing": 0.1, "monitor": "val_f1", "image_size": 32,
        "seed": 0, "limit_per_class": None,
        "split": {"method": "stratified", "val": 0.2, "test": 0.3, "near_duplicates": True,
                  "seed": None, "csv": None},
        "augment": {"rotate": 10.0, "shift": 0.06, "hflip": False},
    }  # fmt: skip
    run.config.write_text(yaml.safe_dump(config))
    write_json(run.environment, {
        "cxrlab": "0.1.0", "git_commit": "0" * 40, "python": "3.11.7", "platform": "Linux",
        "packages": {"torch": torch.__version__, "numpy": np.__version__}, "cuda": None,
        "gpus": [], "cpu_count": 2, "seed": 0, "command": ["cxrlab", "train"],
    })  # fmt: skip
    write_csv(run.history, _history())
    model = informative_model("seed-cnn", classes, 32)
    save_classifier(model, run.best_checkpoint)
    write_json(run.summary, {
        "best_checkpoint": "checkpoints/best.ckpt", "monitor": "val_f1", "best_score": 0.55,
        "epochs_run": 6, "seconds": 12.5, "recipe": {"image_size": 32}, "precision": "32-true",
    })  # fmt: skip
    evaluate_run(run.path, n_boot=1000, device="cpu")
    probe_run(run.path, device="cpu")
    explain_run(run.path, n=4, device="cpu")
    return run


@pytest.fixture()
def run_with_external(small_run, tmp_path):
    """A copy of ``small_run`` with a hand-made external test set ``padchest-mini``."""
    run = RunDir(shutil.copytree(small_run.path, tmp_path / "run"))
    metrics = json.loads(run.metrics.read_text())
    for entry in metrics["metrics"].values():
        if isinstance(entry, dict) and entry.get("value") is not None:
            entry["value"] = entry["value"] * 0.8
    metrics["n"] = 40
    ext = run.external("padchest-mini")
    ext.path.mkdir(parents=True)
    ext.metrics.write_text(json.dumps(metrics))
    overlap = {"path": ["/ext/a.png", "/ext/b.png"], "match": ["exact", "near"],
               "train_path": ["/d/x.png", "/d/y.png"]}  # fmt: skip
    pd.DataFrame(overlap).to_csv(ext.overlap, index=False)
    pd.DataFrame({"path": [f"/ext/{i}.png" for i in range(40)], "label": "Normal"}).to_csv(
        ext.predictions, index=False
    )
    return run


def test_report_files_and_sections(small_run, tmp_path):
    result = build_report(small_run.path, out=tmp_path / "r" / "report.html")
    page = result.html.read_text()
    for anchor, heading in SECTIONS:
        assert f'id="{anchor}"' in page and heading in page
    assert set(result.sections) >= {"data", "model", "test", "probes", "cam"}
    assert "external" not in result.sections and "No external test set" in page
    assert page.count("<svg") >= 7  # curves, 2 confusion, ROC, PR, reliability, op points
    assert "data:image/png;base64," in page  # the CAM panel
    assert "chosen epoch (3)" in page  # val_f1 peaks at the third epoch
    assert "Lung Opacity" in page and "Lung_Opacity" not in page.split('id="claim"')[0]
    assert "cxrlab report" in page.split("<footer")[1]
    assert result.model_card.parent == result.html.parent
    card = result.model_card.read_text()
    assert all(f"## {i}. {s}" in card for i, s in enumerate(CARD_SECTIONS, 1))
    assert "Not for clinical use" in card
    checklist = result.claim_checklist.read_text()
    assert len(re.findall(r"^\| \d+ \|", checklist, flags=re.M)) == 44
    assert "Tejani" in checklist


def test_claim_items_filled_only_from_present_files(small_run, tmp_path):
    items = claim_checklist(collect_facts(small_run.path))
    assert [i.number for i in items] == list(range(1, 45)) and len(ITEMS) == 44
    by = {i.number: i for i in items}
    filled = [i for i in items if i.status == "filled"]
    assert len(filled) >= 20
    assert all(i.source and i.report_section for i in filled)
    assert by[20].status == "filled" and "image level" in by[20].answer.lower()
    assert by[33].status == "prefilled"  # no external set: nothing claimed
    assert by[44].status == "author" and by[2].status == "author"
    bare = RunDir(shutil.copytree(small_run.path, tmp_path / "bare"))
    for path in (bare.metrics, bare.probe, bare.explain_json, bare.summary):
        path.unlink()
    facts = collect_facts(bare.path)
    items = {i.number: i for i in claim_checklist(facts)}
    assert items[29].status == "author" and items[31].status == "author"
    assert items[30].status == "prefilled"
    # a source is named only when the run holds it
    assert all(RunDir.SUMMARY not in i.source for i in items.values())
    assert items[26].source == "config.yaml, history.csv"
    assert any("had not finished" in line for line in facts.limitations)


def test_limitations_from_facts(small_run):
    facts = collect_facts(small_run.path)
    text = " ".join(facts.limitations)
    assert "No patient identifiers" in text
    assert "No external test set" in text
    assert facts.data["level"] == "image"
    assert sum(facts.data["per_split"].values()) == facts.data["n_images"]


def test_external_section(run_with_external):
    result = build_report(run_with_external.path)
    assert result.html == run_with_external.report
    assert "external" in result.sections
    page = result.html.read_text()
    section = page.split('id="external"')[1].split("</section>")[0]
    assert "padchest-mini" in section and "Internal test" in section
    assert "/ext/a.png" in section  # the overlap audit
    assert "40 predictions" in section
    assert "No external test set" not in page
    items = {i.number: i for i in claim_checklist(collect_facts(run_with_external.path))}
    assert items[33].status == "filled"


def test_html_references_no_network_resource(small_run, tmp_path):
    page = build_report(small_run.path, out=tmp_path / "report.html").html.read_text()
    from html.parser import HTMLParser

    class Attributes(HTMLParser):
        values: list[tuple[str, str, str]] = []

        def handle_starttag(self, tag, attrs):
            self.values.extend((tag, k, v or "") for k, v in attrs)

    parser = Attributes()
    parser.feed(page)
    # Every attribute that can load something (src, href, xlink:href, srcset, data, poster,
    # action) points inside the page or is a data: URI; xmlns names are identifiers, not loads.
    loading = ("src", "href", "xlink:href", "srcset", "data", "poster", "action")
    loads = [(t, k, v) for t, k, v in parser.values if k in loading]
    assert any(k == "src" for _, k, _ in loads) and any(k == "href" for _, k, _ in loads)
    assert all(v.startswith(("#", "data:")) for _, _, v in loads), loads
    assert not [v for _, k, v in parser.values if "http" in v and not k.startswith("xmlns")]
    assert not re.search(r"url\(\s*['\"]?\s*(?!data:|#)", page)
    assert "@import" not in page and "<link" not in page and "<script" not in page
    assert "<iframe" not in page


def test_chosen_epoch():
    h = _history()
    assert chosen_epoch(h, "val_f1") == 3
    assert chosen_epoch(h, "val_loss") == 6
    assert chosen_epoch(h, "missing") is None and chosen_epoch(None, "val_f1") is None


def test_cli_report(small_run, tmp_path):
    out = tmp_path / "cli" / "page.html"
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlab", "report", str(small_run.path), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and (out.parent / "claim_checklist.md").is_file()
    assert "of 44 items filled from files" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "cxrlab", "report", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.browser
def test_report_in_headless_chromium(run_with_external, tmp_path):
    from test_serve_browser import _find

    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver", "/usr/lib/chromium/chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium/chromedriver not found; run scripts/install-browser.sh as root")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    page = build_report(run_with_external.path).html
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1000", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(page.as_uri())
        for anchor, heading in SECTIONS:
            el = driver.find_element(By.ID, anchor)
            assert el.is_displayed() and heading in el.text, anchor
            assert el.size["height"] > 40, anchor
        svgs = driver.find_elements(By.CSS_SELECTOR, "figure svg")
        assert len(svgs) >= 7 and all(s.size["width"] > 100 for s in svgs)
        img = driver.find_element(By.CSS_SELECTOR, "#cam img")
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 500
        rows = driver.find_elements(By.CSS_SELECTOR, "#claim tbody tr")
        assert len(rows) == 44
        entries = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert not [e for e in entries if e.startswith("http")]
        assert "rebuild" in driver.find_element(By.ID, "footer").text.lower()
    finally:
        driver.quit()
