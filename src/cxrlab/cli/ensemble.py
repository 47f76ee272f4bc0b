"""``cxrlab ensemble create``: several trained models as one averaging predictor on disk."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console

ensemble_app = typer.Typer(
    help="Ensembles: models whose probabilities are averaged, usable wherever a run is.",
    no_args_is_help=True,
)


@ensemble_app.command("create")
def create_cmd(
    members: list[Path] = typer.Argument(
        ...,
        help="Run directories, .ckpt files, or `cxrlab cv` / `cxrlab study` folders (all their "
        "finished fold<k>-seed<s> runs).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Ensemble folder to write."),
) -> None:
    """Write OUT/ensemble.json naming the members; then predict, evaluate, export, serve OUT."""
    from rich.table import Table

    from cxrlab.inference.ensemble import create_ensemble

    result = create_ensemble(members, out)  # members load on the CPU to check they agree
    m = result.manifest
    table = Table(title=f"{m['model_name']}: {len(m['members'])} members", title_justify="left")
    table.add_column("Member checkpoint", overflow="fold")
    table.add_column("Model")
    for entry in m["members"]:
        table.add_row(entry["checkpoint"], entry["model_name"])
    console.print(table)
    if result.shared_split:
        console.print(
            f"The members share one split (test n = {m['test_set']['n']}): "
            f"`cxrlab evaluate {result.out.path}` scores the ensemble on its test set."
        )
    else:
        console.print(
            "The members do not share one split (e.g. cross-validation folds): score the "
            f"ensemble on an external set with `cxrlab evaluate {result.out.path} --data FOLDER`."
        )
    console.print(f"Wrote [bold]{result.out.manifest}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(ensemble_app, name="ensemble")
