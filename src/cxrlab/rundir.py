"""The run directory: the one owner of its layout and of the files every later step reads.

A run directory is the unit of reproducibility (docs/ARCHITECTURE.md). Every module that reads or
writes one goes through :class:`RunDir`, so no other module spells a run-dir file name, split.csv
is parsed with one dtype policy (:mod:`cxrlab.manifest`), and the test-set fingerprint is computed
by one function (:func:`split_fingerprint`, which ``cxrlab data split`` prints too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab.errors import CheckpointError, RunDirError

# Split manifests live in cxrlab.manifest; re-exported here, where run directories read them.
from cxrlab.manifest import (  # noqa: F401
    REQUIRED_COLUMNS,
    SPLITS,
    TEXT_COLUMNS,
    read_split_csv,
    split_fingerprint,
    write_split_csv,
)


class _ResultsFolder:
    """What a run directory and an external validation folder share: metrics, tables, figures.

    Attributes:
        path: The folder.
    """

    METRICS = "metrics.json"
    SKIPPED = "skipped.csv"

    def __init__(self, path: str | os.PathLike | _ResultsFolder):
        self.path = Path(path.path if isinstance(path, _ResultsFolder) else path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def skipped(self) -> Path:
        """Images left out (undecodable, label conflict, dropped class), with the reason."""
        return self.path / self.SKIPPED

    @property
    def tables(self) -> Path:
        return self.path / "tables"

    @property
    def figures(self) -> Path:
        return self.path / "figures"


class RunDir(_ResultsFolder):
    """Paths and files of one run directory (which need not exist yet).

    Attributes:
        path: The directory.
    """

    CONFIG = "config.yaml"
    ENVIRONMENT = "environment.json"
    SPLIT = "split.csv"
    CLASSES = "classes.json"
    HISTORY = "history.csv"
    SUMMARY = "train_summary.json"
    PROBE = "probe.json"
    LOGS = "logs"
    CHECKPOINTS = "checkpoints"
    BEST = "best"
    LAST = "last"
    REFIT = "refit"
    PREDICTIONS = "predictions"
    REPORT = "report.html"
    MODEL_CARD = "model_card.md"
    CLAIM_CHECKLIST = "claim_checklist.md"
    EXTERNAL = "external"
    EXPLAIN_JSON = "explain.json"
    CAM_PANEL = "cam_panel.png"

    @classmethod
    def open(cls, path: str | os.PathLike | RunDir) -> RunDir:
        """An existing run directory (an :class:`EnsembleDir` when it holds ensemble.json);
        RunDirError when ``path`` is not a directory."""
        if cls is RunDir and EnsembleDir.holds_ensemble(path):
            return EnsembleDir(path)
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(
                f"Run directory {run.path} does not exist. Pass a folder written by "
                "`cxrlab train` (its --out)."
            )
        return run

    # -- paths -----------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def environment(self) -> Path:
        return self.path / self.ENVIRONMENT

    @property
    def split(self) -> Path:
        return self.path / self.SPLIT

    @property
    def classes_file(self) -> Path:
        return self.path / self.CLASSES

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def probe(self) -> Path:
        return self.path / self.PROBE

    @property
    def logs(self) -> Path:
        """Lightning's loggers (``--logger``): ``logs/{csv,tensorboard,mlflow}``."""
        return self.path / self.LOGS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / f"{self.BEST}.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / f"{self.LAST}.ckpt"

    @property
    def refit_checkpoint(self) -> Path:
        """``checkpoints/refit.ckpt``: the model refitted on train+val (``--refit``), when any."""
        return self.checkpoints / f"{self.REFIT}.ckpt"

    @property
    def refit_last_checkpoint(self) -> Path:
        """The refit's latest epoch (resumable); renamed to :attr:`refit_checkpoint` when whole."""
        return self.checkpoints / f"{self.REFIT}-{self.LAST}.ckpt"

    @property
    def refit_history(self) -> Path:
        """``history-refit.csv``: the refit's epochs (training loss, LR, images/s)."""
        return self.path / "history-refit.csv"

    def is_refit(self) -> bool:
        """The run's model was refitted on train+val, so its val split is training data."""
        return self.refit_checkpoint.is_file()

    @property
    def explain(self) -> Path:
        return self.path / "explain"

    @property
    def explain_json(self) -> Path:
        """``explain/explain.json`` (settings and lung attention of ``cxrlab explain``)."""
        return self.explain / self.EXPLAIN_JSON

    @property
    def cam_panel(self) -> Path:
        """``explain/cam_panel.png`` (``cxrlab explain``'s paper panel)."""
        return self.explain / self.CAM_PANEL

    @property
    def report(self) -> Path:
        """``report.html`` (``cxrlab report``)."""
        return self.path / self.REPORT

    @property
    def model_card(self) -> Path:
        """``model_card.md`` (``cxrlab report``; Mitchell et al. 2019's nine sections)."""
        return self.path / self.MODEL_CARD

    @property
    def claim_checklist(self) -> Path:
        """``claim_checklist.md`` (``cxrlab report``; CLAIM 2024's 44 items)."""
        return self.path / self.CLAIM_CHECKLIST

    def externals(self) -> list[ExternalDir]:
        """Every ``external/<name>/`` folder of the run, sorted by name (``[]`` when none)."""
        root = self.path / self.EXTERNAL
        if not root.is_dir():
            return []
        return [ExternalDir(p) for p in sorted(root.iterdir()) if p.is_dir()]

    def predictions(self, split: str) -> Path:
        """``predictions/<split>.csv``."""
        return self.path / self.PREDICTIONS / f"{split}.csv"

    @property
    def predictions_tta(self) -> Path:
        """``predictions/tta.json``: split -> test-time transforms its predictions averaged."""
        return self.path / self.PREDICTIONS / "tta.json"

    def external(self, name: str) -> ExternalDir:
        """``external/<name>/``: one external validation (``cxrlab evaluate --data``)."""
        clean = str(name).strip()
        if not clean or clean in (".", "..") or "/" in clean or "\\" in clean:
            raise RunDirError(
                f"External set name {name!r} is not a plain folder name; pass --name with letters, "
                "digits, '-' or '_' only (it becomes RUN/external/<name>/)."
            )
        return ExternalDir(self.path / self.EXTERNAL / clean)

    # -- state -----------------------------------------------------------------------------------
    def is_finished(self) -> bool:
        """Training finished: ``train_summary.json`` is written last by a successful training."""
        return self.summary.is_file()

    def holds_run(self) -> bool:
        """Training started here: a ``config.yaml`` exists."""
        return self.config.is_file()

    def checkpoint(self) -> Path:
        """The checkpoint to apply: ``refit.ckpt``, else ``best.ckpt``, else ``last.ckpt``.

        Raises:
            CheckpointError: Neither exists.
        """
        for candidate in (self.refit_checkpoint, self.best_checkpoint, self.last_checkpoint):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{self.path} holds no {self.CHECKPOINTS}/{self.BEST}.ckpt or "
            f"{self.CHECKPOINTS}/{self.LAST}.ckpt. Is it a cxrlab run directory whose training "
            "finished at least one epoch?"
        )

    def find_checkpoint(self) -> Path | None:
        """:meth:`checkpoint`, or None when the run has none."""
        try:
            return self.checkpoint()
        except CheckpointError:
            return None

    def model_file(self) -> Path | None:
        """The file predictions are computed from (the checkpoint; an ensemble's manifest)."""
        return self.find_checkpoint()

    def reference_split(self) -> pd.DataFrame:
        """The images the model was trained or selected on (the leakage audit's reference)."""
        return self.read_split()

    # -- files -----------------------------------------------------------------------------------
    def has_split(self) -> bool:
        return self.split.is_file()

    def read_split(self) -> pd.DataFrame:
        """The run's split manifest (:func:`read_split_csv`'s dtype policy).

        Raises:
            RunDirError: There is no split.csv, or it is not a manifest.
        """
        if not self.split.is_file():
            raise RunDirError(
                f"{self.path} has no {self.SPLIT}, so the images of its splits are unknown. Pass "
                "a run directory written by `cxrlab train`."
            )
        return read_split_csv(self.split)

    def write_split(self, frame: pd.DataFrame) -> Path:
        return write_split_csv(self.split, frame)

    def read_classes(self) -> list[str] | None:
        """Class names in model output order: classes.json, else the checkpoint's metadata.

        Returns None when neither exists (a predictions file's columns are used then).
        """
        path = self.classes_file
        if path.is_file():
            classes = self.read_json(path)
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise RunDirError(f"{path} must hold a JSON list of class names, got {classes!r}.")
            return classes
        checkpoint = self.find_checkpoint()
        if checkpoint is not None:
            from cxrlab.models.checkpoint import read_checkpoint

            return list(read_checkpoint(checkpoint)["cxrlab_meta"]["classes"])
        return None

    def write_classes(self, classes: list[str]) -> Path:
        from cxrlab.io import write_json

        return write_json(self.classes_file, list(classes))

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a dict ({} when absent)."""
        import yaml

        if not self.config.is_file():
            return {}
        try:
            return yaml.safe_load(self.config.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RunDirError(f"{self.config} is not valid YAML ({exc}); restore it.") from None

    def read_json(self, path: Path) -> Any:
        """A JSON file of the run (RunDirError naming it when damaged)."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RunDirError(f"{path} does not exist.") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise RunDirError(
                f"{path} is not valid JSON ({exc}); restore it, or delete it and re-run the "
                "command that writes it."
            ) from None

    def fingerprint(self) -> dict[str, Any]:
        """The test set's :func:`split_fingerprint` plus where it came from.

        From split.csv when present (keyed by sha1 when recorded), else from the rows of
        predictions/test.csv.

        Returns:
            ``{"sha1", "n", "key": "sha1" | "path", "from": "split.csv" | "predictions/test.csv"}``.
        """
        if self.split.is_file():
            rows, source = self.read_split(), self.SPLIT
        else:
            pred = self.predictions("test")
            if not pred.is_file():
                raise RunDirError(f"{self.path} has neither {self.SPLIT} nor predictions/test.csv.")
            rows = pd.read_csv(pred, keep_default_na=False, dtype=str, usecols=["path", "label"])
            source = f"{self.PREDICTIONS}/test.csv"
        return {**split_fingerprint(rows), "from": source}

    def path_to_sha1(self) -> dict[str, str]:
        """Image path -> sha1 from split.csv ({} when unavailable)."""
        if not self.split.is_file():
            return {}
        frame = self.read_split()
        if "sha1" not in frame.columns:
            return {}
        return dict(zip(frame["path"], frame["sha1"], strict=True))


