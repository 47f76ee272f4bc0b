"""Predictions CSV: round trip and validation errors naming the file and the first bad row."""

import numpy as np
import pandas as pd
import pytest

from cxrlab.errors import DataError
from cxrlab.evaluation.predictions import Predictions, read_predictions, write_predictions

CLASSES = ["COVID", "Lung_Opacity", "Normal"]


def _frame(n=5):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=n)
    labels = [CLASSES[i % 3] for i in range(n)]
    frame = pd.DataFrame(
        {
            "path": [f"/data/{c}/images/{c}-{i}.png" for i, c in enumerate(labels)],
            "label": labels,
            "predicted": [CLASSES[j] for j in probs.argmax(1)],
        }
    )
    for j, c in enumerate(CLASSES):
        frame[c] = probs[:, j]
    return frame


def _write(tmp_path, frame, name="test.csv"):
    path = tmp_path / "predictions" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_round_trip(tmp_path):
    frame = _frame()
    path = write_predictions(tmp_path / "predictions" / "test.csv", frame)
    preds = read_predictions(path, CLASSES)
    assert isinstance(preds, Predictions) and len(preds) == 5
    assert preds.classes == tuple(CLASSES)
    np.testing.assert_allclose(preds.probs, frame[CLASSES].to_numpy())  # full float precision
    assert preds.y_true.tolist() == frame["label"].tolist()
    assert preds.paths.tolist() == frame["path"].tolist()
    pd.testing.assert_frame_equal(preds.to_frame(), frame)
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporary file


def test_classes_inferred_and_index_columns_ignored(tmp_path):
    frame = _frame()
    frame["sha1"] = "ab" * 20
    preds = read_predictions(_write(tmp_path, frame))
    assert preds.classes == tuple(CLASSES)
    assert preds.extra["sha1"].tolist() == ["ab" * 20] * 5


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist.*cxrlab evaluate"):
        read_predictions(tmp_path / "nope.csv")


def test_missing_class_column(tmp_path):
    path = _write(tmp_path, _frame().drop(columns=["Normal"]))
    with pytest.raises(DataError, match=r"test.csv lacks probability column\(s\) \['Normal'\]"):
        read_predictions(path, CLASSES)


def test_extra_class_column(tmp_path):
    frame = _frame()
    frame["Viral Pneumonia"] = 0.0
    path = _write(tmp_path, frame)
    with pytest.raises(
        DataError, match=r"test.csv has column\(s\) \['Viral Pneumonia'\] that are not classes"
    ):
        read_predictions(path, CLASSES)


def test_nan_probability_names_row_and_path(tmp_path):
    frame = _frame()
    frame.loc[2, "Normal"] = np.nan
    path = _write(tmp_path, frame)
    with pytest.raises(DataError) as err:
        read_predictions(path, CLASSES)
    msg = str(err.value)
    assert (
        str(path) in msg
        and "data row 3" in msg
        and frame.loc[2, "path"] in msg
        and "'Normal'" in msg
    )


def test_probabilities_not_summing_to_one(tmp_path):
    frame = _frame()
    frame.loc[3, "COVID"] += 0.01
    frame.loc[4, "COVID"] += 0.5  # later rows are not reported: the first bad row is
    path = _write(tmp_path, frame)
    with pytest.raises(
        DataError,
        match=r"data row 4 \(path /data/COVID/images/COVID-3.png\): probabilities sum to 1.01",
    ):
        read_predictions(path, CLASSES)


def test_sum_within_tolerance_is_accepted(tmp_path):
    frame = _frame()
    frame.loc[0, "COVID"] += 0.0009
    assert len(read_predictions(_write(tmp_path, frame), CLASSES)) == 5


def test_logits_instead_of_probabilities(tmp_path):
    frame = _frame()
    frame.loc[1, CLASSES] = [2.0, -1.0, 0.0]
    with pytest.raises(DataError, match=r"data row 2 .*not all in \[0, 1\].*not logits"):
        read_predictions(_write(tmp_path, frame), CLASSES)


def test_label_unknown_to_the_run(tmp_path):
    frame = _frame()
    frame.loc[1, "label"] = "Covid"
    path = _write(tmp_path, frame)
    with pytest.raises(
        DataError,
        match=r"test.csv, data row 2 \(path .*\): label 'Covid' is not a class.*mean 'COVID'",
    ):
        read_predictions(path, CLASSES)


def test_empty_label_and_unknown_prediction(tmp_path):
    frame = _frame()
    frame.loc[0, "label"] = ""
    with pytest.raises(DataError, match="data row 1 .*label is empty"):
        read_predictions(_write(tmp_path, frame), CLASSES)
    frame = _frame()
    frame.loc[4, "predicted"] = "Tuberculosis"
    with pytest.raises(DataError, match="data row 5 .*predicted 'Tuberculosis' is not a class"):
        read_predictions(_write(tmp_path, frame, "b.csv"), CLASSES)


def test_no_rows_and_no_path_column(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        read_predictions(_write(tmp_path, _frame().iloc[:0]), CLASSES)
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['path'\]"):
        read_predictions(_write(tmp_path, _frame().drop(columns=["path"]), "c.csv"), CLASSES)


def test_write_requires_contract_columns(tmp_path):
    with pytest.raises(DataError, match="lacks column"):
        write_predictions(tmp_path / "p.csv", _frame().drop(columns=["predicted"]))
    assert not (tmp_path / "p.csv").exists()
