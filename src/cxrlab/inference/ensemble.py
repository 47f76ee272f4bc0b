"""Ensembles: several trained models as one predictor that averages their probabilities.

:class:`EnsemblePredictor` implements the :class:`~cxrlab.inference.predictor.Predictor`
protocol: the float64 mean of the members' probabilities (each member follows the one precision
policy). Members must agree on classes (same order), input size, channels and decode
preprocessing.

On disk an ensemble is a folder (:class:`cxrlab.rundir.EnsembleDir`) whose ``ensemble.json``
names the members by absolute checkpoint path with each file's sha256, checked whenever the
ensemble is loaded, so a retrained member is noticed rather than silently swapped in.
:func:`create_ensemble` writes it from run directories, checkpoints, or ``cxrlab cv`` / ``cxrlab
study`` folders (all their finished ``fold<k>-seed<s>`` / ``seed<s>`` runs);
:func:`cxrlab.inference.predictor.load_predictor` loads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.errors import CheckpointError, ConfigError
from cxrlab.inference.predictor import DEFAULT_BATCH, Predictor
from cxrlab.rundir import EnsembleDir, RunDir, split_fingerprint

logger = logging.getLogger(__name__)

#: Version of ensemble.json's layout.
ENSEMBLE_FORMAT = 1

#: Run names inside a ``cxrlab cv`` folder (:func:`cxrlab.evaluation.cv_summary.cv_run_name`:
#: ``fold<k>-seed<s>``) or a study's ``runs/<label>/`` (that, or ``seed<s>`` for one split).
_MEMBER_RUN = re.compile(r"^(fold\d+-)?seed\d+$")
#: A study folder keeps its cells' runs under this subfolder (cxrlab.study.planner.RUNS_DIR).
_STUDY_RUNS = "runs"


class EnsemblePredictor:
    """Several predictors as one: the mean of their float64 probabilities.

    Args:
        members: Predictors (PyTorch or ONNX) agreeing on classes, input size, channels and
            preprocessing.
        names: A label per member for messages (default ``member 1``, ``member 2``...).

    Attributes:
        members: The member predictors.
        backend: ``"ensemble"``.
        model_name: ``"ensemble(3 x resnet18)"``, or ``"ensemble(resnet18 + small-cnn)"`` when
            the architectures differ.

    Raises:
        ConfigError: No member.
        CheckpointError: A member differs from the first in classes, input size, channels or
            preprocessing (the message names it).
    """

    backend = "ensemble"

    def __init__(self, members: Sequence[Predictor], *, names: Sequence[str] | None = None):
        members = list(members)
        if not members:
            raise ConfigError("An ensemble needs at least one member model.")
        if names is None:
            names = [f"member {i + 1}" for i in range(len(members))]
        names = list(names)
        if len(names) != len(members):
            raise ConfigError(f"{len(names)} names were given for {len(members)} members.")
        first = members[0]
        for name, member in zip(names[1:], members[1:], strict=True):
            for what, mine, theirs in (
                ("classes (in output order)", tuple(member.classes), tuple(first.classes)),
                ("input size", int(member.image_size), int(first.image_size)),
                ("input channels", int(member.in_chans), int(first.in_chans)),
                ("decode preprocessing", member.preprocess or None, first.preprocess or None),
            ):
                if mine != theirs:
                    raise CheckpointError(
                        f"Ensemble member {name} differs from {names[0]} in its {what}: "
                        f"{mine!r} vs {theirs!r}. Averaging probabilities needs members trained "
                        "on the same classes, at the same image size, channels and "
                        "preprocessing; leave that member out or retrain it to match."
                    )
        self.members = members
        self.names = names
        self.classes = tuple(first.classes)
        self.image_size = int(first.image_size)
        self.in_chans = int(first.in_chans)
        self.preprocess: dict[str, Any] | None = first.preprocess or None
        self.model_name = ensemble_name([m.model_name for m in members])

    def __len__(self) -> int:
        return len(self.members)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 in [0, 1] -> (N, K) float64 mean of the members' probabilities."""
        return np.mean(np.stack([m.predict_proba(x) for m in self.members]), axis=0)

    def predict_images(
        self, images: np.ndarray, *, batch_size: int = DEFAULT_BATCH, features: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, S, S) uint8 -> ((N, K) float64 mean probabilities, features or None).

        ``features=True`` returns the members' penultimate features side by side, (N, D_1 + ...
        + D_M) float32 in member order (PyTorch members only; an ONNX member refuses).
        """
        probs, feats = [], []
        for member in self.members:
            p, f = member.predict_images(images, batch_size=batch_size, features=features)
            probs.append(p)
            feats.append(f)
        mean = np.mean(np.stack(probs), axis=0)
        return mean, (np.concatenate(feats, axis=1) if features else None)


def ensemble_name(model_names: Sequence[str]) -> str:
    """``ensemble(3 x resnet18)``; ``ensemble(resnet18 + small-cnn)`` for mixed architectures."""
    names = list(model_names)
    if len(set(names)) == 1:
        return f"ensemble({len(names)} x {names[0]})"
    return "ensemble(" + " + ".join(names) + ")"


# -- members -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One member model: its checkpoint file and, when known, the run directory it came from."""

    checkpoint: Path
    run_dir: Path | None = None

    @property
    def label(self) -> str:
        return str(self.run_dir if self.run_dir is not None else self.checkpoint)


