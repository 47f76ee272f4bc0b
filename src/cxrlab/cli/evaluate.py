"""``cxrlab evaluate``: one run's test metrics with CIs, tables and figures."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cxrlab.cli.common import console
from cxrlab.cli.options import Device


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
    if cal.get("note"):
        rows.append(("Temperature scaling", cal["note"]))
    rows.append(("Brier score (multiclass)", format_ci(m["metrics"]["brier"], percent=False)))
    console.print(
        _rich_metrics_table(
            f"{result.run_dir}: test set n = {m['n']}; 95% CI: Clopper-Pearson for proportions, "
            f"{b['method']} ({b['n_boot']} resamples, seed {b['seed']}) for the others",
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
        device: Device = None,
        figures: bool = typer.Option(
            True, "--figures/--no-figures", help="Draw figures (PNG + PDF)."
        ),
    ) -> None:
        """Test metrics with 95% bootstrap CIs, calibration, tables and figures for one run."""
        evaluate_and_report(run_dir, n_boot=n_boot, seed=seed, device=device, make_figures=figures)
