"""Atomic writers: whole files, the umask's mode, strict refusals inside datasets."""

import os
import stat

import pytest

from cxrlab.errors import DataError
from cxrlab.io import atomic_path, file_sha1, refuse_inside, write_json, write_text


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "metrics.json", {"a": 1})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        other = write_text(tmp_path / "t.md", "x")
        assert stat.S_IMODE(other.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_refuse_inside(tmp_path):
    data = tmp_path / "data"
    (data / "COVID").mkdir(parents=True)
    with pytest.raises(DataError, match="--out .* inside the input folder"):
        refuse_inside(data / "COVID" / "p.csv", data, "--out")
    with pytest.raises(DataError):
        refuse_inside(data, data, "--out")
    refuse_inside(tmp_path / "elsewhere.csv", data, "--out")  # outside: fine
    refuse_inside(data / "x.csv", data / "missing", "--out")  # not a folder: nothing to refuse


def test_file_sha1(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_sha1(path) == "a9993e364706816aba3e25717850c26c9cd0d89d"
