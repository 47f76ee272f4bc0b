"""The ``cxrlab`` command line: thin commands over library functions.

Each module of this package owns one command group and exposes ``register(app)``. Library errors
(:class:`~cxrlab.errors.CxrlabError`) are printed as one paragraph and usage errors as the usage
line and one sentence, both without a traceback and with exit code 2. Nothing imported to build
the app imports torch, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

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
_COMMAND_MODULES = (
    "data", "models", "train", "cv", "study", "evaluate", "compare", "explain", "report",
    "segment", "ablate", "serve", "ensemble", "demo",
)  # fmt: skip

for _name in _COMMAND_MODULES:
    importlib.import_module(f"cxrlab.cli.{_name}").register(app)


def _print_version(value: bool) -> None:
    if value:
        from cxrlab import __version__

        console.print(f"cxrlab {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Show debug logging, and Lightning's and other libraries' "
        "notices and deprecation warnings.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    setup_logging(verbose)


def _usage_error_types() -> tuple[type[Exception], ...]:
    """Click's exception classes: Typer's vendored copy (``typer.TyperException``) and click's."""
    types: list[type[Exception]] = []
    if hasattr(typer, "TyperException"):
        types.append(typer.TyperException)
    try:
        import click
    except ImportError:
        pass
    else:
        types.append(click.ClickException)
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    from cxrlab.errors import CxrlabError

    try:
        code = app(args=argv, prog_name="cxrlab", standalone_mode=False)
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
    except _usage_error_types() as exc:  # usage errors and bad values, before any command runs
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err_console.print(f"Error: {exc}", highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    if isinstance(code, int) and code:
        sys.exit(code)


__all__ = ["app", "console", "main"]
