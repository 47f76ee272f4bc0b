"""Shared pieces of the CLI: consoles, logging set-up, progress bars."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    """Route cxrlab's library logging to the terminal through Rich."""
    logger = logging.getLogger("cxrlab")
    if any(isinstance(h, RichHandler) for h in logger.handlers):
        return
    handler = RichHandler(console=err_console, show_path=False, show_time=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Library warnings (undefined metrics, skipped files) reach the user as log lines, and
    # Lightning's start-up chatter only with --verbose.
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    if not py_warnings.handlers:
        py_warnings.addHandler(handler)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


@contextlib.contextmanager
def progress_callback(description: str) -> Iterator:
    """Yield a ``progress(done, total)`` callback drawing a Rich progress bar."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
