"""The study plan: its cells, their state on disk, the image-passes and a time estimate.

A cell is one (model, variant, fold, seed); it trains into ``<out>/runs/<label>/<run name>``
(``fold<k>-seed<s>`` like ``cxrlab cv``, or ``seed<s>`` for a single split), an ordinary run
directory. Its state is read from that directory (:func:`cxrlab.training.cv.run_cell`'s rules)
and from ``<out>/cells/<cell id>.json``, the status the cell's job wrote (failed cells keep their
error there). A finished or started cell whose options differ from the study's now is
``changed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlab.config import NEUTRAL_FIELDS, TrainConfig
from cxrlab.rundir import RunDir
from cxrlab.study.schema import StudyConfig, cell_train_config, split_label

logger = logging.getLogger(__name__)

#: File names inside a study folder (the cells' run directories are RunDirs under ``runs/``).
STUDY_FILE = "study.json"
CELLS_DIR = "cells"
RUNS_DIR = "runs"
REPORT_DIR = "report"
#: The study page inside REPORT_DIR (``cxrlab study report``).
STUDY_PAGE = "study.html"
SLURM_DIR = "slurm"


@dataclass
class Cell:
    """One cell of the grid.

    Attributes:
        label: ``model`` or ``model+variant``.
        fold: The test fold (None: the single split).
        seed: Training seed.
        run_dir: Its run directory.
        config: Its TrainConfig.
        state: ``finished`` (trained and evaluated), ``partial`` (started; resumes), ``failed``
            (its last attempt raised; retried), ``changed`` (finished or started with other
            options) or ``new``.
        error: The recorded error of a failed cell.
    """

    label: str
    fold: int | None
    seed: int
    run_dir: Path
    config: TrainConfig
    state: str = "new"
    error: str = ""

    @property
    def model(self) -> str:
        return split_label(self.label)[0]

    @property
    def id(self) -> str:
        return f"{_safe(self.label)}__{self.run_dir.name}"

    def recipe_hash(self) -> str:
        """Hash of the options that change what the cell computes."""
        values = self.config.model_dump(mode="json", exclude=set(NEUTRAL_FIELDS))
        return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """What ``cxrlab study run`` will do.

    Attributes:
        study: The validated study.
        out: The study folder.
        cells: Every cell, label-major, then fold, then seed.
        removed: Run directories under ``runs/`` that the study no longer lists (kept on disk).
        external: (label, set name, state) of each external evaluation.
        n_images: Images of the dataset (after undecodable ones are left out).
        n_split: Images per split of the first fold (train, val, test).
        seconds_per_image: Calibrated training seconds per image per model label.
        calibration_keys: :func:`calibration_key` of each label calibrated by timing steps (or
            reused from study.json), saved so that a rerun reuses the calibration.
        scan_seconds: How long the plan's scan took.
        calibration_seconds: How long the calibration took.
        prepared: The plan's scan and split (:class:`~cxrlab.data.prepare.PreparedSplit`), of
            the first cell to run (``prepared_cell``), which trains on it when it runs in this
            process instead of scanning again.
        prepared_cell: Id of that cell.
    """

    study: StudyConfig
    out: Path
    cells: list[Cell]
    removed: list[Path] = field(default_factory=list)
    external: list[tuple[str, str, str]] = field(default_factory=list)
    n_images: int = 0
    n_split: dict[str, int] = field(default_factory=dict)
    seconds_per_image: dict[str, float] = field(default_factory=dict)
    calibration_keys: dict[str, str] = field(default_factory=dict)
    scan_seconds: float = 0.0
    calibration_seconds: float = 0.0
    prepared: Any = None
    prepared_cell: str | None = None

    def to_run(self) -> list[Cell]:
        return [c for c in self.cells if c.state != "finished"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cells:
            out[c.state] = out.get(c.state, 0) + 1
        return out

    def image_passes(self, cells: list[Cell] | None = None) -> int:
        """Images through a network: epochs x (train + val) + the evaluation's val + test."""
        total = 0
        for c in self.to_run() if cells is None else cells:
            epochs = _epochs(c.config)
            tr, va, te = (self.n_split.get(k, 0) for k in ("train", "val", "test"))
            total += epochs * (tr + va) + va + te
        return total

    def estimate_seconds(self) -> float | None:
        """Training-time estimate of the cells to run (None without a calibration)."""
        if not self.seconds_per_image:
            return None
        total = 0.0
        for c in self.to_run():
            rate = self.seconds_per_image.get(c.label)
            if rate is None:
                return None
            epochs = _epochs(c.config)
            tr, va, te = (self.n_split.get(k, 0) for k in ("train", "val", "test"))
            # A forward-only image costs about a third of a training one.
            total += rate * (epochs * tr + (epochs * va + va + te) / 3)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": [
                {
                    "id": c.id,
                    "label": c.label,
                    "model": c.model,
                    "fold": c.fold,
                    "seed": c.seed,
                    "run_dir": str(c.run_dir.relative_to(self.out)),
                    "state": c.state,
                    "error": c.error,
                    "recipe": c.recipe_hash(),
                }
                for c in self.cells
            ],  # fmt: skip
            "external": [
                {"label": label, "set": name, "state": state}
                for label, name, state in self.external
            ],
            "removed": [str(p) for p in self.removed],
            "n_images": self.n_images,
            "n_split": self.n_split,
            "calibration": {
                label: {"seconds_per_image": float(rate), "key": self.calibration_keys[label]}
                for label, rate in self.seconds_per_image.items()
                if label in self.calibration_keys
            },
        }


