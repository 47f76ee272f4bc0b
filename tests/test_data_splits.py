"""Splits: proportions, stratification, groups, source hold-out, k-fold, fingerprints, refusals."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.scan import scan_dataset
from cxrlab.data.splits import (
    kfold_split,
    make_split,
    source_coverage,
    split_counts,
)
from cxrlab.errors import ConfigError, DataError
from cxrlab.rundir import split_fingerprint as fingerprint


def _index(counts: dict[str, int], *, sources: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """A fake index: ``counts[label]`` singleton images per class; sources cycled per class."""
    rows = []
    for label, n in counts.items():
        for i in range(n):
            src = sources[label][i % len(sources[label])] if sources else ""
            key = f"{label}-{i}"
            rows.append(
                {
                    "path": f"/data/{label}/{key}.png",
                    "label": label,
                    "source": src,
                    "sha1": hashlib.sha1(key.encode()).hexdigest(),
                    "dup_group": key,
                }
            )
    return pd.DataFrame(rows)


def _straddling(split: pd.DataFrame, col: str) -> list:
    per = split.groupby(col)["split"].nunique()
    return per[per > 1].index.tolist()


def test_stratified_proportions_exact_where_targets_are_whole():
    index = _index({"A": 40, "B": 20, "C": 10})
    split = make_split(index, val=0.15, test=0.15, seed=0)
    counts = split_counts(split)
    # 0.15 * 40 = 6, 0.15 * 20 = 3: exact; 0.15 * 10 = 1.5: within one image.
    assert counts.loc["A"].tolist() == [28, 6, 6, 40]
    assert counts.loc["B"].tolist() == [14, 3, 3, 20]
    assert abs(counts.at["C", "val"] - 1.5) <= 1 and abs(counts.at["C", "test"] - 1.5) <= 1
    assert counts.at["C", "total"] == 10
    assert list(split.index) == list(index.index)  # same rows, same order
    assert set(split["split"]) == {"train", "val", "test"}


def test_small_classes_get_an_image_in_every_split():
    split = make_split(_index({"A": 50, "B": 3}), val=0.1, test=0.1, seed=0)
    assert split_counts(split).loc["B"].tolist() == [1, 1, 1, 3]


def test_deterministic_seeded_and_row_order_independent():
    index = _index({"A": 30, "B": 30})
    a = make_split(index, seed=0)
    b = make_split(index, seed=0)
    c = make_split(index, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert (a["split"] != c["split"]).any()
    shuffled = make_split(index.sample(frac=1.0, random_state=3), seed=0)
    assert shuffled.set_index("path")["split"].to_dict() == a.set_index("path")["split"].to_dict()


def test_groups_never_straddle_splits():
    index = _index({"A": 40, "B": 40})
    # Duplicate groups of sizes 6, 4 and 3, one of them mixing classes.
    index.loc[0:5, "dup_group"] = "g1"
    index.loc[10:13, "dup_group"] = "g2"
    index.loc[[20, 21, 45], "dup_group"] = "g3"
    for seed in range(5):
        split = make_split(index, seed=seed)
        assert _straddling(split, "dup_group") == []
        counts = split_counts(split)
        assert (counts[["train", "val", "test"]] > 0).all().all()


def test_missing_dup_group_is_computed_from_sha1():
    index = _index({"A": 20, "B": 20}).drop(columns="dup_group")
    index.loc[5, "sha1"] = index.loc[30, "sha1"]  # an exact duplicate across classes
    split = make_split(index, seed=0)
    assert "dup_group" in split
    assert split.loc[5, "split"] == split.loc[30, "split"]
    assert split.loc[5, "dup_group"] == split.loc[30, "dup_group"]


def test_source_split_holds_out_whole_sources():
    sources = {"A": ["a1", "a2", "a3", "a4", "a5"], "B": ["b1", "b2", "b3", "b4"]}
    index = _index({"A": 50, "B": 40}, sources=sources)
    split = make_split(index, method="source", seed=0)
    by = {s: set(split.loc[split["split"] == s, "source"]) for s in ("train", "val", "test")}
    assert by["train"].isdisjoint(by["val"]) and by["train"].isdisjoint(by["test"])
    assert by["val"].isdisjoint(by["test"])
    assert _straddling(split, "source") == []
    cov = source_coverage(split)
    assert cov.loc["A", "sources"] == 5 and cov.loc["B", "sources"] == 4
    assert (cov["test_unseen_sources"] == cov["test_sources"]).all()
    assert (cov["val_unseen_sources"] == cov["val_sources"]).all()
    assert (cov[["train_images", "val_images", "test_images"]] > 0).all().all()


def test_source_split_merges_sources_joined_by_a_duplicate():
    index = _index({"A": 30, "B": 30}, sources={"A": ["a1", "a2", "a3"], "B": ["b1", "b2", "b3"]})
    # An image of source a1 duplicated in source a2: a1 and a2 must go to the same split.
    first_a1 = index.index[index["source"] == "a1"][0]
    first_a2 = index.index[index["source"] == "a2"][0]
    index.loc[first_a2, "dup_group"] = index.loc[first_a1, "dup_group"]
    split = make_split(index, method="source", seed=0)
    per_source = split.groupby("source")["split"].first()
    assert per_source["a1"] == per_source["a2"]


def test_source_split_with_two_sources_has_train_and_test():
    index = _index({"A": 20, "B": 20}, sources={"A": ["a1", "a2"], "B": ["b1", "b2"]})
    split = make_split(index, method="source", seed=0)
    counts = split_counts(split)
    assert (counts["train"] > 0).all() and (counts["test"] > 0).all()


def test_source_split_refusals():
    single = _index({"A": 10, "B": 10}, sources={"A": ["a1", "a2"], "B": ["b1"]})
    with pytest.raises(DataError, match=r"'B' \(only 'b1'\)"):
        make_split(single, method="source")
    none = _index({"A": 10, "B": 10})
    with pytest.raises(DataError, match="metadata.xlsx"):
        make_split(none, method="source")
    with pytest.raises(DataError, match="metadata.xlsx"):
        make_split(none.drop(columns="source"), method="source")


def test_kfold_each_image_is_tested_exactly_once():
    index = _index({"A": 23, "B": 17, "C": 9})
    index.loc[0:3, "dup_group"] = "g1"
    folds = [kfold_split(index, folds=4, fold=f, val=0.15, seed=0) for f in range(4)]
    tested = pd.concat([f.loc[f["split"] == "test", "path"] for f in folds])
    assert sorted(tested) == sorted(index["path"]) and not tested.duplicated().any()
    for f, split in enumerate(folds):
        assert (split["fold"] == folds[0]["fold"]).all()  # one fold assignment for all folds
        assert set(split.loc[split["split"] == "test", "fold"]) == {f}
        assert _straddling(split, "dup_group") == []
        counts = split_counts(split)
        # test folds are stratified: within one image of n / 4 (the group of 4 aside)
        assert (
            abs(counts.at["B", "test"] - 17 / 4) <= 1 and abs(counts.at["C", "test"] - 9 / 4) <= 1
        )
        # val is 15 % of all images, carved from the other folds
        assert abs(counts.at["B", "val"] - 0.15 * 17) <= 1


def test_kfold_by_source():
    sources = {"A": [f"a{i}" for i in range(6)], "B": [f"b{i}" for i in range(6)]}
    index = _index({"A": 60, "B": 60}, sources=sources)
    for f in range(3):
        split = kfold_split(index, folds=3, fold=f, seed=0, method="source")
        train = set(split.loc[split["split"] == "train", "source"])
        test = set(split.loc[split["split"] == "test", "source"])
        val = set(split.loc[split["split"] == "val", "source"])
        assert train.isdisjoint(test) and train.isdisjoint(val) and test
        assert (split_counts(split)["test"] > 0).all()


def test_split_fingerprint_by_hand():
    # The one fingerprint of a split (cxrlab.rundir), which `cxrlab data split` prints.
    def split_hash(frame, which="test"):
        return fingerprint(frame, which)["sha1"]

    frame = pd.DataFrame(
        {
            "path": ["/x/1.png", "/x/2.png", "/x/3.png"],
            "label": ["A", "B", "A"],
            "sha1": ["bbb", "aaa", "ccc"],
            "split": ["test", "test", "train"],
        }
    )
    expected = hashlib.sha1(b"aaa\tB\nbbb\tA").hexdigest()
    assert split_hash(frame) == expected
    assert split_hash(frame.iloc[::-1]) == expected  # row order does not matter
    moved = frame.assign(path=["/elsewhere/1.png", "/elsewhere/2.png", "/x/3.png"])
    assert split_hash(moved) == expected  # content, not location
    relabelled = frame.assign(label=["A", "A", "A"])
    assert split_hash(relabelled) != expected
    assert split_hash(frame, "train") == hashlib.sha1(b"ccc\tA").hexdigest()
    no_sha = frame.assign(sha1=["", "aaa", "ccc"])
    assert split_hash(no_sha) == hashlib.sha1(b"/x/1.png\tA\n/x/2.png\tB").hexdigest()
    assert fingerprint(frame) == {"sha1": expected, "n": 2, "key": "sha1"}
    assert fingerprint(no_sha)["key"] == "path"
    with pytest.raises(DataError):
        split_hash(frame, "holdout")


def test_bad_arguments():
    index = _index({"A": 10, "B": 10})
    with pytest.raises(ConfigError, match="val \\+ test"):
        make_split(index, val=0.5, test=0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        make_split(index, val=0.0)
    with pytest.raises(ConfigError, match="method"):
        make_split(index, method="random")
    with pytest.raises(DataError, match="'label'"):
        make_split(index.drop(columns="label"))
    with pytest.raises(DataError, match="empty"):
        make_split(index.iloc[:0])
    with pytest.raises(DataError, match="group column 'site'"):
        make_split(index, group_col="site")
    with pytest.raises(ConfigError, match="fold must be"):
        kfold_split(index, folds=3, fold=3)
    with pytest.raises(ConfigError, match="folds must be"):
        kfold_split(index, folds=1, fold=0)
    with pytest.raises(DataError, match="fewer folds"):
        kfold_split(_index({"A": 2}), folds=3, fold=0)


def test_synthetic_dataset_end_to_end(synth_dataset):
    index = scan_dataset(synth_dataset, near_duplicates=True).index
    strat = make_split(index, seed=0)
    assert split_counts(strat)[["train", "val", "test"]].values.tolist() == [[4, 1, 1]] * 4
    source = make_split(index, method="source", seed=0)
    cov = source_coverage(source)
    # 6 images per class from 3 sources (3, 2, 1 images): one source per split.
    assert cov["sources"].tolist() == [3] * 4
    assert (cov[["train_sources", "val_sources", "test_sources"]] == 1).all().all()
    assert (cov["test_unseen_sources"] == 1).all()
    assert np.array_equal(
        make_split(index, method="source", seed=0)["split"].to_numpy(), source["split"].to_numpy()
    )
