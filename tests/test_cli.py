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
    assert code == 2 and "--ema-decay" in text and "Traceback" not in text
    assert "must be < 1" in text and "Usage: cxrlab train" in text
    assert not (tmp_path / "r").exists()


def test_occupied_run_dir_is_refused(monkeypatch, capsys, synth_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: resnet18\n")
    (run / "train_summary.json").write_text("{}")
    code, text = run_cli(monkeypatch, capsys, "train", "--data", synth_dataset, "--out", run)
    assert code == 2 and "finished run" in text and "--overwrite" in text


@pytest.mark.parametrize(
    "command", ["train", "cv", "evaluate", "data", "synth", "demo", "models", "predict"]
)
def test_help_works(monkeypatch, capsys, command):
    code, text = run_cli(monkeypatch, capsys, command, "--help")
    assert code == 0 and "Usage" in text


def test_error_text_with_brackets_is_printed_verbatim(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    code, text = run_cli(monkeypatch, capsys, "data", "download")
    assert code == 2 and "cxrlab[kaggle]" in text.replace("\n", "")


def test_train_and_cv_declare_the_same_training_options():
    import typer

    from cxrlab.cli import app
    from cxrlab.cli.options import TRAINING_OPTIONS

    commands = typer.main.get_command(app).commands

    def flags(name):
        return {f for p in commands[name].params for f in (*p.opts, *p.secondary_opts)}

    train, cv = flags("train"), flags("cv")
    for option in TRAINING_OPTIONS:
        for flag in (*option.flags[0].split("/"), *option.hidden_flags):
            assert flag in train, flag
            assert flag in cv or option.field == "seed", flag
    assert "--seed" not in cv  # cv trains seeds 0..S-1 (--seeds)
    for flag in ("--split-seed", "--split-csv", "--split-by", "--device", "--logger"):
        assert flag in train and flag in cv


def test_training_options_follow_train_config():
    import typing

    from cxrlab.cli.options import TRAINING_OPTIONS, _bounds, config_field
    from cxrlab.config import SplitConfig, TrainConfig

    missing = set()
    for option in TRAINING_OPTIONS:
        if not option.field:
            continue
        info = config_field(option.field)
        if info is None:
            missing.add(option.field)
            continue
        args = typing.get_args(info.annotation) or (info.annotation,)
        if option.convert is None and option.type is not str:
            assert option.type in args, option.field
    assert not missing  # every training option is a TrainConfig field
    assert {"seed", "csv"} <= set(SplitConfig.model_fields)
    assert ("gt", 0) in _bounds(TrainConfig.model_fields["lr"])


def test_unset_options_pass_nothing(monkeypatch, capsys, tmp_path):
    import cxrlab.training

    seen = {}

    def fake_train(cfg, **kwargs):
        seen["cfg"] = cfg
        raise RuntimeError("stop here")

    monkeypatch.setattr(cxrlab.training, "train", fake_train)
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(RuntimeError, match="stop here"):
        run_cli(monkeypatch, capsys, "train", "--data", data, "--out", tmp_path / "r")
    from cxrlab.config import TrainConfig

    default = TrainConfig(data=data, out=tmp_path / "r")
    assert seen["cfg"] == default


def test_split_options_go_into_the_split_config():
    from cxrlab.cli.options import TRAINING_OPTIONS, _collect, _parameters

    kwargs = {p.name: None for o in TRAINING_OPTIONS for p in _parameters(o)}
    assert _collect(TRAINING_OPTIONS, dict(kwargs)).overrides == {}
    kwargs.update(split_seed=7, split_csv="s.csv", split_by="source")
    values = _collect(TRAINING_OPTIONS, dict(kwargs))
    assert values.overrides == {"split": {"seed": 7, "csv": "s.csv", "method": "source"}}


@pytest.mark.parametrize(("flag", "value"), [("--device", "gpu"), ("--accelerator", "cuda")])
def test_device_spellings(monkeypatch, capsys, tmp_path, flag, value):
    import cxrlab.training

    seen = {}

    def fake_train(cfg, **kwargs):
        seen["cfg"] = cfg
        raise RuntimeError("stop here")

    monkeypatch.setattr(cxrlab.training, "train", fake_train)
    with pytest.raises(RuntimeError, match="stop here"):
        run_cli(
            monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "r", flag, value
        )
    assert seen["cfg"].accelerator == "cuda"


def test_old_accelerator_spelling_is_hidden(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, text = run_cli(monkeypatch, capsys, "train", "--help")
    assert code == 0 and "--device" in text and "--accelerator" not in text


def test_normalize_device():
    import typer

    from cxrlab.cli.options import normalize_device

    assert [normalize_device(v) for v in ("GPU", "cuda", "cpu", "auto", None)] == [
        "cuda", "cuda", "cpu", "auto", None
    ]  # fmt: skip
    with pytest.raises(typer.BadParameter, match="Did you mean"):
        normalize_device("cdua")
