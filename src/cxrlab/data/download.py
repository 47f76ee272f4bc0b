"""Fetch the COVID-19 Radiography Database from Kaggle (through kagglehub, when installed)."""

from __future__ import annotations

import logging
from pathlib import Path

from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)

#: The database's Kaggle handle.
KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"


def download_database(*, handle: str = KAGGLE_HANDLE, force: bool = False) -> Path:
    """Download (or reuse kagglehub's cached copy of) the database and return its folder.

    The files land in kagglehub's cache (``~/.cache/kagglehub``, or ``$KAGGLEHUB_CACHE``); pass the
    returned folder to ``--data``. Needs the optional ``kagglehub`` package (``pip install
    'cxrlab[kaggle]'``), network access and, for some datasets, Kaggle credentials.

    Raises:
        CxrlabError: kagglehub is missing or the download failed; the message says what to do.
    """
    manual = (
        f"Or download it by hand from https://www.kaggle.com/datasets/{handle}, unzip it anywhere "
        "and pass that folder to --data."
    )
    try:
        import kagglehub
    except ImportError:
        raise CxrlabError(
            "Downloading from Kaggle needs the kagglehub package: pip install 'cxrlab[kaggle]'. "
            + manual
        ) from None
    log.info("Downloading %s from Kaggle (cached after the first time)", handle)
    try:
        path = kagglehub.dataset_download(handle, force_download=force)
    except Exception as exc:  # network, authentication and API errors all land here
        raise CxrlabError(
            f"Could not download {handle} from Kaggle ({type(exc).__name__}: {exc}). Check the "
            "network and Kaggle credentials (KAGGLE_USERNAME / KAGGLE_KEY or "
            "~/.kaggle/kaggle.json). " + manual
        ) from None
    return Path(path)
