"""The scan cache: an unchanged file is not read again; a changed one (size, mtime) is."""

from __future__ import annotations

import os
import shutil

import numpy as np
from PIL import Image

from cxrlab.data import scan as scan_module
from cxrlab.data.scan import scan_dataset
from cxrlab.data.scan_cache import scan_cache_file


def _counting(monkeypatch):
    calls = []
    real = scan_module.probe_file

    def probe_file(path, **kw):
        calls.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(scan_module, "probe_file", probe_file)
    return calls


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_second_scan_reads_nothing_and_gives_the_same_index(synth_dataset, tmp_path, monkeypatch):
    data = _copy(synth_dataset, tmp_path / "COVID-19_Radiography_Dataset")
    cache = tmp_path / "cache"
    calls = _counting(monkeypatch)
    first = scan_dataset(data, verify=True, near_duplicates=True, cache_dir=cache)
    n_read = len(calls)
    assert n_read >= len(first.index) > 0
    assert scan_cache_file(data, cache).is_file()
    second = scan_dataset(data, verify=True, near_duplicates=True, cache_dir=cache)
    assert len(calls) == n_read  # nothing read again
    assert second.index.equals(first.index)
    assert [p.kind for p in second.problems] == [p.kind for p in first.problems]


def test_changed_file_is_read_again(synth_dataset, tmp_path, monkeypatch):
    data = _copy(synth_dataset, tmp_path / "COVID-19_Radiography_Dataset")
    cache = tmp_path / "cache"
    first = scan_dataset(data, near_duplicates=True, cache_dir=cache)
    row = first.index.iloc[0]
    target = row["path"]
    # New content of the same size, new mtime: the sha1 must follow the content.
    pixels = np.asarray(Image.open(target))
    Image.fromarray(255 - pixels).save(target)
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    # Another file: only its mtime changes (touch), content as before.
    touched = first.index.iloc[1]["path"]
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    calls = _counting(monkeypatch)
    second = scan_dataset(data, near_duplicates=True, cache_dir=cache)
    assert sorted(calls) == sorted([target, touched])
    new = second.index.set_index("path")
    assert new.at[target, "sha1"] != row["sha1"]
    assert new.at[touched, "sha1"] == first.index.iloc[1]["sha1"]


def test_size_change_alone_invalidates_and_truncation_is_found(synth_dataset, tmp_path):
    data = _copy(synth_dataset, tmp_path / "COVID-19_Radiography_Dataset")
    cache = tmp_path / "cache"
    first = scan_dataset(data, verify=True, cache_dir=cache)
    target = first.index.iloc[0]["path"]
    st = os.stat(target)
    raw = open(target, "rb").read()
    with open(target, "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, new size
    second = scan_dataset(data, verify=True, cache_dir=cache)
    assert target not in set(second.index["path"])
    assert any(p.path == target and p.kind == "truncated" for p in second.problems)


def test_header_only_entries_do_not_answer_a_phash_scan(synth_dataset, tmp_path, monkeypatch):
    data = _copy(synth_dataset, tmp_path / "COVID-19_Radiography_Dataset")
    cache = tmp_path / "cache"
    scan_dataset(data, hash=False, cache_dir=cache)
    calls = _counting(monkeypatch)
    result = scan_dataset(data, near_duplicates=True, cache_dir=cache)
    assert len(calls) >= len(result.index)
    assert (result.index["phash"] != "").all() and (result.index["sha1"] != "").all()


def test_cache_off_and_damaged_cache(synth_dataset, tmp_path, monkeypatch):
    data = _copy(synth_dataset, tmp_path / "COVID-19_Radiography_Dataset")
    cache = tmp_path / "cache"
    scan_dataset(data, cache_dir=cache, use_cache=False)
    assert not scan_cache_file(data, cache).exists()
    scan_cache_file(data, cache).parent.mkdir(parents=True)
    scan_cache_file(data, cache).write_text("{not json")
    result = scan_dataset(data, cache_dir=cache)  # ignored with a warning, then rewritten
    assert len(result.index) > 0
    calls = _counting(monkeypatch)
    scan_dataset(data, cache_dir=cache)
    assert calls == []


def test_a_scan_never_reports_more_than_it_asked_for(synth_dataset, tmp_path, monkeypatch):
    """An entry from a decoding scan answers a header-only scan as a header-only probe would."""
    data = _copy(synth_dataset, tmp_path / "COVID-19_Radiography_Dataset")
    cache = tmp_path / "cache"
    target = scan_dataset(data, cache_dir=cache).index.iloc[0]["path"]
    raw = open(target, "rb").read()
    with open(target, "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    assert any(
        p.kind == "truncated" for p in scan_dataset(data, verify=True, cache_dir=cache).problems
    )
    calls = _counting(monkeypatch)
    fast = scan_dataset(data, hash=False, cache_dir=cache)
    assert calls == [] and target in set(fast.index["path"])
    assert not any(p.kind == "truncated" for p in fast.problems)
    assert (fast.index["sha1"] == "").all()
