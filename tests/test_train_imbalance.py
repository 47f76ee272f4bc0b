"""Class imbalance: balanced loss weights and the balanced sampler, through ``train(config)``."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from cxrlab.config import load_config
from cxrlab.errors import ConfigError
from cxrlab.training import train
from cxrlab.training.data import (
    CachedDataModule,
    balanced_class_weights,
    balanced_sample_weights,
)


def test_balanced_class_weights_hand_computed():
    # counts 6, 2, 0 -> N / (K n_c) = 8 / 18, 8 / 6, and 0 for the class with no image
    w = balanced_class_weights(np.array([0] * 6 + [1] * 2), 3)
    np.testing.assert_allclose(w, [8 / 18, 8 / 6, 0.0])
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 76 + [1] * 10 + [2] * 30)  # 7.6 : 1 like Normal : Viral Pneumonia
    np.testing.assert_allclose(
        balanced_class_weights(y, 3), compute_class_weight("balanced", classes=np.arange(3), y=y)
    )


def test_balanced_sampler_draws_classes_equally():
    labels = np.array([0] * 760 + [1] * 100)
    images = np.zeros((len(labels), 4, 4), dtype=np.uint8)
    dm = CachedDataModule(
        images, np.array(["train"] * len(labels)), labels, batch_size=86, seed=0,
        pin_memory=False, sampler="balanced",
    )  # fmt: skip
    drawn = torch.cat([y for _, y in dm.train_dataloader()]).numpy()
    assert len(drawn) == 860  # one epoch = as many draws as training images
    assert abs(np.mean(drawn == 1) - 0.5) < 0.06  # ~50%, not 11.6%
    np.testing.assert_allclose(balanced_sample_weights(np.array([0, 0, 1])), [0.5, 0.5, 1.0])
    plain = CachedDataModule(
        images, np.array(["train"] * len(labels)), labels, batch_size=86, seed=0,
        pin_memory=False,
    )  # fmt: skip
    plain_drawn = torch.cat([y for _, y in plain.train_dataloader()]).numpy()
    assert np.mean(plain_drawn == 1) == pytest.approx(100 / 860)


def test_weighted_loss_is_used_in_training_step():
    from cxrlab.models import create_classifier
    from cxrlab.training.module import CxrLightningModule
    from cxrlab.training.recipes import resolve_recipe

    classes = ["COVID", "Normal", "Viral Pneumonia"]
    model = create_classifier("resnet18", classes, image_size=32)
    cfg = load_config(data="/d", out="/o", model="resnet18", image_size=32, epochs=1)
    recipe = resolve_recipe(cfg)
    weights = np.array([0.5, 1.0, 4.0])
    module = CxrLightningModule(
        model, recipe, seed=0, channels_last=False, class_weights=weights
    ).eval()
    module.log = lambda *a, **k: None
    x, y = torch.rand(6, 1, 32, 32), torch.tensor([0, 1, 2, 2, 1, 0])
    loss = module.training_step((x, y), 0)
    with torch.no_grad():
        logits = module.model(x)
    expected = F.cross_entropy(
        logits, y, weight=torch.tensor(weights, dtype=torch.float32),
        label_smoothing=recipe.label_smoothing,
    )  # fmt: skip
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "class_weights" not in module.state_dict()  # not part of the checkpoint


def test_train_records_and_applies_both_options(synth_dataset, tmp_path, monkeypatch):
    import cxrlab.training.data as data_mod
    import cxrlab.training.module as module_mod

    seen = {}

    class SpyModule(module_mod.CxrLightningModule):
        def __init__(self, *args, class_weights=None, **kwargs):
            seen["class_weights"] = class_weights
            super().__init__(*args, class_weights=class_weights, **kwargs)

    class SpyData(data_mod.CachedDataModule):
        def __init__(self, *args, sampler="shuffle", **kwargs):
            seen["sampler"] = sampler
            super().__init__(*args, sampler=sampler, **kwargs)

    monkeypatch.setattr(module_mod, "CxrLightningModule", SpyModule)
    monkeypatch.setattr(data_mod, "CachedDataModule", SpyData)
    cfg = load_config(
        data=synth_dataset, out=tmp_path / "run", model="resnet18", image_size=32, epochs=1,
        batch_size=8, cache_dir=tmp_path / "cache", progress=False, seed=0,
        class_weights="balanced", sampler="balanced",
    )  # fmt: skip
    result = train(cfg)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["class_weights"] == "balanced" and saved["sampler"] == "balanced"
    assert seen["sampler"] == "balanced"
    split = pd.read_csv(result.run_dir / "split.csv")
    train_labels = split.loc[split["split"] == "train", "label"]
    ids = train_labels.map({c: i for i, c in enumerate(result.classes)}).to_numpy()
    np.testing.assert_allclose(
        seen["class_weights"], balanced_class_weights(ids, len(result.classes))
    )


def test_unknown_option_values_are_config_errors():
    with pytest.raises(ConfigError, match="class_weights"):
        load_config(data="/d", out="/o", class_weights="inverse")
    with pytest.raises(ConfigError, match="sampler"):
        load_config(data="/d", out="/o", sampler="oversample")
