"""``train(config)``: dataset folder in, finished run directory out."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrlab.config import TrainConfig, save_config
from cxrlab.data.cache import ImageCache, ProgressFn, build_cache
from cxrlab.data.classes import order_classes
from cxrlab.data.prepare import PreparedSplit
from cxrlab.errors import ConfigError, DataError, RunDirError
from cxrlab.io import refuse_inside, write_json
from cxrlab.rundir import RunDir
from cxrlab.training.recipes import Recipe, resolve_recipe, resolved_config

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished training produced."""

    run_dir: Path
    best_checkpoint: Path
    monitor: str
    best_score: float | None
    epochs_run: int
    seconds: float
    classes: list[str]
    #: ``checkpoints/refit.ckpt`` when ``config.refit`` (then the run's model), else None.
    refit_checkpoint: Path | None = None


@dataclass
class PreparedData:
    """A split manifest and its decoded images (cache row i is ``split`` row i)."""

    split: pd.DataFrame
    classes: list[str]
    cache: ImageCache


def check_run_dir(config: TrainConfig) -> None:
    """Refuse to clobber a run: finished or half-finished runs need --overwrite or --resume."""
    refuse_inside(config.out, config.data, "--out")
    out = config.out.resolve()
    if not out.exists() or not any(out.iterdir()):
        return
    run = RunDir(out)
    from cxrlab.training.resume import check_last_checkpoint, clear_setup_leftovers

    if not config.overwrite and clear_setup_leftovers(run):
        return
    if config.overwrite:
        if not run.holds_run():
            raise RunDirError(
                f"{out} is not empty and is not a cxrlab run directory (no {RunDir.CONFIG}); "
                "refusing to overwrite it even with --overwrite. Choose another --out."
            )
        shutil.rmtree(out)
        return
    if config.resume:
        if not run.last_checkpoint.exists():
            raise RunDirError(f"Cannot resume: {run.last_checkpoint} does not exist.")
        check_last_checkpoint(run)
        return
    state = "a finished run" if run.is_finished() else "an unfinished run"
    raise RunDirError(
        f"{out} already holds {state}. Pass --resume to continue it, --overwrite to replace it, "
        "or choose another --out."
    )


@contextlib.contextmanager
def _cleaned_up_on_early_failure(run: RunDir, enabled: bool) -> Iterator[None]:
    """Remove what this training creates in ``run`` if it fails before an epoch is saved.

    A run that dies before its first ``last.ckpt`` (no weights downloadable, an empty split, a
    crash in the first epoch) would otherwise leave a config.yaml behind, and the next training
    into the same --out would be refused as "an unfinished run". Only entries that did not exist
    when training started are removed, and only folders this run created (when empty).
    """
    created = [p for p in (run.path, *run.path.parents) if not p.exists()]  # deepest first
    before = set(run.path.iterdir()) if run.path.is_dir() else set()
    try:
        yield
    except BaseException:
        if enabled and run.path.is_dir() and not run.last_checkpoint.exists():
            log.info("Training failed before its first epoch was saved; removing %s", run.path)
            for entry in set(run.path.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def prepare_data(
    config: TrainConfig,
    image_size: int,
    progress: ProgressFn | None = None,
    prepared: PreparedSplit | None = None,
) -> PreparedData:
    """Split the dataset and decode the split's images into the cache.

    The split is the run's own split.csv with ``--resume``; else ``config.split.csv`` when set;
    else :func:`cxrlab.data.prepare.prepare_split` of ``config.data`` with the split's seed
    (``config.split.seed``, or the training seed). Images the scan cannot decode are left out
    before splitting and listed in the run's ``skipped.csv`` (a DataError with ``--strict``), so
    ``cxrlab data split`` with the same options gives the same manifest.

    ``prepared``: that same :func:`~cxrlab.data.prepare.prepare_split` result computed a moment
    ago by the caller with this config's data, split, seed, strict, limit_per_class and cache_dir
    (a study's plan hands its scan to the first cell this way); it is used instead of scanning
    again (not with ``--resume``, where the run's own split.csv wins).
    """
    from lightning.pytorch.utilities import rank_zero_only

    from cxrlab.data.prepare import prepare_split, report_skipped

    run = RunDir(config.out)
    skipped_csv = run.skipped if rank_zero_only.rank == 0 else None
    if config.resume and run.has_split():
        split = run.read_split()
        classes = run.read_classes() or order_classes(split["label"].unique())
    elif prepared is not None:
        if skipped_csv is not None:
            report_skipped(prepared.skipped, strict=config.strict, csv=skipped_csv,
                           where=str(config.data))  # fmt: skip
        split, classes = prepared.manifest.reset_index(drop=True), list(prepared.classes)
    else:
        prepared = prepare_split(
            config.data,
            config.split,
            seed=config.seed,
            strict=config.strict,
            limit_per_class=config.limit_per_class,
            skipped_csv=skipped_csv,
            cache_dir=config.cache_dir,
        )
        split, classes = prepared.manifest.reset_index(drop=True), prepared.classes
    # One cache entry per split manifest, so evaluation and later runs find the same key.
    cache = _build_split_cache(config, split, image_size, progress)
    if cache.errors:
        split, cache = _drop_undecodable(config, split, cache, image_size, progress, skipped_csv)
    return PreparedData(split=split, classes=classes, cache=cache)


def _build_split_cache(config: TrainConfig, split: pd.DataFrame, image_size: int, progress):
    return build_cache(
        split["path"].tolist(), split["sha1"].tolist(), image_size,
        cache_dir=config.cache_dir, workers=config.decode_workers, progress=progress,
        preprocess=config.preprocess,
    )  # fmt: skip


def _drop_undecodable(config, split, cache, image_size, progress, skipped_csv):
    """Apply the skipped-files policy to rows the cache cannot decode; rebuild it without them.

    Rare: the scan decoded every image with the same reader, so this means a file changed since
    the scan, or a ``split.csv`` manifest lists a broken file.
    """
    from cxrlab.data.prepare import SKIPPED_COLUMNS, report_skipped

    bad = sorted(cache.errors)
    rows = [(split.at[i, "path"], "truncated", cache.errors[i]) for i in bad]
    skipped = pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS))
    if skipped_csv is not None and skipped_csv.is_file():
        skipped = pd.concat([pd.read_csv(skipped_csv, keep_default_na=False), skipped])
    report_skipped(skipped, strict=config.strict, csv=skipped_csv, where=str(config.data))
    split = split[cache.ok].reset_index(drop=True)
    return split, _build_split_cache(config, split, image_size, progress)


