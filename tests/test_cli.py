"""The command line: one-paragraph errors without tracebacks, and the main listings."""

import sys

import pytest

from cxrlab.cli import main


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["cxrlab", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


def test_models_lists_the_seed_parameter_counts(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, text = run_cli(monkeypatch, capsys, "models")
    assert code == 0
    assert "seed-cnn" in text and "2,943,428" in text and "2,900,868" in text and "42,560" in text
    for name in ("resnet18", "resnet50", "densenet121", "efficientnet_b0", "convnext_tiny"):
        assert name in text


def test_missing_data_folder_is_one_paragraph(monkeypatch, capsys, tmp_path):
    code, text = run_cli(
        monkeypatch, capsys, "train", "--data", tmp_path / "nope", "--out", tmp_path / "run"
    )
    assert code == 2
    assert "Traceback" not in text and str(tmp_path / "nope") in text


def test_unknown_model_suggests(monkeypatch, capsys, synth_dataset, tmp_path):
    code, text = run_cli(
        monkeypatch, capsys, "train", "--data", synth_dataset, "--out", tmp_path / "r",
        "--model", "resnet-18",
    )  # fmt: skip
    assert code == 2 and "Traceback" not in text
    assert "resnet18" in text and "Did you mean" in text


def test_unknown_config_key_is_named(monkeypatch, capsys, synth_dataset, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epoch: 3\n")
    code, text = run_cli(
        monkeypatch, capsys, "train", "--data", synth_dataset, "--out", tmp_path / "r",
        "--config", cfg,
    )  # fmt: skip
    assert code == 2 and "epoch" in text and "epochs" in text and "Traceback" not in text


def test_out_of_range_ema_decay_is_named(monkeypatch, capsys, synth_dataset, tmp_path):
    code, text = run_cli(
        monkeypatch, capsys, "train", "--data", synth_dataset, "--out", tmp_path / "r",
        "--ema-decay", "1.5",
    )  # fmt: skip
    assert code == 2 and "ema_decay" in text and "Traceback" not in text
    assert not (tmp_path / "r").exists()


def test_occupied_run_dir_is_refused(monkeypatch, capsys, synth_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: resnet18\n")
    (run / "train_summary.json").write_text("{}")
    code, text = run_cli(monkeypatch, capsys, "train", "--data", synth_dataset, "--out", run)
    assert code == 2 and "finished run" in text and "--overwrite" in text


@pytest.mark.parametrize("command", ["train", "evaluate", "data", "synth", "demo", "models"])
def test_help_works(monkeypatch, capsys, command):
    code, text = run_cli(monkeypatch, capsys, command, "--help")
    assert code == 0 and "Usage" in text


def test_error_text_with_brackets_is_printed_verbatim(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    code, text = run_cli(monkeypatch, capsys, "data", "download")
    assert code == 2 and "cxrlab[kaggle]" in text.replace("\n", "")
