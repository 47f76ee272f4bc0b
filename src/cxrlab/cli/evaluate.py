"""``cxrlab evaluate``: one run's test metrics with CIs, tables and figures."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cxrlab.cli.common import console
from cxrlab.cli.options import TTA, Device


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
    tta = f"; TTA x{m['tta']}" if m.get("tta", 1) > 1 else ""
    console.print(
        _rich_metrics_table(
            f"{result.run_dir}: test set n = {m['n']}{tta}; 95% CI: Clopper-Pearson for "
            "proportions, "
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
    tta: int = 1,
):
    """Evaluate a run and print the summary (used by ``cxrlab train`` after training)."""
    from cxrlab.evaluation import evaluate_run

    result = evaluate_run(
        run_dir, n_boot=n_boot, seed=seed, device=device, make_figures=make_figures, tta=tta
    )
    print_evaluation(result)
    return result


def print_external(result) -> None:
    """Print an :class:`~cxrlab.evaluation.external.ExternalResult`: audit, metrics, transfer."""
    from cxrlab.reports.tables import METRIC_DISPLAY, format_ci

    m = result.metrics
    o = m["overlap"]
    kinds = ", ".join(f"{v} {k}" for k, v in o["by_match"].items()) or "none"
    splits = ", ".join(f"{v} {k}" for k, v in o["by_split"].items())
    console.print(
        f"Leakage audit: [bold]{o['n_matched']}[/] of {o['n_checked']} external images match an "
        f"image of the run ({kinds}{'; in ' + splits if splits else ''}); "
        + ("[yellow]kept (--keep-overlap)[/]" if not o["excluded"] else "left out")
        + f". Listed in {result.out.overlap}."
    )
    if m["classes_absent"]:
        console.print(
            f"Model classes absent from the external set: {', '.join(m['classes_absent'])} "
            "(metrics over the classes present; full confusion matrix kept)."
        )
    rows = []
    for name in ("accuracy", "macro_f1", "macro_roc_auc", "ece"):
        label, pct = METRIC_DISPLAY[name]
        rows.append((label, format_ci(m["metrics"][name], percent=pct)))
    versus = m.get("internal_vs_external") or {}
    ext = versus.get(result.out.name) or {}
    for name, diff in (ext.get("difference") or {}).items():
        from cxrlab.evaluation.per_source import metric_label

        label, pct = metric_label(name)
        rows.append((f"{label}: external - internal", format_ci(diff, percent=pct)))
    console.print(
        _rich_metrics_table(
            f"{result.out.path}: external n = {m['n']} ({len(m['classes_present'])} classes"
            + (f"; TTA x{m['tta']})" if m.get("tta", 1) > 1 else ")"),
            rows,
        )
    )
    console.print(f"Metrics: [bold]{result.files['metrics']}[/]")
    console.print(f"Tables:  [bold]{result.out.tables}[/] (metrics, per_class, "
                  "internal_vs_external, per_source, transfer)")  # fmt: skip


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        run_dir: Path = typer.Argument(
            ..., help="Run directory written by `cxrlab train`, or an ensemble folder."
        ),
        n_boot: int = typer.Option(
            1000, "--n-boot", min=1, help="Bootstrap resamples (>= 1000 for papers)."
        ),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        device: Device = None,
        figures: bool = typer.Option(
            True, "--figures/--no-figures", help="Draw figures (PNG + PDF)."
        ),
        data: Path | None = typer.Option(
            None,
            "--data",
            help="External set to score the run on (any scanner layout, or the "
            "folder an --index CSV refers to); results go to RUN/external/<name>/.",
        ),
        name: str | None = typer.Option(
            None, "--name", help="Name of the external set (default: the folder's name)."
        ),
        index: Path | None = typer.Option(
            None, "--index", help="CSV listing the external images (with --data)."
        ),
        path_column: str = typer.Option("path", "--path-column", help="--index column of paths."),
        label_column: str = typer.Option(
            "label", "--label-column", help="--index column of labels."
        ),
        source_column: str | None = typer.Option(
            None, "--source-column", help="--index column of sources (per-source metrics)."
        ),
        class_map: list[str] = typer.Option(
            [], "--class-map", help="Map an external class to a model class: 'EXTERNAL=MODEL'."
        ),
        drop_class: list[str] = typer.Option([], "--drop-class", help="Leave out this class."),
        drop_unmapped: bool = typer.Option(
            False, "--drop-unmapped", help="Leave out every class neither known nor mapped."
        ),
        keep_overlap: bool = typer.Option(
            False, "--keep-overlap", help="Keep external images that match run images."
        ),
        tta: TTA = 1,
    ) -> None:
        """Test metrics with 95% bootstrap CIs, calibration, tables and figures for one run.

        With --data: an external validation after a leakage audit, in RUN/external/<name>/.
        """
        if data is None:
            extra = [o for o, v in (("--name", name), ("--index", index),
                     ("--source-column", source_column)) if v is not None]  # fmt: skip
            if extra or class_map or drop_class or drop_unmapped or keep_overlap:
                from cxrlab.errors import ConfigError

                raise ConfigError(
                    "--name, --index, --class-map, --drop-class, --drop-unmapped, --source-column "
                    "and --keep-overlap only apply to an external set: add --data FOLDER."
                )
            evaluate_and_report(
                run_dir, n_boot=n_boot, seed=seed, device=device, make_figures=figures, tta=tta
            )
            return
        from cxrlab.evaluation.external import evaluate_external

        result = evaluate_external(
            run_dir, data, name=name, index=index, path_column=path_column,
            label_column=label_column, source_column=source_column, class_map=class_map,
            drop_class=drop_class, drop_unmapped=drop_unmapped, keep_overlap=keep_overlap,
            n_boot=n_boot, seed=seed, device=device, make_figures=figures, tta=tta,
        )  # fmt: skip
        print_external(result)