def _trainer_kwargs(config: TrainConfig) -> dict:
    accelerator = "gpu" if config.accelerator == "cuda" else config.accelerator
    cuda = torch.cuda.is_available()
    if accelerator == "gpu" and not cuda:
        raise ConfigError("--accelerator gpu was requested but no CUDA GPU is visible.")
    uses_gpu = accelerator == "gpu" or (accelerator == "auto" and cuda)
    if uses_gpu and isinstance(config.devices, int) and config.devices > torch.cuda.device_count():
        raise ConfigError(
            f"--devices {config.devices} asks for more GPUs than the {torch.cuda.device_count()} "
            "visible on this machine. Lower --devices (it counts GPUs per node)."
        )
    precision = config.precision
    if precision == "auto":
        precision = "bf16-mixed" if uses_gpu and torch.cuda.is_bf16_supported() else "32-true"
    elif precision == "32":
        precision = "32-true"
    return dict(
        accelerator=accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=precision,
    )


def _check_resume_schedule(config: TrainConfig, recipe: Recipe) -> None:
    """Step-based schedules (one-cycle, cosine) are laid out over the epochs: no extending."""
    run = RunDir(config.out)
    if not (config.resume and run.config.exists()) or recipe.scheduler not in (
        "onecycle",
        "cosine",
    ):
        return
    saved = run.read_config()
    saved_recipe = resolve_recipe(TrainConfig(**saved))
    if saved_recipe.epochs != recipe.epochs:
        raise ConfigError(
            f"Cannot resume {config.out} with {recipe.epochs} epochs: it was started with "
            f"{saved_recipe.epochs} and its {recipe.scheduler} schedule is laid out over those. "
            "Resume with the original --epochs, or start a new run."
        )