def _run_of(checkpoint: Path) -> Path | None:
    """The run directory of ``RUN/checkpoints/x.ckpt``, when that folder holds a split."""
    parent = checkpoint.parent
    if parent.name == RunDir.CHECKPOINTS and RunDir(parent.parent).has_split():
        return parent.parent
    return None


def resolve_members(paths: Sequence[str | os.PathLike]) -> list[Member]:
    """Turn run directories, checkpoints, ensembles and cv/study folders into member models.

    A run directory gives its best checkpoint; a ``.ckpt`` itself; an ensemble folder its
    members; any other folder every finished run named like a cv run (``fold<k>-seed<s>``) or a
    study cell (also ``seed<s>``) directly inside it or under its ``runs/<label>/``.

    Raises:
        ConfigError: A path is none of these, or a checkpoint is named twice.
    """
    members: list[Member] = []
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        if EnsembleDir.holds_ensemble(path):
            members += [
                Member(Path(m["checkpoint"]), Path(m["run_dir"]) if m.get("run_dir") else None)
                for m in EnsembleDir(path).read_manifest()["members"]
            ]
        elif path.is_file():
            members.append(Member(path, _run_of(path)))
        elif path.is_dir() and RunDir(path).find_checkpoint() is not None:
            members.append(Member(RunDir(path).checkpoint(), path))
        elif path.is_dir():
            found = _runs_inside(path)
            if not found:
                raise ConfigError(
                    f"{path} is neither a run directory (no checkpoints/best.ckpt), a checkpoint "
                    "file, an ensemble, nor a `cxrlab cv` / `cxrlab study` folder holding finished "
                    "fold<k>-seed<s> runs. Pass run directories, .ckpt files or such a folder."
                )
            members += [Member(RunDir(d).checkpoint(), d) for d in found]
        else:
            raise ConfigError(f"Ensemble member {path} does not exist.")
    seen: dict[Path, str] = {}
    for m in members:
        key = m.checkpoint.resolve()
        if key in seen:
            raise ConfigError(
                f"The checkpoint {m.checkpoint} is named twice (also as {seen[key]}); an "
                "ensemble would weight it double. Name each member once."
            )
        seen[key] = m.label
    return members


