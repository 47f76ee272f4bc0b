"""Kaggle download: the real code path, run with a stand-in kagglehub (no network)."""

import sys
import types

import pytest

from cxrlab.data.download import KAGGLE_HANDLE, download_database
from cxrlab.errors import CxrlabError


def test_missing_kagglehub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    with pytest.raises(CxrlabError, match=r"cxrlab\[kaggle\].*by hand"):
        download_database()


def test_download_returns_kagglehub_folder(monkeypatch, tmp_path):
    calls = []

    def dataset_download(handle, force_download=False):
        calls.append((handle, force_download))
        return str(tmp_path)

    monkeypatch.setitem(
        sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=dataset_download)
    )
    assert download_database(force=True) == tmp_path
    assert calls == [(KAGGLE_HANDLE, True)]


def test_failed_download_is_explained(monkeypatch):
    def dataset_download(handle, force_download=False):
        raise ConnectionError("network unreachable")

    monkeypatch.setitem(
        sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=dataset_download)
    )
    with pytest.raises(CxrlabError, match="network unreachable.*credentials"):
        download_database()
