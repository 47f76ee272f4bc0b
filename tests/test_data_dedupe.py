"""Perceptual hash, Hamming distances, near-duplicate pairs and duplicate groups."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab.data import dedupe
from cxrlab.data.dedupe import (
    DEFAULT_THRESHOLD,
    hamming,
    hashes_to_words,
    near_duplicate_groups,
    near_duplicate_pairs,
    phash,
    phash_hex,
)
from cxrlab.data.images import read_gray
from cxrlab.data.scan import scan_dataset


def _reference_phash(gray: np.ndarray, hash_size: int) -> int:
    """The algorithm written out with an explicit DCT-II matrix (scipy's unnormalised type 2)."""
    side = 4 * hash_size
    small = np.asarray(
        Image.fromarray(gray).resize((side, side), Image.Resampling.LANCZOS), dtype=np.float64
    )
    n = np.arange(side)
    basis = 2.0 * np.cos(np.pi * n[:, None] * (2 * n[None, :] + 1) / (2 * side))  # [k, n]
    coeffs = basis @ small @ basis.T
    low = coeffs[:hash_size, :hash_size]
    bits = (low > np.median(low)).ravel()
    return sum(1 << (len(bits) - 1 - i) for i, b in enumerate(bits) if b)


@pytest.mark.parametrize("hash_size", [8, 16])
def test_phash_matches_the_written_out_algorithm(hash_size):
    rng = np.random.default_rng(3)
    gray = (rng.random((50, 70)) * 255).astype(np.uint8)
    assert phash(gray, hash_size=hash_size) == _reference_phash(gray, hash_size)
    width = hash_size * hash_size // 4
    assert len(phash_hex(phash(gray, hash_size=hash_size), hash_size=hash_size)) == width


def test_phash_bits_of_a_left_bright_image():
    # Bright left half, dark right half, 64 x 64 (no resizing). Along x the DCT-II of the step
    # "1 for n < N/2" is proportional to sin(pi k / 2) / sin(pi k / 2N): positive for k = 1, 5,
    # 9, 13, negative for k = 3, 7, 11, 15, zero for even k > 0; every row k_y > 0 is zero. The
    # median of the 256 kept coefficients is therefore 0, so the first row's bits at odd k
    # alternate 1, 0, 1, 0 ... and the DC bit is 1.
    gray = np.zeros((64, 64), np.uint8)
    gray[:, :32] = 255
    bits = format(phash(gray), "0256b")
    assert bits[0] == "1"
    assert [bits[k] for k in (1, 3, 5, 7, 9, 11, 13, 15)] == ["1", "0"] * 4


def test_hamming_by_hand():
    assert hamming(0b1011, 0b0001) == 2
    assert hamming("ff", "0f") == 4
    assert hamming("0" * 64, "f" * 64) == 256


def test_pairs_by_hand_single_and_multi_word():
    words = np.array([0, 1, 3, 0xFF], dtype=np.uint64)
    i, j, d = near_duplicate_pairs(words, threshold=1)
    assert list(zip(i, j, d, strict=True)) == [(0, 1, 1), (1, 2, 1)]
    two = np.array([[0, 0], [0, 3], [1, 1], [0, 1]], dtype=np.uint64)
    # distances: 0-1: 2, 0-2: 2, 0-3: 1, 1-2: 1+1, 1-3: 1, 2-3: 1
    i, j, d = near_duplicate_pairs(two, threshold=1)
    assert sorted(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == [
        (0, 3, 1),
        (1, 3, 1),
        (2, 3, 1),
    ]
    assert len(near_duplicate_pairs(two, threshold=2)[0]) == 6


def test_pairs_chunked_equal_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=(40, 4), dtype=np.uint64)
    # Near copies: flip a few bits of some hashes.
    copies = base[:15].copy()
    copies[:, 0] ^= np.uint64(0b10110)
    words = np.concatenate([base, copies])
    monkeypatch.setattr(dedupe, "_BLOCK_ELEMENTS", 50)  # force many small blocks
    got = set(zip(*near_duplicate_pairs(words, threshold=5)[:2], strict=True))
    brute = {
        (a, b)
        for a in range(len(words))
        for b in range(a + 1, len(words))
        if sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(words[a], words[b], strict=True))
        <= 5
    }
    assert got == brute and {(k, 40 + k) for k in range(15)} <= got


def test_hashes_to_words_roundtrip_and_length_check():
    hexes = ["", "00000000000000ff" * 4, None, "8" + "0" * 63]
    words, pos = hashes_to_words(hexes)
    assert pos.tolist() == [1, 3]
    assert words.shape == (2, 4)
    assert words[0].tolist() == [0xFF] * 4 and words[1, 0] == 1 << 63
    with pytest.raises(ValueError, match="different lengths"):
        hashes_to_words(["ab", "abcd"])


def test_groups_exact_and_near_are_row_order_independent():
    index = pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png", "d.png", "e.png"],
            "sha1": ["s3", "s3", "s1", "s2", "s0"],
            "phash": ["00", "00", "f0", "f1", "0f"],  # c ~ d (1 bit); e is 4 bits from a/b
        }
    )
    groups = near_duplicate_groups(index, threshold=2)
    assert groups.name == "dup_group"
    assert groups.tolist() == ["s3", "s3", "s1", "s1", "s0"]  # smallest sha1 of each group
    exact_only = near_duplicate_groups(index.drop(columns="phash"))
    assert exact_only.tolist() == ["s3", "s3", "s1", "s2", "s0"]
    shuffled = index.iloc[[4, 2, 0, 3, 1]]
    again = near_duplicate_groups(shuffled, threshold=2)
    assert dict(zip(shuffled["path"], again, strict=True)) == dict(
        zip(index["path"], groups, strict=True)
    )
    # Without sha1, singletons get a stable id derived from the path.
    by_path = near_duplicate_groups(index[["path"]])
    assert by_path.nunique() == 5 and by_path.str.len().eq(16).all()


def _png_bytes(gray: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_brightened_reencoded_copy_is_grouped_other_image_is_not(synth_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_dataset, root)
    src = read_gray(root / "COVID" / "images" / "COVID-1.png").astype(float)
    brighter = np.clip(src * 1.08 + 6, 0, 255).astype(np.uint8)
    jpeg = np.asarray(Image.open(io.BytesIO(_png_bytes(brighter, "JPEG", quality=80))))
    # Filed under another class, re-encoded: a leak a split must not create.
    (root / "Normal" / "images" / "Normal-copy.png").write_bytes(_png_bytes(jpeg))
    result = scan_dataset(root, near_duplicates=True)
    index = result.index.set_index(result.index["path"].str.rsplit("/", n=1).str[-1])
    assert index.at["Normal-copy.png", "dup_group"] == index.at["COVID-1.png", "dup_group"]
    d = hamming(index.at["Normal-copy.png", "phash"], index.at["COVID-1.png", "phash"])
    assert d <= DEFAULT_THRESHOLD
    # Every other synthetic image is in a group of its own.
    assert index["dup_group"].nunique() == len(index) - 1
    near = [p for p in result.problems if p.kind == "near_duplicate"]
    assert [p.path.rsplit("/", 1)[-1] for p in near] == ["Normal-copy.png"]
    assert "two classes" in near[0].detail