def train(
    config: TrainConfig,
    *,
    progress: ProgressFn | None = None,
    callbacks: list | None = None,
    prepared: PreparedSplit | None = None,
) -> TrainResult:
    """Train one model and return where its run directory is.

    Writes ``config.yaml``, ``environment.json``, ``split.csv``, ``classes.json``,
    ``checkpoints/{best,last}.ckpt``, ``history.csv`` and ``train_summary.json`` into
    ``config.out``. Rank 0 alone writes files under DDP.

    Args:
        config: The run's options.
        progress: ``progress(done, total)`` while images are decoded into the cache.
        callbacks: Extra Lightning callbacks (e.g. for custom logging).
        prepared: The split just computed for this config (see :func:`prepare_data`).
    """
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from cxrlab.training.environment import collect_environment
    from cxrlab.training.loggers import check_logger_installed

    if not config.data.exists():
        raise DataError(f"Dataset folder {config.data} does not exist. Check --data.")
    check_logger_installed(config.logger)
    run = RunDir(config.out)
    is_zero = rank_zero_only.rank == 0
    if is_zero and not (config.resume and run.has_split()):
        check_run_dir(config)
    elif is_zero and run.last_checkpoint.exists():
        from cxrlab.training.resume import check_last_checkpoint

        check_last_checkpoint(run)
    trainer_kwargs = _trainer_kwargs(config)
    recipe: Recipe = resolve_recipe(config)
    _check_resume_schedule(config, recipe)
    L.seed_everything(config.seed, workers=True, verbose=False)

    with _cleaned_up_on_early_failure(run, enabled=is_zero and not config.resume):
        data = prepare_data(config, recipe.image_size, progress, prepared)
        split, classes = data.split, data.classes
        saved = resolved_config(config, recipe)
        if is_zero:
            run.path.mkdir(parents=True, exist_ok=True)
            save_config(saved, run.config)
            write_json(run.environment, collect_environment(config.seed))
            run.write_split(split)
            run.write_classes(classes)
        trainer, checkpoint, seconds = _fit(saved, recipe, trainer_kwargs, data, run, callbacks)

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else run.last_checkpoint
    score = checkpoint.best_model_score
    refit = None
    if config.refit:
        refit = _refit(saved, recipe, trainer_kwargs, data, run, callbacks, best)
    result = TrainResult(
        run_dir=config.out,
        best_checkpoint=best,
        monitor=recipe.monitor,
        best_score=float(score) if score is not None else None,
        epochs_run=trainer.current_epoch,
        seconds=seconds,
        classes=classes,
    )
    if trainer.is_global_zero:
        write_json(
            run.summary,
            {
                "best_checkpoint": str(best.resolve().relative_to(config.out.resolve())),
                "monitor": result.monitor,
                "best_score": result.best_score,
                "epochs_run": result.epochs_run,
                "seconds": seconds,
                "recipe": _recipe_dict(recipe),
                "precision": trainer_kwargs["precision"],
                "world_size": trainer.world_size,
                **({"refit": refit} if refit else {}),
            },
        )
    if refit:
        result.refit_checkpoint = run.refit_checkpoint
    return result


def _refit(saved, recipe, trainer_kwargs, data, run, callbacks, best: Path) -> dict:
    """Train a fresh model on train+val for the epochs at which ``best`` was chosen.

    Same seed and recipe (its schedule stretched over those epochs, no early stopping); it is
    resumable from ``checkpoints/refit-last.ckpt`` and becomes ``refit.ckpt`` only when whole.
    """
    import dataclasses

    import lightning as L

    epochs = int(torch.load(best, map_location="cpu", weights_only=False)["epoch"]) + 1
    log.info("Refitting on train+val for %d epochs (the best checkpoint's epoch)", epochs)
    refit_recipe = dataclasses.replace(recipe, epochs=epochs, early_stopping_patience=None)
    L.seed_everything(saved.seed, workers=True, verbose=False)
    trainer, _, seconds = _fit(
        saved, refit_recipe, trainer_kwargs, data, run, callbacks, refit=True
    )
    if trainer.is_global_zero:
        os.replace(run.refit_last_checkpoint, run.refit_checkpoint)
    n_train = int(data.split["split"].isin(["train", "val"]).sum())
    return {
        "checkpoint": str(run.refit_checkpoint.relative_to(run.path)),
        "epochs": epochs,
        "chosen_by": f"{recipe.monitor} of {best.name} on the val split",
        "train_images": n_train,
        "seconds": seconds,
    }