def _runs_inside(folder: Path) -> list[Path]:
    """Finished cv / study runs in ``folder`` (sorted; unfinished ones are logged and skipped)."""
    candidates = [d for d in sorted(folder.iterdir()) if d.is_dir()]
    study = folder / _STUDY_RUNS
    if study.is_dir():
        candidates += [d for label in sorted(study.iterdir()) if label.is_dir()
                       for d in sorted(label.iterdir()) if d.is_dir()]  # fmt: skip
    found = []
    for d in candidates:
        if not _MEMBER_RUN.match(d.name):
            continue
        run = RunDir(d)
        if run.is_finished() and run.find_checkpoint() is not None:
            found.append(d)
        else:
            logger.warning("Skipping %s: its training has not finished", d)
    return found


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- on disk -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnsembleResult:
    """What :func:`create_ensemble` wrote.

    Attributes:
        out: The ensemble folder.
        manifest: ensemble.json's content.
    """

    out: EnsembleDir
    manifest: dict[str, Any]

    @property
    def shared_split(self) -> bool:
        return bool(self.manifest["shared_split"])


def _split_identity(run_dir: Path | None) -> dict[str, Any] | None:
    """Test and val fingerprints of a member's split, or None without one."""
    if run_dir is None or not RunDir(run_dir).has_split():
        return None
    frame = RunDir(run_dir).read_split()
    return {which: split_fingerprint(frame, which) for which in ("test", "val")}


def create_ensemble(
    members: Sequence[str | os.PathLike], out: str | os.PathLike, *, device: str | None = "cpu"
) -> EnsembleResult:
    """Write an ensemble folder: ``ensemble.json``, ``classes.json`` and, when shared, the split.

    Members share one split when every one comes from a run directory and their test and
    validation sets are identical (same :func:`~cxrlab.rundir.split_fingerprint`), as several
    seeds trained on one split; then ``split.csv`` is copied in, and ``cxrlab evaluate ENS``
    scores the ensemble on that test set. Fold models of a cross-validation do not.

    Args:
        members: Run directories, ``.ckpt`` files, ensembles, or cv / study folders.
        out: The ensemble folder (created; an earlier ensemble there is replaced).
        device: Where members are loaded to check that they agree.

    Raises:
        ConfigError: No member, a member named twice, or ``out`` is a member's run directory.
        CheckpointError: A member cannot be loaded or differs in classes, size or preprocessing.
    """
    from cxrlab import __version__
    from cxrlab.inference.predictor import TorchPredictor
    from cxrlab.io import write_json

    resolved = resolve_members(members)
    ens = EnsembleDir(out)
    for m in resolved:
        if m.run_dir is not None and ens.path.absolute() == m.run_dir.absolute():
            raise ConfigError(f"--out {ens.path} is a member's run directory; choose another.")
    if ens.path.is_dir() and RunDir(ens.path).holds_run():
        raise ConfigError(f"--out {ens.path} holds a training run; choose another folder.")
    predictors = [TorchPredictor.from_checkpoint(m.checkpoint, device=device) for m in resolved]
    joined = EnsemblePredictor(predictors, names=[m.label for m in resolved])
    identities = [_split_identity(m.run_dir) for m in resolved]
    shared = all(i is not None for i in identities) and all(i == identities[0] for i in identities)
    manifest = {
        "cxrlab_version": __version__,
        "format": ENSEMBLE_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_name": joined.model_name,
        "combine": "mean of the members' softmax probabilities (float64)",
        "classes": list(joined.classes),
        "image_size": joined.image_size,
        "in_chans": joined.in_chans,
        "preprocess": joined.preprocess,
        "shared_split": shared,
        "test_set": identities[0]["test"] if shared else None,
        "members": [
            {
                "checkpoint": str(m.checkpoint.absolute()),
                "sha256": file_sha256(m.checkpoint),
                "run_dir": str(m.run_dir.absolute()) if m.run_dir is not None else None,
                "model_name": p.model_name,
                "test_set": RunDir(m.run_dir).fingerprint() if i is not None else None,
            }
            for m, p, i in zip(resolved, predictors, identities, strict=True)
        ],
    }
    ens.path.mkdir(parents=True, exist_ok=True)
    ens.write_classes(list(joined.classes))
    if shared:
        ens.write_split(RunDir(resolved[0].run_dir).read_split())
    elif ens.split.is_file():
        ens.split.unlink()  # an earlier ensemble's split no longer applies
    write_json(ens.manifest, manifest)
    logger.info("Wrote %s: %s, %s split", ens.manifest, joined.model_name,
                "one shared" if shared else "no shared")  # fmt: skip
    return EnsembleResult(ens, manifest)


