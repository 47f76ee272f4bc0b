"""Shared pieces of the CLI: consoles, logging set-up."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

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
