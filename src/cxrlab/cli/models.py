"""``cxrlab models``: list registered models with their parameter counts."""

from __future__ import annotations

import typer
from rich.table import Table

from cxrlab.cli.common import console

_COUNTS = ("model", "input", "total", "trainable", "non-trainable", "recipe")
_NUMERIC = ("total", "trainable", "non-trainable")
#: The description column is shown beside the counts only when it gets at least this width.
_MIN_DESCRIPTION = 24


def _table(title: str | None, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """A table whose columns are never shortened, except a last ``description`` that wraps."""
    table = Table(title=title, show_edge=False, title_justify="left")
    for i, col in enumerate(columns):
        if col == "description":
            table.add_column(col, overflow="fold", ratio=1)
            continue
        # Never cut: a parameter count shortened to "11,171,77" reads as another number.
        width = max(len(col), *(len(row[i]) for row in rows))
        table.add_column(
            col, justify="right" if col in _NUMERIC else "left", no_wrap=True, min_width=width
        )
    for row in rows:
        table.add_row(*row)
    return table


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models_cmd(
        num_classes: int = typer.Option(4, min=1, help="Output classes to count parameters for."),
    ) -> None:
        """List every registered model with parameter counts at its default input size."""
        from cxrlab.models import count_parameters, create_classifier, get_spec, list_models

        rows, descriptions = [], []
        for name in list_models():
            spec = get_spec(name)
            counts = count_parameters(
                create_classifier(name, [f"c{i}" for i in range(num_classes)])
            )
            rows.append(
                (
                    name,
                    f"{spec.image_size}x{spec.image_size}",
                    f"{counts['total']:,}",
                    f"{counts['trainable']:,}",
                    f"{counts['non_trainable']:,}",
                    spec.recipe,
                )
            )
            descriptions.append(spec.description)
        title = f"cxrlab models ({num_classes} classes, 1 input channel)"
        counts_width = console.measure(_table(None, _COUNTS, rows)).maximum
        if console.width >= counts_width + 3 + _MIN_DESCRIPTION:
            rows = [(*row, text) for row, text in zip(rows, descriptions, strict=True)]
            console.print(_table(title, (*_COUNTS, "description"), rows))
            return
        # A narrow terminal: the counts whole, the descriptions below them.
        console.print(_table(title, _COUNTS, rows))
        console.print()
        names = [(row[0], text) for row, text in zip(rows, descriptions, strict=True)]
        console.print(_table(None, ("model", "description"), names))
