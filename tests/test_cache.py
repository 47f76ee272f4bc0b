"""Decode-once cache: reuse, invalidation, corruption detection, bad files, full disk."""

import errno
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from cxrlab.data import cache as cache_mod
from cxrlab.data.cache import build_cache
from cxrlab.errors import CxrlabError


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / "data" / f"img{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(p)
        paths.append(p)
    hashes = [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths]
    return paths, hashes


def test_build_then_reuse_without_decoding(images, tmp_path, monkeypatch):
    paths, hashes = images
    first = build_cache(paths, hashes, 16, cache_dir=tmp_path / "c", workers=1)
    assert first.images.shape == (5, 16, 16) and first.images.dtype == np.uint8
    assert first.errors == {} and first.ok.all()
    # Same row content as a direct decode + resize.
    from cxrlab.data.images import load_for_model

    assert np.array_equal(first.images[2], load_for_model(paths[2], 16))

    def boom(*args, **kwargs):
        raise AssertionError("cache was rebuilt")

    monkeypatch.setattr(cache_mod, "_decode_all", boom)
    again = build_cache(paths, hashes, 16, cache_dir=tmp_path / "c")
    assert np.array_equal(np.asarray(again.images), np.asarray(first.images))


def test_parallel_build_matches_serial(images, tmp_path):
    paths, hashes = images
    a = build_cache(paths, hashes, 16, cache_dir=tmp_path / "a", workers=1)
    b = build_cache(paths * 10, hashes * 10, 16, cache_dir=tmp_path / "b", workers=2)
    assert np.array_equal(np.asarray(b.images[:5]), np.asarray(a.images))


def test_changed_file_gets_a_new_key(images, tmp_path):
    paths, hashes = images
    a = build_cache(paths, hashes, 16, cache_dir=tmp_path / "c", workers=1)
    b = build_cache(paths, hashes[:-1] + ["changed"], 16, cache_dir=tmp_path / "c", workers=1)
    assert a.key != b.key and a.path != b.path


def test_corrupted_cache_is_rebuilt_with_warning(images, tmp_path):
    paths, hashes = images
    a = build_cache(paths, hashes, 16, cache_dir=tmp_path / "c", workers=1)
    expected = np.array(a.images)
    with open(a.path, "r+b") as fh:
        fh.seek(10)
        fh.write(bytes([(int(expected.reshape(-1)[10]) + 1) % 256]))
    with pytest.warns(UserWarning, match="checksum mismatch"):
        b = build_cache(paths, hashes, 16, cache_dir=tmp_path / "c", workers=1)
    assert np.array_equal(np.asarray(b.images), expected)
    # A truncated array file is caught by its size.
    with open(b.path, "r+b") as fh:
        fh.truncate(100)
    with pytest.warns(UserWarning, match="stale or corrupted"):
        build_cache(paths, hashes, 16, cache_dir=tmp_path / "c", workers=1)


def test_undecodable_file_is_recorded_not_fatal(images, tmp_path):
    paths, hashes = images
    bad = tmp_path / "data" / "bad.png"
    bad.write_bytes(paths[0].read_bytes()[:60])
    c = build_cache([*paths, bad], [*hashes, "x"], 16, cache_dir=tmp_path / "c", workers=1)
    assert list(c.errors) == [5] and "truncated" in c.errors[5]
    assert c.ok.tolist() == [True] * 5 + [False]


def test_full_disk_leaves_nothing_behind(images, tmp_path, monkeypatch):
    paths, hashes = images

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(CxrlabError, match="full"):
        build_cache(paths, hashes, 16, cache_dir=tmp_path / "c", workers=1)
    assert list((tmp_path / "c").iterdir()) == []


def test_lung_preprocessing_decodes_in_this_process(monkeypatch, tmp_path):
    """Segmenter-based decoding never goes to forked workers (they can hang on torch's locks)."""
    seen = []
    monkeypatch.setattr(cache_mod, "_decode_chunk", lambda job: seen.append(job) or {})
    monkeypatch.setattr(cache_mod, "ProcessPoolExecutor", None)  # any pool use would fail
    tmp = tmp_path / "a.u8"
    cache_mod._decode_all(["x.png"] * 100, tmp, 100, 8, 2, None, pre={"lungs": "crop"})
    assert len(seen) >= 1