def _epochs(config: TrainConfig) -> int:
    from cxrlab.training.recipes import resolve_recipe

    return resolve_recipe(config).epochs


def _safe(label: str) -> str:
    return label.replace("/", "--")


def cell_status_path(out: Path, cell: Cell) -> Path:
    return out / CELLS_DIR / f"{cell.id}.json"


def read_status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def make_plan(study: StudyConfig, out: Path) -> Plan:
    """Every cell of ``study`` in ``out`` with its state (nothing is trained or written)."""
    from cxrlab.training.cv import _finished

    out = Path(out)
    folds = list(range(study.folds)) if study.folds else [None]
    cells = []
    for label in study.labels():
        for fold in folds:
            for seed in study.seeds:
                name = f"fold{fold}-seed{seed}" if fold is not None else f"seed{seed}"
                run_dir = out / RUNS_DIR / _safe(label) / name
                cfg = cell_train_config(study, label, seed=seed, fold=fold, out=run_dir)
                cells.append(Cell(label, fold, seed, run_dir, cfg))
    for cell in cells:
        status = read_status(cell_status_path(out, cell))
        recorded = status.get("recipe")
        changed = bool(recorded) and recorded != cell.recipe_hash()
        if _finished(cell.run_dir, study.n_boot, study.eval_seed):
            cell.state = "changed" if changed else "finished"
        elif status.get("state") == "failed":
            cell.state, cell.error = "failed", str(status.get("error", ""))
        elif RunDir(cell.run_dir).holds_run():
            cell.state = "changed" if changed else "partial"
    listed = {c.run_dir.resolve() for c in cells}
    runs = out / RUNS_DIR
    removed = sorted(
        d
        for d in (runs.glob("*/*") if runs.is_dir() else [])
        if d.is_dir() and d.resolve() not in listed
    )
    external = []
    if study.external:
        from cxrlab.study.external import external_state

        for label in study.labels():
            finished = [c for c in cells if c.label == label and c.state == "finished"]
            for name in study.external:
                states = {external_state(c.run_dir, name) for c in finished}
                state = "finished" if finished and states == {"finished"} else "ready"
                external.append((label, name, state))
    return Plan(study=study, out=out, cells=cells, removed=removed, external=external)


def survey(plan: Plan, *, calibrate: bool = True, device: str | None = None) -> Plan:
    """Fill in the dataset's size and the calibration.

    The size comes from one scan and split with the options of the first cell to run: the very
    :func:`~cxrlab.data.prepare.prepare_split` call that cell's training makes, so it warms the
    scan cache for every cell and is kept (``plan.prepared``) for that cell to train on.
    """
    from cxrlab.data.prepare import prepare_split

    cell = (plan.to_run() or plan.cells)[0]
    first = cell.config
    start = time.perf_counter()
    prepared = prepare_split(
        first.data, first.split, seed=first.seed, strict=first.strict,
        limit_per_class=first.limit_per_class, cache_dir=first.cache_dir,
    )  # fmt: skip
    plan.scan_seconds = time.perf_counter() - start
    plan.prepared, plan.prepared_cell = prepared, cell.id
    plan.n_images = len(prepared.manifest)
    plan.n_split = {
        k: int((prepared.manifest["split"] == k).sum()) for k in ("train", "val", "test")
    }
    start = time.perf_counter()
    if calibrate and plan.to_run():
        # A finished cell's own fit time is the best calibration; then the last run's
        # calibration of the same set-up (study.json); otherwise time a few steps.
        seen = _measured_rates(plan)
        saved = read_status(plan.out / STUDY_FILE).get("calibration") or {}
        for cell in plan.to_run():
            if cell.label in seen:
                continue
            key = calibration_key(cell.config, device)
            entry = saved.get(cell.label) or {}
            if entry.get("key") == key and isinstance(entry.get("seconds_per_image"), float):
                seen[cell.label] = entry["seconds_per_image"]
            else:
                seen[cell.label] = calibrate_cell(cell.config, prepared.classes, device=device)
            plan.calibration_keys[cell.label] = key
        plan.seconds_per_image = seen
    plan.calibration_seconds = time.perf_counter() - start
    return plan


