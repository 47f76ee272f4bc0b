"""Cross-validation: K folds x S seeds of training + evaluation, then their summary.

Each (fold k, seed s) trains into ``<out>/fold{k}-seed{s}`` and is evaluated there. Finished runs
(``train_summary.json`` present and ``metrics.json`` newer than the checkpoint) are skipped, and an
interrupted one resumes from its ``last.ckpt``, so a CV is resumable by re-running the command.
The summary of the evaluated runs (:func:`~cxrlab.evaluation.cv_summary.summarize_cv`) reads only
their saved predictions, so it lives in evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlab.errors import ConfigError
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)


@dataclass
class CVResult:
    """What :func:`run_cv` did.

    Attributes:
        out_dir: The CV folder.
        run_dirs: Every run directory, fold-major.
        trained: Runs trained (or resumed) by this call.
        skipped: Finished runs reused as they were.
        summary: :func:`~cxrlab.evaluation.cv_summary.summarize_cv`'s dict (also in
            ``cv_summary.json``).
        files: Written files by short name.
    """

    out_dir: Path
    run_dirs: list[Path]
    trained: list[Path]
    skipped: list[Path]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _finished(run_dir: Path, n_boot: int, seed: int) -> bool:
    """Training finished; metrics.json (same settings and format) is newer than the checkpoint."""

    run = RunDir(run_dir)
    metrics = run.metrics
    ckpt = run.find_checkpoint()
    if not run.is_finished() or not metrics.is_file() or ckpt is None:
        return False
    if metrics.stat().st_mtime < ckpt.stat().st_mtime:
        return False
    from cxrlab.evaluation.evaluate import METRICS_FORMAT

    try:
        saved = json.loads(metrics.read_text())
    except json.JSONDecodeError:
        return False
    b = saved.get("bootstrap", {})
    current = saved.get("format") == METRICS_FORMAT  # older conventions: re-evaluate
    return current and b.get("n_boot") == n_boot and b.get("seed") == seed


@dataclass
class CellOutcome:
    """What :func:`run_cell` did with one run directory.

    Attributes:
        run_dir: The run directory.
        reused: It was finished and evaluated already; nothing ran.
        trained: Training ran (from scratch or resumed from ``last.ckpt``).
        resumed: Training resumed from ``last.ckpt``.
        train_wall: Seconds of :func:`~cxrlab.training.train` (scan, cache, model, fit).
        fit_seconds: Seconds of the fit alone (``train_summary.json``), also when reused.
        eval_seconds: Seconds of :func:`~cxrlab.evaluation.evaluate.evaluate_run`.
        used_prepared: Training used the ``prepared`` split it was handed instead of scanning.
    """

    run_dir: Path
    reused: bool
    trained: bool = False
    resumed: bool = False
    train_wall: float = 0.0
    fit_seconds: float | None = None
    eval_seconds: float = 0.0
    used_prepared: bool = False


def run_cell(
    config,
    *,
    n_boot: int = 1000,
    eval_seed: int = 0,
    device=None,
    progress=None,
    make_figures: bool = True,
    position: str = "",
    prepared=None,
) -> CellOutcome:
    """Train (or resume) and evaluate one run directory, or reuse it when it is finished.

    The one resumable unit of a cross-validation and of a study (:mod:`cxrlab.study`): a run
    whose training finished and whose metrics.json is current is left as it is; one with a
    ``last.ckpt`` resumes; a run that started but saved no epoch starts over. A finished or
    resumable run trained with other options than ``config`` is refused (RunDirError).

    Args:
        config: The run's :class:`~cxrlab.config.TrainConfig` (``out`` is the run directory;
            ``resume`` and ``overwrite`` are decided here).
        n_boot: Bootstrap resamples of the evaluation.
        eval_seed: Bootstrap seed.
        device: Device for predictions.
        progress: Passed to :func:`cxrlab.training.train`.
        make_figures: Draw the run's figures.
        position: Prefix of the log lines (e.g. ``"[3/8] "``).
        prepared: :func:`~cxrlab.data.prepare.prepare_split`'s result for ``config``, computed
            by the caller a moment ago (a study's plan); used when training starts afresh.
    """
    import time

    from cxrlab.evaluation.evaluate import evaluate_run
    from cxrlab.training import train

    run_dir = Path(config.out)
    run = RunDir(run_dir)
    if run.is_finished() or run.last_checkpoint.is_file():
        from cxrlab.training.resume import check_same_options

        check_same_options(config, run)
    if _finished(run_dir, n_boot, eval_seed):
        logger.info("%s%s is finished; reusing it", position, run_dir)
        return CellOutcome(run_dir, reused=True, fit_seconds=_fit_seconds(run))
    outcome = CellOutcome(run_dir, reused=False)
    if not run.is_finished():
        resume = run.last_checkpoint.is_file()
        overwrite = not resume and run.holds_run()
        cfg = config.model_copy(update={"resume": resume, "overwrite": overwrite})
        logger.info(
            "%straining %s (seed %d)%s", position, run_dir, cfg.seed, " (resuming)" * resume
        )
        handed = prepared if not resume else None
        start = time.perf_counter()
        if handed is not None:
            train(cfg, progress=progress, prepared=handed)
        else:
            train(cfg, progress=progress)
        outcome.train_wall = time.perf_counter() - start
        outcome.trained, outcome.resumed = True, resume
        outcome.used_prepared = handed is not None
    start = time.perf_counter()
    evaluate_run(run_dir, n_boot=n_boot, seed=eval_seed, device=device, make_figures=make_figures)
    outcome.eval_seconds = time.perf_counter() - start
    outcome.fit_seconds = _fit_seconds(run)
    return outcome


def _fit_seconds(run: RunDir) -> float | None:
    try:
        seconds = run.read_json(run.summary).get("seconds")
    except Exception:  # a damaged summary only loses the timing
        return None
    return float(seconds) if isinstance(seconds, (int, float)) else None


def run_cv(
    config,
    *,
    folds: int,
    seeds: int | Sequence[int],
    n_boot: int = 1000,
    eval_seed: int = 0,
    device=None,
    progress=None,
    make_figures: bool = True,
) -> CVResult:
    """Train and evaluate every (fold, seed) of a K-fold cross-validation, then summarise.

    Args:
        config: A :class:`cxrlab.config.TrainConfig`; ``config.out`` is the CV folder; its
            ``split.folds``, ``split.fold``, ``seed`` and ``out`` are set per run, and
            ``split.seed`` to ``config.split.seed`` (else ``config.seed``) for every run, so all
            training seeds share the folds.
        folds: K >= 2.
        seeds: S (seeds 0..S-1) or an explicit list of seeds.
        n_boot: Bootstrap resamples for each run's and the pooled CIs.
        eval_seed: Bootstrap seed.
        device: Device for predictions (training follows ``config.accelerator``).
        progress: Passed to :func:`cxrlab.training.train` (cache decoding progress).
        make_figures: Draw each run's figures (off: metrics and tables only, faster).

    Returns:
        A :class:`CVResult`; ``cv_summary.{json,md,tex}`` are written into ``config.out``.
    """
    # Imported here: the evaluation stack takes ~1 s to import, and a study's planner reads
    # cell states through this module (``_finished``) before any cell needs it.
    from cxrlab.evaluation.cv_summary import cv_run_name, summarize_cv, write_cv_summary

    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}.")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("--seeds must be at least 1.")
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"Seeds must be distinct, got {seed_list}.")
    out = Path(config.out)
    # One split seed for every training seed: the folds stay fixed, so the spread across seeds
    # is training variance, not split variance.
    split_seed = config.split.seed if config.split.seed is not None else config.seed
    run_dirs, trained, skipped = [], [], []
    total = folds * len(seed_list)
    for k in range(folds):
        for s in seed_list:
            run_dir = out / cv_run_name(k, s)
            run_dirs.append(run_dir)
            cfg = config.model_copy(
                update={
                    "out": run_dir,
                    "seed": s,
                    "split": config.split.model_copy(
                        update={"folds": folds, "fold": k, "seed": split_seed}
                    ),
                }
            )
            outcome = run_cell(
                cfg, n_boot=n_boot, eval_seed=eval_seed, device=device, progress=progress,
                make_figures=make_figures, position=f"[{len(run_dirs)}/{total}] ",
            )  # fmt: skip
            if outcome.reused:
                skipped.append(run_dir)
            elif outcome.trained:
                trained.append(run_dir)
    summary = summarize_cv(run_dirs, n_boot=n_boot, seed=eval_seed)
    summary["folds"] = folds
    summary["seeds"] = seed_list
    files = write_cv_summary(summary, out)
    return CVResult(
        out_dir=out,
        run_dirs=run_dirs,
        trained=trained,
        skipped=skipped,
        summary=summary,
        files=files,
    )
