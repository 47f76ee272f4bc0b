"""``run_study``: validate, plan, run every unfinished cell, record what happened.

Resumable by design: the state of every cell is read from disk each time (see
:mod:`cxrlab.study.planner`), so a killed study re-run with the same file continues: finished
cells are skipped, interrupted ones resume from their ``last.ckpt``, failed ones are retried, and
an edited study file adds or drops cells without retraining the rest. The scan cache and the
decode cache are shared by all cells (every seed of one fold shares the split, so one fold's
images are decoded once for every model and seed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlab.errors import ConfigError
from cxrlab.io import refuse_inside, write_json
from cxrlab.study.planner import (
    CELLS_DIR,
    SLURM_DIR,
    STUDY_FILE,
    Plan,
    cell_status_path,
    describe,
    make_plan,
    read_status,
    survey,
)
from cxrlab.study.schema import StudyConfig

logger = logging.getLogger(__name__)
STUDY_FORMAT = 1


@dataclass
class StudyResult:
    """What :func:`run_study` did.

    Attributes:
        plan: The plan (cell states as they were before running).
        statuses: Cell id -> the status its job returned (cells that ran now).
        wall_seconds: Wall time of the whole call.
        files: Written files by short name (``study``, and the report's when made).
    """

    plan: Plan
    statuses: dict[str, dict[str, Any]]
    wall_seconds: float
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s.get("state") == "failed"]


def check_out(study: StudyConfig, out: Path) -> None:
    """Refuse an out folder inside the dataset, or one that holds something else than this study.

    Raises:
        ConfigError: ``out`` holds another study (another name or dataset) or files that are no
            study's.
    """
    refuse_inside(out, study.data, "--out")
    for folder in study.external.values():
        refuse_inside(out, folder, "--out")
    if not out.exists() or not any(out.iterdir()):
        return
    saved = read_status(out / STUDY_FILE)
    if not saved:
        raise ConfigError(
            f"--out {out} is not empty and holds no {STUDY_FILE}, so it is not a study folder. "
            "Choose an empty or new folder for the study (or the folder of this study)."
        )
    name, data = saved.get("name"), saved.get("data")
    if name != study.name or Path(str(data)).resolve() != study.data.resolve():
        raise ConfigError(
            f"--out {out} holds another study ({name!r} on {data}), not {study.name!r} on "
            f"{study.data}. A study folder holds one study: choose another --out, or give this "
            "study the same name (the `name:` key, default the file's stem) and dataset."
        )


def _spec(plan: Plan, cell, position: str, *, handover: bool) -> dict[str, Any]:
    s = plan.study
    extra = {}
    if handover and cell.id == plan.prepared_cell and plan.prepared is not None:
        # The plan's scan and split are this cell's own: it trains on them, not on a rescan.
        extra = {"prepared": plan.prepared, "prepared_seconds": plan.scan_seconds}
    return {
        "id": cell.id,
        "config": cell.config.model_dump(mode="json"),
        "status": str(cell_status_path(plan.out, cell)),
        "recipe": cell.recipe_hash(),
        "n_boot": s.n_boot,
        "eval_seed": s.eval_seed,
        "figures": s.figures,
        "fresh": cell.state == "changed",
        "position": position,
        **extra,
    }


def write_study_file(plan: Plan, *, state: str, extra: dict[str, Any] | None = None) -> Path:
    """``study.json``: the study, its cells with their states, and ``extra``."""
    from cxrlab import __version__

    s = plan.study
    return write_json(
        plan.out / STUDY_FILE,
        {
            "format": STUDY_FORMAT,
            "name": s.name,
            "data": str(s.data.resolve()),
            "state": state,
            "cxrlab_version": __version__,
            "study": s.model_dump(mode="json"),
            "baseline": s.baseline_label,
            "labels": s.labels(),
            **plan.to_dict(),
            **(extra or {}),
        },
    )


def run_study(
    study: StudyConfig,
    out: str | os.PathLike,
    *,
    launcher=None,
    calibrate: bool = True,
    retrain_changed: bool = False,
    dry_run: bool = False,
    on_plan: Callable[[Plan, list[str]], None] | None = None,
) -> StudyResult:
    """Run every cell of ``study`` that is not finished, into ``out``.

    Args:
        study: A validated :class:`~cxrlab.study.schema.StudyConfig`.
        out: The study folder.
        launcher: :class:`~cxrlab.study.launchers.LocalLauncher` (default) or
            :class:`~cxrlab.study.launchers.SlurmLauncher`.
        calibrate: Time a few training steps per model for the plan's estimate.
        retrain_changed: Retrain finished (or started) cells whose options differ from the
            study's now (otherwise such cells stop the study before anything runs).
        dry_run: Plan (and calibrate), write nothing, run nothing.
        on_plan: Called with the plan and its description before any cell runs.

    Raises:
        ConfigError: See :func:`check_out`; changed cells without ``retrain_changed``.
    """
    from cxrlab.study.external import evaluate_external
    from cxrlab.study.launchers import LocalLauncher

    start = time.perf_counter()
    out = Path(out)
    check_out(study, out)
    plan = survey(make_plan(study, out), calibrate=calibrate)
    lines = describe(plan)
    if on_plan is not None:
        on_plan(plan, lines)
    for line in lines:
        logger.debug("%s", line)
    changed = [c for c in plan.cells if c.state == "changed"]
    if changed and not retrain_changed:
        raise ConfigError(
            f"{len(changed)} cell(s) of {out} were trained (or started) with other options than "
            f"the study file gives now (first: {changed[0].run_dir}). Pass --retrain-changed to "
            "retrain them with the new options, or restore the study file's train options."
        )
    if dry_run:
        return StudyResult(plan, {}, time.perf_counter() - start)
    (out / CELLS_DIR).mkdir(parents=True, exist_ok=True)
    write_study_file(plan, state="running")
    todo = plan.to_run()
    launcher = launcher or LocalLauncher()
    # Only a cell that starts in this process right away gets the plan's scan: a worker or a
    # SLURM task (maybe hours later) scans for itself, from the warm scan cache.
    handover = isinstance(launcher, LocalLauncher) and launcher.jobs == 1
    specs = [_spec(plan, c, f"[{i + 1}/{len(todo)}] ", handover=handover)
             for i, c in enumerate(todo)]  # fmt: skip
    plan.prepared = None  # the cell holds it now; nothing else needs the manifest
    if hasattr(launcher, "folder") and launcher.folder is None:
        launcher.folder = out / SLURM_DIR
    statuses = {}
    for spec, status in zip(specs, launcher.run(specs), strict=True):
        statuses[spec["id"]] = status
        if status.get("state") == "failed" and read_status(Path(spec["status"])).get("state") in (
            None,
            "running",
        ):
            write_json(Path(spec["status"]), status)  # the task died before writing it
    # Refresh the states from disk (a SLURM array without --wait is still running).
    refreshed = make_plan(study, out)
    refreshed.n_images, refreshed.n_split = plan.n_images, plan.n_split
    refreshed.seconds_per_image = plan.seconds_per_image
    refreshed.calibration_keys = plan.calibration_keys
    externals = []
    for label, name, state in refreshed.external:
        for cell in refreshed.cells:
            if cell.label == label and cell.state == "finished" and state != "finished":
                result = evaluate_external(cell.run_dir, name, study.external[name])
                externals.append({"cell": cell.id, "set": name, **result})
    wall = time.perf_counter() - start
    finished = all(c.state == "finished" for c in refreshed.cells)
    path = write_study_file(
        refreshed,
        state="finished" if finished else "incomplete",
        extra={"last_run": {"wall_seconds": wall, "ran": len(specs),
                            "launcher": type(launcher).__name__}, "external_results": externals},
    )  # fmt: skip
    return StudyResult(plan, statuses, wall, {"study": path})