def calibration_key(config: TrainConfig, device: str | None = None) -> str:
    """What a calibration depends on: the options that change the cost of a training step."""
    values = config.model_dump(
        mode="json", exclude={*NEUTRAL_FIELDS, "seed", "split", "epochs", "data"}
    )
    values["device"] = device or _calibration_device(config)
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def _measured_rates(plan: Plan) -> dict[str, float]:
    """Training seconds per image of each label, from its finished cells' fit seconds."""
    rates: dict[str, list[float]] = {}
    for c in plan.cells:
        fit = read_status(cell_status_path(plan.out, c)).get("fit_seconds")
        n = plan.n_split.get("train", 0) + plan.n_split.get("val", 0) / 3
        if c.state == "finished" and isinstance(fit, (int, float)) and fit > 0 and n:
            rates.setdefault(c.label, []).append(fit / (_epochs(c.config) * n))
    return {k: sum(v) / len(v) for k, v in rates.items()}


def calibrate_cell(
    config: TrainConfig, classes: list[str], *, device=None, steps: int = 2, batch: int = 8
) -> float:
    """Seconds per training image of ``config``'s model: a few steps on random images.

    One warm-up step, then ``steps`` timed forward/backward/update steps of ``batch`` images (at
    most the recipe's batch) at the recipe's image size, on the device training would use. Small
    batches run slower per image than the recipe's, so the estimate errs long. The update is a
    plain gradient step written out, not a ``torch.optim`` optimizer: creating the first one
    imports torch's compiler stack (about 2 s on a CPU), a cost of the first cell's training
    that the calibration would otherwise take over.
    """
    import torch

    from cxrlab.models.classifier import create_classifier
    from cxrlab.training.recipes import resolve_recipe

    recipe = resolve_recipe(config)
    device = device or _calibration_device(config)
    model = create_classifier(config.model, classes, image_size=recipe.image_size).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    batch = min(recipe.batch_size, batch)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, recipe.image_size, recipe.image_size, generator=gen).to(device)
    y = torch.randint(0, len(classes), (batch,), generator=gen).to(device)

    def step() -> None:
        for p in params:
            p.grad = None
        torch.nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-1e-3)

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (steps * batch)


def _calibration_device(config: TrainConfig) -> str:
    import torch

    wants_gpu = config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return "cuda" if wants_gpu else "cpu"


def describe(plan: Plan) -> list[str]:
    """The plan in a few lines, for the terminal."""
    s = plan.study
    counts = plan.counts()
    grid = (
        f"{len(s.labels())} model(s) x {len(s.seeds)} seed(s) x "
        f"{s.folds or 1} {'fold(s)' if s.folds else 'split'} = {len(plan.cells)} cells"
    )
    lines = [f"Study {s.name!r} in {plan.out}: {grid}"]
    lines.append(
        "  "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + f"; {len(plan.to_run())} to run"
    )
    if plan.n_images:
        lines.append(
            f"  dataset: {plan.n_images} images (train/val/test {plan.n_split.get('train', 0)}/"
            f"{plan.n_split.get('val', 0)}/{plan.n_split.get('test', 0)} per cell); scan "
            f"{plan.scan_seconds:.1f} s"
        )
        lines.append(f"  image-passes to run: {plan.image_passes():,}")
    est = plan.estimate_seconds()
    if est is not None:
        rates = ", ".join(f"{k} {v * 1e3:.2f} ms/img" for k, v in plan.seconds_per_image.items())
        lines.append(
            f"  estimated training time: {_hms(est)} (calibration in "
            f"{plan.calibration_seconds:.1f} s: {rates})"
        )
    for c in plan.cells:
        if c.state == "failed":
            lines.append(f"  retrying failed cell {c.id}: {c.error.splitlines()[0][:160]}")
    if plan.removed:
        lines.append(
            f"  {len(plan.removed)} run(s) under runs/ are no longer in the study (kept): "
            + ", ".join(str(p.relative_to(plan.out)) for p in plan.removed[:4])
        )
    for label, name, state in plan.external:
        if state != "ready":
            lines.append(f"  external {name} x {label}: {state}")
    return lines


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
