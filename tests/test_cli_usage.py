"""The command line as a user meets it, in subprocesses against the installed Typer: usage
errors, --version, --help without torch, narrow terminals, quiet training output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SRC = Path(__file__).resolve().parents[1] / "src"


def cxrlab(*args, env=None, timeout=300):
    """Run ``python -m cxrlab ARGS``; returns (exit code, stdout + stderr)."""
    full_env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "100", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlab", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=full_env,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["train", "--epoch", "3"], "No such option: --epoch"),
        (["train", "--epochs", "abc"], "'--epochs'"),
        (["train", "--epochs", "0"], "must be >= 1"),
        (["cv", "--lr", "-1"], "must be > 0"),
        (["train", "--split-by", "sorce"], "Did you mean 'source'"),
        (["predict", "run", "x.png", "--device", "tpu"], "'tpu' is not a device"),
        (["evaluate"], "Missing argument"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_usage_errors_are_the_usage_line_and_one_sentence(args, says):
    code, text = cxrlab(*args)
    assert code == 2, text
    assert "Traceback" not in text
    assert f"Usage: cxrlab {args[0] if args[0] != 'frobnicate' else ''}".rstrip() in text
    assert says in text
    assert len([line for line in text.splitlines() if line.startswith("Error:")]) == 1


def test_version():
    from cxrlab import __version__

    code, text = cxrlab("--version")
    assert code == 0 and text.strip() == f"cxrlab {__version__}"


def _all_commands() -> list[list[str]]:
    import typer

    from cxrlab.cli import app

    root = typer.main.get_command(app)
    paths = [[]]
    for name, command in root.commands.items():
        paths.append([name])
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
    return paths


def test_help_of_every_command_does_not_import_torch():
    paths = _all_commands()
    assert ["train"] in paths and ["cv"] in paths and ["data", "split"] in paths
    script = (
        "import json, sys\n"
        "from cxrlab.cli import main\n"
        "codes = []\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        main([*path, '--help'])\n"
        "    except SystemExit as exc:\n"
        "        codes.append(exc.code or 0)\n"
        "    else:\n"
        "        codes.append(0)\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('torch', 'lightning', 'timm'))\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "100"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(paths)
    assert report["heavy"] == []


def test_models_never_cuts_a_number_at_80_columns():
    code, text = cxrlab("models", env={"COLUMNS": "80"})
    assert code == 0, text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "11,181,892" in text and "2,943,428" in text and "27,820,132" in text
    assert "seed project's" in text  # the descriptions are still there, below the counts


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_train")
    code, text = cxrlab("synth", root / "synth", "--per-class", "6", "--size", "32")
    assert code == 0, text
    return root, root / "synth" / "COVID-19_Radiography_Dataset"


_TRAIN = ["--model", "small-cnn", "--image-size", "32", "--no-evaluate", "--device", "cpu"]
_NOISE = ("GPU available", "TPU available", "litlogger", "Tip:", "deprecated")


def test_training_output_is_quiet_and_counts_epochs_from_one(tiny_data):
    root, data = tiny_data
    out = root / "run"
    code, text = cxrlab(
        "train", "--data", data, "--out", out, "--epochs", "2", "--cache-dir", root / "cache",
        "--logger", "csv", *_TRAIN,
    )  # fmt: skip
    assert code == 0, text
    for noise in _NOISE:
        assert noise not in text, noise
    assert "Epoch 2/2" in text and "Epoch 1/1" not in text
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["logger"] == "csv" and saved["epochs"] == 2
    assert saved["optimizer"] == "adamw" and saved["lr"] == 2e-3 and saved["image_size"] == 32
    assert saved["augment"]["rotate"] == 10.0
    assert (out / "logs" / "csv" / "metrics.csv").is_file()

    code, text = cxrlab(
        "-v", "train", "--data", data, "--out", root / "run-v", "--epochs", "1",
        "--cache-dir", root / "cache", *_TRAIN,
    )  # fmt: skip
    assert code == 0, text
    assert "GPU available" in text  # with -v Lightning's notices are shown
