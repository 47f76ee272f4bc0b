"""What ``--resume`` and a re-run find in a run directory: leftovers of a killed setup, damage.

A training killed with SIGKILL (or by a power cut) runs no clean-up. Two states need an answer:

* killed during setup (config.yaml and split.csv written, no epoch finished, so no
  ``checkpoints/last.ckpt``): nothing of value is lost, so a re-run without ``--overwrite``
  starts over (:func:`clear_setup_leftovers`) and ``--resume`` starts from the first epoch.
* a damaged ``last.ckpt`` (truncated by a full disk, a copy cut short): ``--resume`` stops with
  a message naming the file and the ways out (:func:`check_last_checkpoint`), not a zip-reader
  traceback. (cxrlab itself writes checkpoints atomically, so it never leaves one half-written.)

A cross-validation, a recipe comparison or a study reuses its finished runs and resumes its
interrupted ones; :func:`check_same_options` refuses one that was trained with other options
than asked now, which would otherwise be reported under the options asked for.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

from cxrlab.config import TrainConfig
from cxrlab.errors import CheckpointError, RunDirError
from cxrlab.rundir import RunDir

log = logging.getLogger(__name__)

#: Files and folders a training writes before its first epoch ends.
SETUP_FILES = (
    RunDir.CONFIG, RunDir.ENVIRONMENT, RunDir.SPLIT, RunDir.CLASSES, RunDir.HISTORY,
    RunDir.SKIPPED, RunDir.CHECKPOINTS, RunDir.LOGS,
)  # fmt: skip


def setup_leftovers(run: RunDir) -> list[Path] | None:
    """The entries of a run killed before its first epoch ended, or None when it is not one.

    A run qualifies when it has config.yaml, no last.ckpt, no train_summary.json, and holds
    nothing but :data:`SETUP_FILES` (a checkpoints folder without checkpoints at most).
    """
    if not run.holds_run() or run.is_finished() or run.last_checkpoint.exists():
        return None
    entries = list(run.path.iterdir())
    if any(e.name not in SETUP_FILES for e in entries):
        return None
    if run.checkpoints.is_dir() and any(p.suffix == ".ckpt" for p in run.checkpoints.iterdir()):
        return None
    return entries


def clear_setup_leftovers(run: RunDir) -> bool:
    """Remove what a training killed during setup left in ``run``; True when it did."""
    entries = setup_leftovers(run)
    if entries is None:
        return False
    log.warning(
        "%s holds a training that was stopped before its first epoch ended (no %s); starting it "
        "again from the beginning.",
        run.path,
        run.last_checkpoint.relative_to(run.path),
    )
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return True


def check_last_checkpoint(run: RunDir) -> None:
    """Raise a CheckpointError naming ``last.ckpt`` when it is not a whole checkpoint.

    Reads the zip directory and checks every member's CRC (a few hundred ms for a ResNet-50),
    which catches a truncated or overwritten file before Lightning's loader meets it.
    """
    last = run.last_checkpoint
    try:
        with zipfile.ZipFile(last) as archive:
            bad = archive.testzip()
        problem = None if bad is None else f"its member {bad} fails its checksum"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        problem = f"it cannot be read as a checkpoint ({type(exc).__name__}: {exc})"
    if problem is None:
        return
    best = run.best_checkpoint
    offer = (
        f"Copy {best} over it to resume from the best epoch instead, or "
        if best.is_file() and best != last
        else ""
    )
    raise CheckpointError(
        f"Cannot resume: {last} is damaged: {problem} (a truncated copy or a full disk?). "
        f"{offer}start the run again with --overwrite (or into another --out)."
    )


def check_same_options(config: TrainConfig, run: RunDir) -> None:
    """Raise a RunDirError when ``run`` was trained with other options than ``config``.

    Compares ``config`` with every value its recipe decides written in (what config.yaml
    records) against the run's config.yaml, leaving out the options that do not change what a
    run computes (:data:`cxrlab.config.NEUTRAL_FIELDS`). A config.yaml this version cannot read
    (an older cxrlab's) is not compared, with a warning.
    """
    from pydantic import ValidationError

    from cxrlab.config import option_differences
    from cxrlab.training.recipes import resolved_config

    try:
        saved = TrainConfig(**run.read_config())
    except (ValidationError, TypeError) as exc:
        log.warning("Cannot compare the options of %s with this run's (%s)", run.config, exc)
        return
    differences = option_differences(resolved_config(config), saved)
    if not differences:
        return
    shown = "; ".join(
        f"{name}: {there!r} there, {now!r} now"
        for name, (now, there) in list(differences.items())[:4]
    )
    more = f" and {len(differences) - 4} more" if len(differences) > 4 else ""
    raise RunDirError(
        f"{run.path} was trained with other options than asked now ({shown}{more}), so it "
        "cannot be reused or resumed for them. Choose another output folder, or remove "
        f"{run.path} to train it again."
    )
