"""Lightning's experiment loggers for ``--logger csv|tensorboard|mlflow``, under the run directory.

``history.csv`` (:class:`~cxrlab.training.callbacks.HistoryCSV`) is always written; a logger adds
Lightning's own record of the same metrics and the run's config as hyper-parameters:

* ``csv``: ``<run>/logs/csv/metrics.csv`` and ``hparams.yaml``.
* ``tensorboard``: event files in ``<run>/logs/tensorboard`` (needs the ``tensorboard`` package).
* ``mlflow``: a local file store ``<run>/logs/mlflow`` (a ``file:`` URI), or the server named by
  ``MLFLOW_TRACKING_URI`` when that is set (needs the ``mlflow`` package). Nothing is sent anywhere
  unless the user sets that variable.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from cxrlab.errors import ConfigError
from cxrlab.rundir import RunDir

#: Packages each logger needs (any one of them), and what to install.
_PACKAGES = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "mlflow": (("mlflow",), "pip install mlflow"),
}


def check_logger_installed(kind: str) -> None:
    """Raise ConfigError naming the package to install when ``--logger kind`` cannot work here."""
    if kind not in _PACKAGES:
        return
    modules, install = _PACKAGES[kind]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return
    raise ConfigError(
        f"--logger {kind} needs the {modules[0]} package, which is not installed. Install it "
        f"(`{install}`), or choose --logger csv (no extra package) or none."
    )


def create_loggers(kind: str, run_dir: Path) -> list:
    """The Lightning loggers of ``--logger kind`` writing under ``run_dir`` ([] for ``none``)."""
    if kind == "none":
        return []
    check_logger_installed(kind)
    logs = RunDir(run_dir).logs
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return [CSVLogger(save_dir=logs, name="", version="csv")]
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [TensorBoardLogger(save_dir=logs, name="", version="tensorboard")]
    if kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (logs / "mlflow").resolve().as_uri()
        return [
            MLFlowLogger(experiment_name="cxrlab", run_name=Path(run_dir).name, tracking_uri=uri)
        ]
    raise ConfigError(f"Unknown --logger {kind!r}; choose none, csv, tensorboard or mlflow.")
