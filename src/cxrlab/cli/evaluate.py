"""``cxrlab evaluate`` (one run's test metrics with CIs) and ``cxrlab cv`` (K folds x S seeds)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cxrlab.cli.common import console


def _rich_metrics_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Metric")
    table.add_column("Value (95% CI)", justify="right", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_evaluation(result) -> None:
    """Print an :class:`~cxrlab.evaluation.EvaluationResult` as Rich tables."""
    from cxrlab.evaluation.evaluate import SEED_PUBLISHED
    from cxrlab.reports.tables import METRIC_DISPLAY, format_ci, format_value

    m = result.metrics
    b = m["bootstrap"]
    rows = []
    for name in (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "macro_specificity",
        "macro_roc_auc",
    ):
        label, pct = METRIC_DISPLAY[name]
        rows.append((label, format_ci(m["metrics"][name], percent=pct)))
    cal = m["calibration"]
    ece = format_ci(m["metrics"]["ece"], percent=False)
    if cal.get("temperature") is not None:
        ece += (
            f" -> {format_value(cal['after']['ece'], percent=False)} (T = {cal['temperature']:.2f})"
        )
    rows.append(("ECE (before -> after temperature scaling)", ece))
    rows.append(("Brier score (multiclass)", format_ci(m["metrics"]["brier"], percent=False)))
    console.print(
        _rich_metrics_table(
            f"{result.run_dir}: test set n = {m['n']}; 95% CI: {b['method']}, "
            f"{b['n_boot']} resamples, seed {b['seed']}",
            rows,
        )
    )
    per_class = Table(title="Per class (one-vs-rest)", title_justify="left")
    for col in ("Class", "n", "Sensitivity (%)", "Specificity (%)", "F1 (%)", "AUC"):
        per_class.add_column(col, justify="left" if col == "Class" else "right", overflow="fold")
    for cls, entry in m["per_class"].items():
        per_class.add_row(
            cls,
            str(entry["support"]),
            format_ci(entry["recall"], percent=True),
            format_ci(entry["specificity"], percent=True),
            format_ci(entry["f1"], percent=True),
            format_ci(entry["roc_auc"], percent=False),
        )
    console.print(per_class)
    if result.probe:
        probe = Table(title="Shortcut probe (probe.json)", title_justify="left")
        probe.add_column("Item")
        probe.add_column("Value", justify="right")
        for key, value in result.probe.items():
            probe.add_row(str(key), f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(probe)
    s = SEED_PUBLISHED
    console.print(
        "[dim]Note: the seed Keras project published "
        f"{100 * s['accuracy']:.2f}% accuracy, {100 * s['macro_precision']:.2f}% precision, "
        f"{100 * s['macro_recall']:.2f}% recall and {100 * s['macro_f1']:.2f}% F-score (macro "
        "averages) on its own split, without confidence intervals; it is context, not a baseline "
        "on this test set.[/]"
    )
    files = result.files
    console.print(f"Metrics: [bold]{files['metrics']}[/]")
    console.print(
        f"Tables:  [bold]{files['metrics_md'].parent}[/] (metrics, per_class as .md and .tex)"
    )
    if "confusion_matrix_png" in files:
        console.print(f"Figures: [bold]{files['confusion_matrix_png'].parent}[/] (PNG and PDF)")


def evaluate_and_report(
    run_dir,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    device: str | None = None,
    make_figures: bool = True,
):
    """Evaluate a run and print the summary (used by ``cxrlab train`` after training)."""
    from cxrlab.evaluation import evaluate_run

    result = evaluate_run(
        run_dir, n_boot=n_boot, seed=seed, device=device, make_figures=make_figures
    )
    print_evaluation(result)
    return result


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory written by `cxrlab train`."),
        n_boot: int = typer.Option(
            1000, "--n-boot", min=1, help="Bootstrap resamples (>= 1000 for papers)."
        ),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        device: str | None = typer.Option(
            None, "--device", help="Device for missing predictions (cpu, cuda)."
        ),
        figures: bool = typer.Option(
            True, "--figures/--no-figures", help="Draw figures (PNG + PDF)."
        ),
    ) -> None:
        """Test metrics with 95% bootstrap CIs, calibration, tables and figures for one run."""
        evaluate_and_report(run_dir, n_boot=n_boot, seed=seed, device=device, make_figures=figures)

    @app.command("cv")
    def cv_cmd(
        data: Path | None = typer.Option(None, "--data", help="Dataset folder."),
        model: str | None = typer.Option(
            None, "--model", help="Registered model (`cxrlab models`)."
        ),
        folds: int = typer.Option(5, "--folds", min=2, help="Number of folds K."),
        seeds: int = typer.Option(
            1, "--seeds", min=1, help="Training seeds per fold S (seeds 0..S-1)."
        ),
        out: Path | None = typer.Option(None, "--out", help="CV folder (default runs/cv-<model>)."),
        split_by: str | None = typer.Option(
            None,
            "--split-by",
            help="stratified (default) or source (folds hold out whole sources).",
        ),
        epochs: int | None = typer.Option(None, help="Epochs (default: the model's recipe)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size per device."),
        lr: float | None = typer.Option(None, help="Peak learning rate."),
        image_size: int | None = typer.Option(None, "--image-size", help="Square input size."),
        limit_per_class: int | None = typer.Option(
            None, "--limit-per-class", help="Seeded subset of N images per class, for quick runs."
        ),
        pretrained: bool | None = typer.Option(
            None, "--pretrained/--from-scratch", help="Start from ImageNet weights (timm models)."
        ),
        accelerator: str | None = typer.Option(None, help="auto, cpu or gpu."),
        precision: str | None = typer.Option(None, help="auto, 32, bf16-mixed or 16-mixed."),
        cache_dir: Path | None = typer.Option(
            None, "--cache-dir", help="Decoded-image cache folder."
        ),
        config: Path | None = typer.Option(
            None, "--config", help="YAML file with any training option."
        ),
        n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples."),
        eval_seed: int = typer.Option(0, "--eval-seed", help="Bootstrap seed."),
        figures: bool = typer.Option(
            True, "--figures/--no-figures", help="Draw each run's figures."
        ),
    ) -> None:
        """K-fold cross-validation over S seeds: train, evaluate, summarise (resumable)."""
        from cxrlab.cli.common import progress_callback
        from cxrlab.cli.train import build_train_config
        from cxrlab.training.cv import run_cv

        options = dict(
            data=data, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
            image_size=image_size,
            limit_per_class=limit_per_class, pretrained=pretrained, accelerator=accelerator,
            precision=precision, cache_dir=cache_dir,
        )  # fmt: skip
        split = {"method": split_by} if split_by else None
        placeholder = out or Path("runs") / "cv"
        cfg = build_train_config(
            config_file=config, out=placeholder, resume=False, split=split, **options
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
    """Print a :class:`~cxrlab.training.cv.CVResult` as a Rich table."""
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
