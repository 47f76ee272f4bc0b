"""Layout rules: dependencies run one way, one owner of the run directory, small modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cxrlab"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["evaluation", "explain", "inference", "serve", "reports"])
def test_evaluation_explain_inference_never_import_training(package):
    offenders = {
        str(path.relative_to(SRC)): sorted(
            n for n in _imports(path) if n.startswith("cxrlab.training")
        )
        for path in (PACKAGE / package).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_importing_the_evaluation_side_loads_no_training_code():
    code = (
        "import sys, cxrlab.evaluation, cxrlab.explain, cxrlab.inference.files, cxrlab.reports;"
        "print(sorted(m for m in sys.modules if m.startswith('cxrlab.training')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_only_rundir_spells_run_directory_file_names():
    names = set(
        (
            "split.csv config.yaml classes.json train_summary.json history.csv metrics.json "
            "probe.json best.ckpt last.ckpt skipped.csv environment.json"
        ).split()
    )
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                # A dotted config field such as TrainConfig's "split.csv" is not a file name.
                if node.value in names and not _is_option_field(path, node):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value}")
    assert not found


def _is_option_field(path: Path, node: ast.Constant) -> bool:
    return path.name == "options.py" and node.value == "split.csv"


def test_no_module_over_500_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long