def _fit(
    config: TrainConfig,
    recipe: Recipe,
    trainer_kwargs: dict,
    data: PreparedData,
    run: RunDir,
    callbacks: list | None,
    *,
    refit: bool = False,
):
    """Build the model, the callbacks and the Trainer, and fit; returns (trainer, best, seconds).

    Args:
        config: The resolved config (what config.yaml holds), logged as hyper-parameters.
        refit: Train on train+val without validation, checkpointing ``refit-last.ckpt`` (see
            :func:`_refit`).
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    from cxrlab.models.classifier import create_classifier
    from cxrlab.training.callbacks import (
        AtomicModelCheckpoint,
        EpochProgressBar,
        HistoryCSV,
        WeightEMA,
    )
    from cxrlab.training.data import CachedDataModule
    from cxrlab.training.loggers import create_loggers
    from cxrlab.training.module import CxrLightningModule

    split, classes = data.split, data.classes
    label_ids = split["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    roles = split["split"].to_numpy()
    if refit:
        roles = np.where(roles == "val", "train", roles)
    datamodule = CachedDataModule(
        data.cache.read(),
        roles,
        label_ids,
        batch_size=recipe.batch_size,
        seed=config.seed,
        pin_memory=torch.cuda.is_available(),
        sampler=config.sampler,
    )
    for name in ("train",) if refit else ("train", "val"):
        if len(datamodule.datasets[name]) == 0:
            raise DataError(f"The {name} split is empty; use more images or other split fractions.")

    model = create_classifier(
        config.model, classes, image_size=recipe.image_size, pretrained=config.pretrained
    )
    if not config.preprocess.is_identity():
        import dataclasses

        from cxrlab.data.preprocess import to_metadata

        model.meta = dataclasses.replace(model.meta, preprocess=to_metadata(config.preprocess))
    weights = None
    if config.class_weights == "balanced":
        from cxrlab.training.data import balanced_class_weights

        train_ids = label_ids[roles == "train"]
        weights = balanced_class_weights(train_ids, len(classes))
    module = CxrLightningModule(
        model, recipe, seed=config.seed, channels_last=config.channels_last, class_weights=weights
    )
    if config.compile:
        module.model = torch.compile(module.model)

    if refit:  # no validation: one unmonitored checkpoint per epoch, for resuming
        checkpoint = AtomicModelCheckpoint(
            dirpath=run.checkpoints, filename=run.refit_last_checkpoint.stem, save_top_k=1,
            enable_version_counter=False,
        )  # fmt: skip
        checkpoints = [checkpoint]
        trainer_kwargs = {**trainer_kwargs, "limit_val_batches": 0}
    else:
        checkpoint = AtomicModelCheckpoint(
            dirpath=run.checkpoints,
            filename=RunDir.BEST,
            monitor=recipe.monitor,
            mode=recipe.monitor_mode,
            save_top_k=1,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
        # A second, unmonitored checkpoint rewrites last.ckpt after every epoch. (ModelCheckpoint's
        # own save_last only rewrites it in epochs where the best one improved, so a resumed run
        # would repeat the epochs since the last improvement.)
        latest = AtomicModelCheckpoint(
            dirpath=run.checkpoints,
            filename=RunDir.LAST,
            save_top_k=1,
            enable_version_counter=False,
        )
        checkpoints = [checkpoint, latest]
    history = HistoryCSV(run.refit_history if refit else run.history)
    callbacks = [*checkpoints, history, *(callbacks or [])]
    if config.progress:
        callbacks.append(EpochProgressBar())
    if recipe.ema_decay:
        callbacks.append(WeightEMA(recipe.ema_decay))
    if recipe.early_stopping_patience:  # None for a refit (see _refit)
        callbacks.append(
            EarlyStopping(monitor="val_loss", mode="min", patience=recipe.early_stopping_patience)
        )
    loggers = [] if refit else create_loggers(config.logger, run.path)
    for logger in loggers:
        logger.log_hyperparams(config.to_yaml_dict())
    trainer = L.Trainer(
        **trainer_kwargs,
        max_epochs=recipe.epochs,
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run.path,
        log_every_n_steps=1,
    )
    last = run.refit_last_checkpoint if refit else run.last_checkpoint
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Advice that does not apply: batches come from memory (no workers needed) and the
        # LightningModule's batch hook is the intended place for device-side augmentation.
        for message in (
            ".*does not have many workers.*",
            ".*overridden `on_after_batch_transfer`.*",
        ):
            warnings.filterwarnings("ignore", message=message)
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(last) if (config.resume or refit) and last.exists() else None,
        )
    return trainer, checkpoint, time.perf_counter() - start


def _recipe_dict(recipe: Recipe) -> dict:
    from dataclasses import asdict

    return asdict(recipe)