def ensemble_members(ens: str | os.PathLike | EnsembleDir, *, verify: bool = True) -> list[Member]:
    """The members named by an ensemble's manifest, each file checked against its sha256.

    Raises:
        CheckpointError: A member file is missing or changed since the ensemble was created.
    """
    ens = EnsembleDir(ens)
    members = []
    for entry in ens.read_manifest()["members"]:
        path = Path(entry["checkpoint"])
        if not path.is_file():
            raise CheckpointError(
                f"Member {path} of the ensemble {ens.path} no longer exists. Restore it, or "
                "create the ensemble again from the members that remain."
            )
        if verify and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            raise CheckpointError(
                f"Member {path} of the ensemble {ens.path} changed since the ensemble was "
                "created (its sha256 differs from ensemble.json's), e.g. it was retrained. "
                "Create the ensemble again: `cxrlab ensemble create ... --out "
                f"{ens.path}`."
            )
        members.append(Member(path, Path(entry["run_dir"]) if entry.get("run_dir") else None))
    if not members:
        raise CheckpointError(f"{ens.manifest} names no member; create the ensemble again.")
    return members


def load_ensemble(
    ens: str | os.PathLike | EnsembleDir, *, device: str | None = None
) -> EnsemblePredictor:
    """An ensemble folder (or its ensemble.json) as an :class:`EnsemblePredictor`."""
    from cxrlab.inference.predictor import TorchPredictor

    members = ensemble_members(ens)
    return EnsemblePredictor(
        [TorchPredictor.from_checkpoint(m.checkpoint, device=device) for m in members],
        names=[m.label for m in members],
    )


def ensemble_module(ens: str | os.PathLike | EnsembleDir):
    """The members as one PyTorch module whose output is ``log(mean softmax)``, for ONNX export.

    Its softmax is exactly the ensemble's mean probability (computed as ``logsumexp`` of the
    members' log-softmax minus ``log M``, stable where a probability is tiny), so the exported
    graph keeps the single-model contract (softmax of the output). ``meta`` is the first
    member's with ``model_name`` ``ensemble(M x name)``.

    Raises:
        CheckpointError: A member is missing, changed, or differs in classes or input.
    """
    import dataclasses
    import math

    import torch
    from torch import nn

    from cxrlab.models.checkpoint import load_classifier

    members = ensemble_members(ens)
    loaded = [load_classifier(m.checkpoint) for m in members]
    # The same agreement checks as the predictor (classes, size, channels, preprocessing).
    from cxrlab.inference.predictor import TorchPredictor

    joined = EnsemblePredictor(
        [TorchPredictor(model, device="cpu") for model, _ in loaded],
        names=[m.label for m in members],
    )

    class EnsembleModule(nn.Module):
        def __init__(self, models):
            super().__init__()
            self.members = nn.ModuleList(models)
            self.log_m = math.log(len(models))

        def forward(self, x):
            logp = torch.stack([m(x).float().log_softmax(dim=1) for m in self.members])
            return torch.logsumexp(logp, dim=0) - self.log_m

    module = EnsembleModule([model for model, _ in loaded]).eval()
    module.meta = dataclasses.replace(loaded[0][1], model_name=joined.model_name)
    return module
