"""``cxrlab models``: list registered models with their parameter counts."""

from __future__ import annotations

import typer
from rich.table import Table

from cxrlab.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models_cmd(
        num_classes: int = typer.Option(4, help="Output classes to count parameters for."),
    ) -> None:
        """List every registered model with parameter counts at its default input size."""
        from cxrlab.models import count_parameters, create_classifier, get_spec, list_models

        table = Table(title=f"cxrlab models ({num_classes} classes, 1 input channel)")
        for col in (
            "model",
            "input",
            "total",
            "trainable",
            "non-trainable",
            "recipe",
            "description",
        ):
            numeric = col in ("total", "trainable", "non-trainable")
            table.add_column(
                col,
                justify="right" if numeric else "left",
                no_wrap=col != "description",
                overflow="fold",
            )
        for name in list_models():
            spec = get_spec(name)
            model = create_classifier(name, [f"c{i}" for i in range(num_classes)])
            counts = count_parameters(model)
            table.add_row(
                name,
                f"{spec.image_size}x{spec.image_size}x1",
                f"{counts['total']:,}",
                f"{counts['trainable']:,}",
                f"{counts['non_trainable']:,}",
                spec.recipe,
                spec.description,
            )
        console.print(table)
