"""Model registry: the seed CNN's parameter counts, every model's output, factory errors."""

import pytest
import torch

from cxrlab.errors import CheckpointError, ConfigError
from cxrlab.models import (
    count_parameters,
    create_classifier,
    get_spec,
    list_models,
    load_classifier,
    save_classifier,
)

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def test_seed_cnn_has_the_seed_parameter_counts():
    model = create_classifier("seed-cnn", CLASSES)
    assert count_parameters(model) == {
        "total": 2_943_428,
        "trainable": 2_900_868,
        "non_trainable": 42_560,
    }


def test_registry_lists_required_models():
    names = set(list_models())
    assert {
        "seed-cnn",
        "resnet18",
        "resnet50",
        "densenet121",
        "efficientnet_b0",
        "convnext_tiny",
    } <= names


@pytest.mark.parametrize("name", list_models())
def test_every_model_outputs_finite_logits(name):
    torch.manual_seed(0)
    model = create_classifier(name, CLASSES[:3], image_size=64).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    # The registered CAM layer exists in every model.
    assert dict(model.named_modules()).get(model.meta.cam_layer) is not None


def test_unknown_model_suggests_close_match():
    with pytest.raises(ConfigError, match="resnet18"):
        get_spec("resnet19")


def test_pretrained_failure_is_a_clear_error(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("network unreachable")
        raise AssertionError("unexpected call")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match="without --pretrained"):
        create_classifier("resnet18", CLASSES, pretrained=True)


def test_checkpoint_round_trip(tmp_path):
    model = create_classifier("seed-cnn", CLASSES[:2], image_size=32).eval()
    path = save_classifier(model, tmp_path / "m.ckpt")
    loaded, meta = load_classifier(path)
    assert meta.classes == tuple(CLASSES[:2]) and meta.image_size == 32
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))


def test_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    model = create_classifier("seed-cnn", CLASSES[:2], image_size=32)
    path = save_classifier(model, tmp_path / "m.ckpt")
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_classifier(tmp_path / "cut.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a cxrlab checkpoint"):
        load_classifier(tmp_path / "foreign.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["cxrlab_meta"]["format"] = 999
    torch.save(ckpt, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="format 999"):
        load_classifier(tmp_path / "future.ckpt")


def test_any_timm_architecture_by_prefix(tmp_path):
    """``timm/<arch>`` builds any timm model from scratch with one channel, and round-trips."""
    from cxrlab.config import load_config
    from cxrlab.models import load_classifier, save_classifier

    model = create_classifier("timm/resnet10t", ["A", "B"], image_size=32)
    assert model.meta.in_chans == 1 and model.meta.cam_layer == "network.layer4"
    x = torch.rand(2, 1, 32, 32)
    assert model(x).shape == (2, 2)
    loaded, meta = load_classifier(save_classifier(model, tmp_path / "m.ckpt"))
    assert meta.model_name == "timm/resnet10t"
    torch.testing.assert_close(loaded(x), model.eval()(x))
    cfg = load_config(data=tmp_path, out=tmp_path / "run", model="timm/vit_tiny_patch16_224")
    assert cfg.model == "timm/vit_tiny_patch16_224"
    with pytest.raises(ConfigError, match="resnet18"):
        get_spec("timm/resnet181")
