"""``cxrlab cv``: K-fold cross-validation over S seeds (train, evaluate, summarise)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cxrlab.cli.common import console
from cxrlab.cli.options import TrainingValues, training_options


def register(app: typer.Typer) -> None:
    @app.command("cv")
    @training_options(exclude=("seed",))
    def cv_cmd(
        training: TrainingValues,
        folds: int = typer.Option(5, "--folds", min=2, help="Number of folds K."),
        seeds: int = typer.Option(
            1, "--seeds", min=1, help="Training seeds per fold S (seeds 0..S-1)."
        ),
        out: Path | None = typer.Option(None, "--out", help="CV folder (default runs/cv-<model>)."),
        n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples."),
        eval_seed: int = typer.Option(0, "--eval-seed", help="Bootstrap seed."),
        figures: bool = typer.Option(
            True, "--figures/--no-figures", help="Draw each run's figures."
        ),
    ) -> None:
        """K-fold cross-validation over S seeds: train, evaluate, summarise (resumable)."""
        from cxrlab.cli.common import adopt_lightning_logging, progress_callback

        adopt_lightning_logging()
        from cxrlab.cli.train import build_train_config
        from cxrlab.training.cv import run_cv

        placeholder = out or Path("runs") / "cv"
        cfg = build_train_config(
            config_file=training.config_file, out=placeholder, resume=False, **training.overrides
        )
        if out is None:
            cfg = cfg.model_copy(update={"out": Path("runs") / f"cv-{cfg.model}"})
        with progress_callback("Decoding images into the cache") as progress:
            result = run_cv(
                cfg, folds=folds, seeds=seeds, n_boot=n_boot, eval_seed=eval_seed,
                progress=progress, make_figures=figures,
            )  # fmt: skip
        print_cv(result)


def print_cv(result) -> None:
    """Print a :class:`~cxrlab.evaluation.CVResult` as a Rich table."""
    from cxrlab.evaluation.cv_summary import cv_table

    table = Table(
        title=f"{result.out_dir}: {result.summary['n_runs']} runs "
        f"({len(result.trained)} trained now, "
        f"{len(result.skipped)} reused)",
        title_justify="left",
    )
    frame = cv_table(result.summary)
    for col in frame.columns:
        table.add_column(col, justify="left" if col == "Metric" else "right", overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)
    console.print(f"Summary: [bold]{result.files['json']}[/] (and .md, .tex)")
