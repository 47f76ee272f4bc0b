"""End to end: the lead's trainer writes a run; evaluate_run predicts from its checkpoint."""

import pandas as pd
import pytest

from cxrlab.evaluation import evaluate_run, read_predictions

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.mark.slow
def test_end_to_end_train_then_evaluate(synth_dataset, tmp_path):
    """Train a tiny model with the lead's trainer; evaluate predicts from its checkpoint."""
    from cxrlab.config import load_config
    from cxrlab.training import train

    cfg = load_config(
        data=synth_dataset, out=tmp_path / "run", model="resnet18", image_size=32, epochs=1,
        batch_size=8, cache_dir=tmp_path / "cache", progress=False, seed=0,
    )  # fmt: skip
    run = train(cfg).run_dir
    with pytest.warns(UserWarning, match="fewer than 1000"):
        result = evaluate_run(run, n_boot=20, device="cpu", make_figures=False)
    split = pd.read_csv(run / "split.csv")
    test = read_predictions(run / "predictions" / "test.csv", CLASSES)
    assert sorted(test.paths) == sorted(split.loc[split["split"] == "test", "path"])
    assert result.metrics["n"] == len(test) and result.classes == CLASSES
    assert (run / "predictions" / "val.csv").is_file()
    assert result.metrics["calibration"]["n_val"] == int((split["split"] == "val").sum())
