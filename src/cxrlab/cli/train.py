"""``cxrlab train``: train one model into a run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import adopt_lightning_logging, console, progress_callback
from cxrlab.cli.options import TrainingValues, training_options


def build_train_config(
    *,
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    split: dict | None = None,
    **options,
):
    """Merge a YAML file (or, with --resume, the run's own config.yaml) with CLI options."""
    from cxrlab.config import load_config
    from cxrlab.rundir import RunDir

    base = config_file
    if resume and base is None and out is not None and RunDir(out).holds_run():
        base = RunDir(out).config
    return load_config(base, out=out, resume=resume or None, split=split, **options)


def register(app: typer.Typer) -> None:
    @app.command("train")
    @training_options()
    def train_cmd(
        training: TrainingValues,
        out: Path | None = typer.Option(None, "--out", help="Run directory to create."),
        resume: bool = typer.Option(False, "--resume", help="Continue from checkpoints/last.ckpt."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run."),
        evaluate: bool = typer.Option(
            True, "--evaluate/--no-evaluate", help="Evaluate on the test split afterwards."
        ),
    ) -> None:
        """Train a model on a dataset folder; writes a reproducible run directory."""
        from cxrlab.training import train

        adopt_lightning_logging()

        cfg = build_train_config(
            config_file=training.config_file,
            out=out,
            resume=resume,
            overwrite=overwrite or None,
            **training.overrides,
        )
        with progress_callback("Decoding images into the cache") as progress:
            result = train(cfg, progress=progress)
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank != 0:
            return
        score = f"{result.best_score:.4f}" if result.best_score is not None else "n/a"
        console.print(
            f"Trained [bold]{cfg.model}[/] for {result.epochs_run} epochs "
            f"in {result.seconds:.0f} s; "
            f"best {result.monitor} {score}. Run directory: [bold]{result.run_dir}[/]"
        )
        if evaluate:
            from cxrlab.cli.evaluate import evaluate_and_report

            evaluate_and_report(result.run_dir)
