"""``cxrlab compare``: runs on the same test set, McNemar, DeLong and paired bootstrap CIs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cxrlab.cli.common import console
from cxrlab.cli.options import Device


def _rich(frame, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(frame.columns):
        left = i == 0 or col in ("Run A", "Run B", "Model", "Class (vs rest)")
        table.add_column(str(col), justify="left" if left else "right", overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    return table


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        run_dirs: list[Path] = typer.Argument(
            ..., help="Two or more run directories with the same test set."
        ),
        out: Path = typer.Option(
            Path("comparison"), "--out", help="Folder for comparison.json/.md/.tex."
        ),
        n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        device: Device = None,
    ) -> None:
        """Compare runs: metrics with CIs, McNemar, DeLong, paired bootstrap differences."""
        from cxrlab.evaluation.compare import compare_runs, delong_table, pairs_table, runs_table

        result = compare_runs(run_dirs, out=out, n_boot=n_boot, seed=seed, device=device)
        fp = result.test_set
        console.print(
            _rich(
                runs_table(result), f"Runs on test set {fp['sha1'][:10]} (n = {fp['n']}), 95% CIs"
            )
        )
        console.print(
            _rich(
                pairs_table(result),
                "Pairwise: McNemar exact test, DeLong macro AUC (Holm-adjusted), A - B differences",
            )
        )
        console.print(_rich(delong_table(result), "ROC AUC differences, DeLong's test"))
        console.print(f"Written: [bold]{result.files['md']}[/] (and .json, .tex)")
