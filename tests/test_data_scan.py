"""scan_dataset: layouts, class names, metadata, masks, every problem kind, every DataError."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab.data.scan import INDEX_COLUMNS, STRICT_KINDS, find_dataset_dir, scan_dataset
from cxrlab.errors import DataError


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def _noise(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _kinds(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in result.problems:
        out.setdefault(p.kind, []).append(Path(p.path).name)
    return out


# ---------------------------------------------------------------------------- layouts and names


def test_class_names_are_matched_and_ordered(tiny_layout):
    root = tiny_layout(
        {"viral_pneumonias": 1, "Tuberculosis": 1, "covid": 2, "Lung Opacity": 1, "NORMAL": 1},
        masks=False,
    )
    result = scan_dataset(root)
    # Canonical classes in the database's order first, unknown folder names after, sorted.
    assert result.classes == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia", "Tuberculosis"]
    assert result.index["label"].tolist() == [
        "COVID",
        "COVID",
        "Lung_Opacity",
        "Normal",
        "Viral Pneumonia",
        "Tuberculosis",
    ]
    assert result.problems == []


def test_current_layout_index_contract(synth_dataset):
    before = _snapshot(synth_dataset)
    result = scan_dataset(synth_dataset)
    assert _snapshot(synth_dataset) == before  # nothing written inside the dataset
    index = result.index
    assert list(index.columns) == [*INDEX_COLUMNS, "dup_group"]
    assert len(index) == 24 and result.problems == []
    assert result.root == synth_dataset
    assert set(result.layouts.values()) == {"current"}
    first = index.iloc[0]
    assert Path(first["path"]).is_absolute()
    assert first["path"].endswith("COVID/images/COVID-1.png")
    assert first["mask_path"].endswith("COVID/masks/COVID-1.png")
    assert (first["width"], first["height"], first["mode"]) == (64, 64, "L")
    assert first["source"] == "https://synthetic.example/hospital-a"
    assert len(first["sha1"]) == 40 and first["dup_group"] == first["sha1"][:16]
    assert index["width"].dtype == np.int64
    assert len(result.masks) == 24


def test_root_above_the_dataset_is_descended(synth_dataset):
    # synthesize() returns OUT/COVID-19_Radiography_Dataset; OUT itself is accepted too.
    assert scan_dataset(synth_dataset.parent).root == synth_dataset


def test_nested_single_folders_are_descended(tiny_layout):
    root = tiny_layout({"COVID": 1, "Normal": 1}, masks=False)
    wrapper = root.parent.parent / "archive"
    shutil.move(str(root.parent), str(wrapper / "unzipped"))
    found = find_dataset_dir(wrapper)
    assert found == (wrapper / "unzipped" / root.name).resolve()
    assert scan_dataset(wrapper).classes == ["COVID", "Normal"]


def test_flat_and_nested_layouts(tiny_layout):
    flat = tiny_layout({"COVID": 2, "Normal": 3}, layout="flat")
    result = scan_dataset(flat)
    assert result.layouts == {"COVID": "flat", "Normal": "flat"}
    assert result.index["label"].value_counts().to_dict() == {"Normal": 3, "COVID": 2}
    assert (result.index["mask_path"] == "").all() and (result.index["source"] == "").all()

    nested = tiny_layout({"COVID": 1, "Normal": 1}, masks=False)
    _png(nested / "COVID" / "site1" / "extra.png", _noise(99))
    result = scan_dataset(nested)
    assert result.layouts["COVID"] == "current+nested"
    assert sorted(Path(p).name for p in result.index["path"]) == [
        "COVID-1.png",
        "Normal-1.png",
        "extra.png",
    ]


def test_natural_order_of_files(tiny_layout):
    root = tiny_layout({"COVID": 11, "Normal": 1}, masks=False)
    names = [Path(p).name for p in scan_dataset(root).index["path"]]
    assert names[:3] == ["COVID-1.png", "COVID-2.png", "COVID-3.png"]
    assert names[10] == "COVID-11.png"


# ---------------------------------------------------------------------------- metadata and masks


def test_metadata_gives_source_matched_without_extension_or_case(tiny_layout):
    root = tiny_layout({"COVID": 3, "Normal": 2}, masks=False)
    pd.DataFrame(
        {
            "FILE NAME": ["covid-1.PNG", "COVID-2", "COVID-99"],
            "FORMAT": "PNG",
            "SIZE": "16*16",
            "URL": ["https://a.example", "https://b.example", "https://c.example"],
        }
    ).to_excel(root / "COVID.metadata.xlsx", index=False)
    result = scan_dataset(root)
    src = dict(
        zip(result.index["path"].map(lambda p: Path(p).name), result.index["source"], strict=True)
    )
    assert src == {
        "COVID-1.png": "https://a.example",
        "COVID-2.png": "https://b.example",
        "COVID-3.png": "",
        "Normal-1.png": "",
        "Normal-2.png": "",
    }
    # COVID-3 is missing from COVID's metadata; Normal has no metadata file, so no complaint.
    assert _kinds(result) == {"not_in_metadata": ["COVID-3.png"]}
    # The metadata file itself is not reported as a non-image file.


def test_bad_metadata_is_a_problem_and_strict_error(tiny_layout):
    root = tiny_layout({"COVID": 1, "Normal": 1}, masks=False)
    pd.DataFrame({"name": ["COVID-1"], "where": ["x"]}).to_excel(
        root / "COVID.metadata.xlsx", index=False
    )
    (root / "Normal.metadata.xlsx").write_text("not a spreadsheet")
    result = scan_dataset(root)
    kinds = _kinds(result)
    assert sorted(kinds["bad_metadata"]) == ["COVID.metadata.xlsx", "Normal.metadata.xlsx"]
    assert (result.index["source"] == "").all()
    with pytest.raises(DataError, match="COVID.metadata.xlsx"):
        scan_dataset(root, strict=True)


def test_masks_pairing_and_mask_problems(tiny_layout):
    root = tiny_layout({"COVID": 4, "Normal": 1}, size=16)
    masks = root / "COVID" / "masks"
    # A mask named in another case still pairs; half the size, same aspect: fine (resizable).
    (masks / "COVID-1.png").unlink()
    _png(masks / "covid-1.PNG", np.full((8, 8), 255, np.uint8))
    # Other aspect ratio: size_mismatch, mask not used.
    _png(masks / "COVID-2.png", np.full((16, 12), 255, np.uint8))
    # All-zero mask: empty_mask (only seen when decoding).
    _png(masks / "COVID-3.png", np.zeros((16, 16), np.uint8))
    # A mask whose image does not exist.
    _png(masks / "COVID-77.png", np.full((16, 16), 255, np.uint8))

    fast = scan_dataset(root, verify=False)
    mask_of = dict(
        zip(fast.index["path"].map(lambda p: Path(p).name), fast.index["mask_path"], strict=True)
    )
    assert mask_of["COVID-1.png"].endswith("covid-1.PNG")
    assert mask_of["COVID-2.png"] == ""
    assert mask_of["COVID-3.png"].endswith("COVID-3.png")  # not decoded: not known to be empty
    assert _kinds(fast) == {
        "mask_without_image": ["COVID-77.png"],
        "size_mismatch": ["COVID-2.png"],
    }

    full = scan_dataset(root, verify=True)
    mask_of = dict(
        zip(full.index["path"].map(lambda p: Path(p).name), full.index["mask_path"], strict=True)
    )
    assert mask_of["COVID-3.png"] == ""
    assert _kinds(full)["empty_mask"] == ["COVID-3.png"]
    masks_frame = full.masks.set_index(full.masks["path"].map(lambda p: Path(p).name))
    assert (masks_frame.at["covid-1.PNG", "width"], masks_frame.at["covid-1.PNG", "height"]) == (
        8,
        8,
    )


# ---------------------------------------------------------------------------- problem kinds


def test_problem_files_are_reported_and_skipped(tiny_layout):
    root = tiny_layout({"COVID": 2, "Normal": 2}, masks=False, size=32)
    covid = root / "COVID" / "images"
    # Truncated PNG: the header is intact, the pixel data cut short.
    data = (covid / "COVID-1.png").read_bytes()
    (covid / "COVID-3.png").write_bytes(data[: len(data) // 2])
    (covid / "COVID-4.png").write_bytes(b"this is text, not a PNG")
    (covid / "COVID-5.png").write_bytes(b"")
    (covid / "notes.txt").write_text("hello")
    (covid / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (covid / "Thumbs.db").write_bytes(b"\0")
    _png(root / "stray.png", _noise(5))  # an image outside any class folder
    (root / "README.md.txt").write_text("the release's readme is not a problem")

    header_only = scan_dataset(root)
    kinds = _kinds(header_only)
    assert sorted(kinds["unreadable"]) == ["COVID-4.png", "COVID-5.png"]
    assert sorted(kinds["not_image"]) == [".DS_Store", "Thumbs.db", "notes.txt"]
    assert kinds["loose_image"] == ["stray.png"]
    assert "truncated" not in kinds  # headers only: the truncation is not seen
    assert len(header_only.index) == 5

    verified = scan_dataset(root, verify=True)
    assert _kinds(verified)["truncated"] == ["COVID-3.png"]
    names = sorted(Path(p).name for p in verified.index["path"])
    assert names == ["COVID-1.png", "COVID-2.png", "Normal-1.png", "Normal-2.png"]
    detail = next(p.detail for p in verified.problems if p.kind == "truncated")
    assert "truncated or corrupt" in detail

    with pytest.raises(DataError) as err:
        scan_dataset(root, verify=True, strict=True)
    message = str(err.value)
    for name in ("COVID-3.png", "COVID-4.png", "COVID-5.png"):
        assert name in message
    assert "without strict" in message
    assert {"unreadable", "truncated"} <= STRICT_KINDS


def test_rgba_palette_and_16bit_images_are_read(tiny_layout):
    root = tiny_layout({"COVID": 1, "Normal": 1}, masks=False, size=8)
    covid = root / "COVID" / "images"
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    _png(covid / "rgba.png", rgba, mode="RGBA")
    Image.fromarray(_noise(3, 8)).convert("P").save(covid / "palette.png")
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(covid / "deep.png")
    result = scan_dataset(root, verify=True)
    modes = dict(
        zip(result.index["path"].map(lambda p: Path(p).name), result.index["mode"], strict=True)
    )
    assert modes["rgba.png"] == "RGBA" and modes["palette.png"] == "P"
    assert modes["deep.png"].startswith("I")
    assert result.problems == []


def test_exact_duplicates_across_classes(tiny_layout):
    root = tiny_layout({"COVID": 2, "Normal": 2}, masks=False)
    shutil.copy(root / "COVID" / "images" / "COVID-1.png", root / "Normal" / "images" / "copy.png")
    result = scan_dataset(root)
    dups = [p for p in result.problems if p.kind == "duplicate"]
    assert [Path(p.path).name for p in dups] == ["copy.png"]
    assert "COVID-1.png" in dups[0].detail and "two classes" in dups[0].detail
    index = result.index.set_index(result.index["path"].map(lambda p: Path(p).name))
    assert index.at["copy.png", "dup_group"] == index.at["COVID-1.png", "dup_group"]
    assert index["dup_group"].nunique() == 4  # 5 images, one pair


def test_hash_false_leaves_sha1_empty(tiny_layout):
    root = tiny_layout({"COVID": 2, "Normal": 1}, masks=False)
    result = scan_dataset(root, hash=False)
    assert (result.index["sha1"] == "").all()
    assert "dup_group" not in result.index


def test_empty_class_folder(tiny_layout):
    root = tiny_layout({"COVID": 2, "Normal": 2}, masks=False)
    (root / "Lung_Opacity" / "images").mkdir(parents=True)
    result = scan_dataset(root)
    assert result.classes == ["COVID", "Normal"]
    assert _kinds(result) == {"empty_class": ["Lung_Opacity"]}
    with pytest.raises(DataError, match="Lung_Opacity"):
        scan_dataset(root, strict=True)
    with pytest.raises(DataError, match="its folder holds no images"):
        scan_dataset(root, classes=["COVID", "Lung Opacity"])


# ---------------------------------------------------------------------------- options


def test_classes_option_selects_and_orders(tiny_layout):
    root = tiny_layout({"COVID": 1, "Normal": 2, "Viral Pneumonia": 1}, masks=False)
    result = scan_dataset(root, classes=["normal", "COVID"])
    assert result.classes == ["Normal", "COVID"]
    assert result.index["label"].tolist() == ["Normal", "Normal", "COVID"]
    with pytest.raises(DataError, match="Did you mean 'Normal'"):
        scan_dataset(root, classes=["Normla"])


def test_limit_per_class_is_a_seeded_subset(tiny_layout):
    root = tiny_layout({"COVID": 12, "Normal": 3}, masks=False)

    def names(**kw):
        return [Path(p).name for p in scan_dataset(root, limit_per_class=4, **kw).index["path"]]

    a, b, c = names(seed=0), names(seed=0), names(seed=1)
    assert a == b
    assert len(a) == 7  # 4 COVID + all 3 Normal
    assert sum(n.startswith("COVID") for n in a) == 4
    assert a != c
    # An unreadable file drawn into the sample is replaced by another draw.
    for i in range(1, 11):
        (root / "COVID" / "images" / f"COVID-{i}.png").write_bytes(b"junk")
    d = scan_dataset(root, limit_per_class=4, seed=0)
    covid = d.index[d.index["label"] == "COVID"]
    assert sorted(Path(p).name for p in covid["path"]) == [
        "COVID-11.png",
        "COVID-12.png",
    ]
    assert len([p for p in d.problems if p.kind == "unreadable"]) == 10


# ---------------------------------------------------------------------------- errors


def test_missing_file_and_empty_roots(tmp_path):
    with pytest.raises(DataError, match="does not exist.*cxrlab synth"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file"):
        scan_dataset(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        scan_dataset(tmp_path / "empty")


def test_no_class_folders_names_the_expected_layout(tmp_path):
    (tmp_path / "d" / "COVID").mkdir(parents=True)
    (tmp_path / "d" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        scan_dataset(tmp_path / "d")
    message = str(err.value)
    assert "none holds images" in message
    assert "<dataset>/<Class>/images/*.png" in message and "<dataset>/<Class>/*.png" in message


def test_single_class_folder_is_refused(synth_dataset):
    with pytest.raises(DataError, match="single class folder"):
        scan_dataset(synth_dataset / "COVID")


def test_two_folders_for_one_class(tiny_layout):
    root = tiny_layout({"COVID": 1, "covid": 1, "Normal": 1}, masks=False)
    with pytest.raises(DataError, match="both name class 'COVID'"):
        scan_dataset(root)


def test_class_folders_in_several_places(tiny_layout, tmp_path):
    a = tiny_layout({"COVID": 1, "Normal": 1}, masks=False, name="train")
    shutil.copytree(a, a.parent / "test")
    with pytest.raises(DataError, match="several places"):
        scan_dataset(a.parent)


def test_bad_limit(synth_dataset):
    with pytest.raises(DataError, match="limit_per_class"):
        scan_dataset(synth_dataset, limit_per_class=0)


# ---------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_subset_with_limit(rdb_mini):
    result = scan_dataset(rdb_mini.parent, limit_per_class=3, verify=True, near_duplicates=True)
    assert result.classes == ["COVID", "Normal", "Viral Pneumonia"]
    assert result.index["label"].value_counts().to_dict() == {
        "COVID": 3,
        "Normal": 3,
        "Viral Pneumonia": 3,
    }
    assert set(zip(result.index["width"], result.index["height"], strict=True)) == {(224, 224)}
    assert (result.index["mask_path"] == "").all()  # the subset has no masks
    assert result.index["phash"].str.len().eq(64).all()
    assert result.problems == []