class ExternalDir(_ResultsFolder):
    """Files of one external validation, ``RUN/external/<name>/`` (written by ``evaluate --data``).

    Attributes:
        path: The folder.
    """

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def predictions(self) -> Path:
        """One row per scored image: path, label (true), predicted, probabilities, source."""
        return self.path / "predictions.csv"

    @property
    def overlap(self) -> Path:
        """The leakage audit: external images matching the run's train/val/test images."""
        return self.path / "overlap.csv"


class EnsembleDir(RunDir):
    """An ensemble folder (``cxrlab ensemble create``): ensemble.json naming the members (absolute
    checkpoint paths, sha256), classes.json, and split.csv when the members share one split, and
    then the result files ``cxrlab evaluate`` writes into a run directory."""

    MANIFEST = "ensemble.json"

    @classmethod
    def holds_ensemble(cls, path: str | os.PathLike | _ResultsFolder) -> bool:
        """Whether ``path`` is an ensemble folder (or its manifest file)."""
        path = Path(path.path if isinstance(path, _ResultsFolder) else path)
        return (path / cls.MANIFEST).is_file() or (path.name == cls.MANIFEST and path.is_file())

    def __init__(self, path: str | os.PathLike | _ResultsFolder):
        super().__init__(path)
        if self.path.name == self.MANIFEST and self.path.is_file():
            self.path = self.path.parent

    @property
    def manifest(self) -> Path:
        return self.path / self.MANIFEST

    def read_manifest(self) -> dict[str, Any]:
        """The manifest (RunDirError when missing or damaged)."""
        manifest = self.read_json(self.manifest)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("members"), list):
            raise RunDirError(f"{self.manifest} lacks a 'members' list; create it again.")
        return manifest

    def checkpoint(self) -> Path:
        raise CheckpointError(
            f"{self.path} is an ensemble, not one checkpoint, and this command needs a single "
            f"model: pass one member (listed in {self.manifest}) instead. predict, evaluate, "
            "export, serve and report take the ensemble."
        )

    def find_checkpoint(self) -> Path | None:
        return None

    def is_refit(self) -> bool:
        """A member was refitted on train+val, so the members' shared val split is training data."""
        members = self.read_manifest()["members"] if self.manifest.is_file() else []
        return any(
            Path(m.get("checkpoint", "")).name == self.refit_checkpoint.name for m in members
        )

    def model_file(self) -> Path | None:
        return self.manifest if self.manifest.is_file() else None

    def read_split(self) -> pd.DataFrame:
        """The members' shared split; RunDirError when they were trained on different splits."""
        if self.split.is_file():
            return read_split_csv(self.split)
        raise RunDirError(
            f"The members of the ensemble {self.path} were not trained on one split (for "
            "instance the folds of a cross-validation), so no test set is held out from all of "
            "them: each member's test images are other members' training images, and scoring "
            "the ensemble on them would be optimistic. Report the members' out-of-fold results "
            "(the cv summary: `cxrlab cv` writes it) and score the ensemble on a collection none "
            "of them saw: `cxrlab evaluate ENSEMBLE --data EXTERNAL_FOLDER`."
        )

    def reference_split(self) -> pd.DataFrame:
        """The union of the members' splits (an image in any member's train split counts as
        train, then val, then test), for the leakage audit."""
        if self.split.is_file():
            return read_split_csv(self.split)
        runs = [RunDir(m["run_dir"]) for m in self.read_manifest()["members"] if m.get("run_dir")]
        frames = [r.read_split() for r in runs if r.has_split()]
        if not frames:
            raise RunDirError(f"No member of {self.path} has a split.csv to audit against.")
        union = pd.concat(frames, ignore_index=True)
        rank = union["split"].map({s: i for i, s in enumerate(SPLITS)}).fillna(len(SPLITS))
        union = union.assign(_rank=rank).sort_values("_rank", kind="stable")
        return union.drop_duplicates("path").drop(columns="_rank").reset_index(drop=True)
