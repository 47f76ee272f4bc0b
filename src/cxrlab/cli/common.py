"""Shared pieces of the CLI: consoles, logging set-up, progress bars."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console()
err_console = Console(stderr=True)

#: Warning categories of other libraries shown only with ``--verbose`` (their authors' to fix).
_QUIET_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


class _OtherLibrariesQuiet(logging.Filter):
    """Passes cxrlab's records, and other libraries' at WARNING or above (all with --verbose).

    Lightning logs its start-up notices ("GPU available", "TPU available", tips about its cloud
    products, "`Trainer.fit` stopped") at INFO, which a cxrlab user cannot act on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.verbose = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno >= logging.WARNING:
            return True
        return record.name == "cxrlab" or record.name.startswith("cxrlab.")


_filter = _OtherLibrariesQuiet()


def setup_logging(verbose: bool = False) -> None:
    """Route logging to the terminal through Rich: cxrlab's at INFO (DEBUG with ``verbose``).

    One handler on the root logger, so libraries that log (Lightning among them) reach the terminal
    through it; their notices below WARNING, and other libraries' deprecation warnings, only with
    ``verbose``. Library warnings (undefined metrics, skipped files) reach the user as log lines.
    Warnings filters are set here, in the application, never in library code.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, RichHandler)), None)
    if handler is None:
        handler = RichHandler(console=err_console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_filter)
        root.addHandler(handler)
    _filter.verbose = verbose
    logging.getLogger("cxrlab").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    if "lightning" in sys.modules:
        adopt_lightning_logging()
    if not verbose:
        for category in _QUIET_CATEGORIES:
            warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("default", category=category, module=r"cxrlab(\.|$)")


def adopt_lightning_logging() -> None:
    """Import Lightning and send its logging through :func:`setup_logging`'s handler.

    Lightning's import gives its loggers stream handlers of their own, which would print its
    start-up notices whatever ``--verbose`` says; commands that train call this first.
    """
    import lightning  # noqa: F401  (the import is what adds the handlers)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        library_logger = logging.getLogger(name)
        for own in [h for h in library_logger.handlers if type(h) is logging.StreamHandler]:
            library_logger.removeHandler(own)
        library_logger.propagate = True


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
