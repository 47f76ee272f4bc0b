"""The ``cxrlab`` command line: thin commands over library functions.

Each module of this package owns one command group and exposes ``register(app)``. Library errors
(:class:`~cxrlab.errors.CxrlabError`) are printed as one paragraph, without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from cxrlab.cli.common import console, err_console, setup_logging

app = typer.Typer(
    name="cxrlab",
    help="Train, evaluate and explain chest X-ray classifiers with defensible numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command-group modules, in the order `cxrlab --help` lists them.
_COMMAND_MODULES = ("data", "models", "train", "evaluate", "compare", "explain", "serve", "demo")

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"cxrlab.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"cxrlab.cli.{_name}":
            raise
        continue
    _module.register(app)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logging."),
) -> None:
    setup_logging(verbose)


def main() -> None:
    """Console-script entry point."""
    from cxrlab.errors import CxrlabError

    try:
        app(standalone_mode=False)
    except CxrlabError as exc:
        from rich.markup import escape

        err_console.print(
            f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False
        )
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("Aborted.")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


__all__ = ["app", "console", "main"]
