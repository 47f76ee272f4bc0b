"""CAMs through pytorch-grad-cam: every registered model, hooks released, layers resolved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlab.errors import ConfigError
from cxrlab.explain.cam import compute_cams, overlay, resolve_layer, resolve_targets
from cxrlab.models import create_classifier, list_models

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
SIZE = 64


def _hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )  # fmt: skip


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list_models())
def test_gradcam_every_registered_model(name, images):
    torch.manual_seed(0)
    model = create_classifier(name, CLASSES, image_size=SIZE)
    inplace_before = [m for m in model.modules() if getattr(m, "inplace", False)]
    cams = compute_cams(model, images)
    assert cams.shape == (2, SIZE, SIZE)
    assert cams.dtype == np.float32
    assert np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert _hook_count(model) == 0, "CAM hooks left on the model"
    # In-place flags, parameter gradients and eval mode are restored; no .grad left behind.
    assert [m for m in model.modules() if getattr(m, "inplace", False)] == inplace_before
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def _manual_gradcam(model, x, layer: str) -> np.ndarray:
    """Grad-CAM by hand: saved activation is the layer output before any later in-place op."""
    store = {}

    def hook(_m, _a, out):
        store["a"] = out
        return out.clone()  # the network continues on a copy

    handle = model.get_submodule(layer).register_forward_hook(hook)
    logits = model(x)
    handle.remove()
    idx = logits.argmax(1)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(x)), idx].sum(), store["a"])
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True)).detach()
    cam = cam - cam.amin((2, 3), keepdim=True)
    cam = (cam / (cam.amax((2, 3), keepdim=True) + 1e-7))[:, 0].numpy().astype(np.float32)
    import cv2  # pytorch-grad-cam's own resize, so the comparison is exact up to float error

    return np.stack([cv2.resize(c, tuple(x.shape[-1:-3:-1])) for c in cam])


@pytest.mark.parametrize(
    "name,layer",
    [
        # A conv followed by nn.ReLU(inplace=True): without protection the saved activation is
        # overwritten by the ReLU (pytorch-grad-cam alone differs here by ~0.4).
        ("seed-cnn", "network.features.24"),
        # timm's BasicBlock: bn1 is followed by an in-place ReLU, bn2 by ``x += shortcut``.
        ("resnet18", "network.layer3.1.bn1"),
        ("resnet18", "network.layer3.1.bn2"),
        ("resnet18", "network.layer4"),
    ],
)
def test_gradcam_matches_hand_computation_despite_inplace_ops(name, layer, images):
    torch.manual_seed(0)
    model = create_classifier(name, CLASSES, image_size=SIZE).eval()
    with torch.no_grad():  # timm zero-initialises each block's last BN: no signal through it
        for mod_name, mod in model.named_modules():
            if mod_name.endswith("bn2"):
                mod.weight.fill_(1.0)
    ours = compute_cams(model, images, layer=layer)
    expected = _manual_gradcam(model, images, layer)
    assert expected.max() > 0.5  # a non-degenerate map
    # float32 sums over channels that nearly cancel (random weights) differ in the last digits;
    # without the protection the maps differ by 0.4-1.0.
    assert np.abs(ours - expected).mean() < 0.01
    assert np.abs(ours - expected).max() < 0.1


@pytest.mark.parametrize("method", ["gradcam++", "scorecam", "eigencam"])
def test_other_methods_on_seed_cnn(method, images):
    torch.manual_seed(0)
    model = create_classifier("seed-cnn", CLASSES, image_size=SIZE)
    cams = compute_cams(model, images, method=method)
    assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert _hook_count(model) == 0


def test_targets_predicted_true_name_and_index():
    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0]])
    assert resolve_targets(logits, classes=CLASSES).tolist() == [1, 0]
    assert resolve_targets(
        logits, classes=CLASSES, target="true", labels=["Viral Pneumonia", 0]
    ).tolist() == [2, 0]
    assert resolve_targets(logits, classes=CLASSES, target="Normal").tolist() == [1, 1]
    assert resolve_targets(logits, classes=CLASSES, target=2).tolist() == [2, 2]
    with pytest.raises(ConfigError, match="Did you mean 'Normal'"):
        resolve_targets(logits, classes=CLASSES, target="Normall")
    with pytest.raises(ConfigError, match="needs the images' true labels"):
        resolve_targets(logits, classes=CLASSES, target="true")
    with pytest.raises(ConfigError, match="out of range"):
        resolve_targets(logits, classes=CLASSES, target=3)


def test_target_changes_the_map(images):
    torch.manual_seed(0)
    model = create_classifier("resnet18", CLASSES, image_size=SIZE)
    a = compute_cams(model, images, target=0, layer="network.layer3")
    b = compute_cams(model, images, target=2, layer="network.layer3")
    assert not np.allclose(a, b)


def test_resolve_layer_suggests_and_lists():
    model = create_classifier("resnet18", CLASSES, image_size=SIZE)
    assert resolve_layer(model, "network.layer4") is model.network.layer4
    with pytest.raises(ConfigError) as info:
        resolve_layer(model, "network.layr4")
    msg = str(info.value)
    assert "Did you mean 'network.layer4'" in msg
    assert "network.layer3" in msg  # valid names are listed
    assert "default CAM layer is 'network.layer4'" in msg
    with pytest.raises(ConfigError, match="Unknown CAM method"):
        compute_cams(model, torch.rand(1, 1, SIZE, SIZE), method="gradcamm")


def test_hooks_released_when_cam_fails(images, monkeypatch):
    import pytorch_grad_cam

    model = create_classifier("resnet18", CLASSES, image_size=SIZE)

    def boom(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pytorch_grad_cam.GradCAM, "__call__", boom)
    with pytest.raises(RuntimeError, match="boom"):
        compute_cams(model, images)
    assert _hook_count(model) == 0
    assert all(p.requires_grad for p in model.parameters())


def test_batches_agree_with_one_pass(images):
    torch.manual_seed(0)
    model = create_classifier("resnet18", CLASSES, image_size=SIZE)
    together = compute_cams(model, images, batch_size=8)
    apart = compute_cams(model, images, batch_size=1)
    np.testing.assert_allclose(together, apart, atol=1e-5)


def test_overlay_blends_colormap_over_gray():
    gray = np.full((8, 8), 100, dtype=np.uint8)
    cam = np.zeros((8, 8), dtype=np.float32)
    cam[0, 0] = 1.0
    out = overlay(gray, cam, alpha=0.0)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out == 100).all()  # alpha 0: the image alone
    hot = overlay(gray, cam, alpha=1.0)
    # viridis (the colour-blind-safe default): 1.0 is yellow, 0.0 dark purple
    assert hot[0, 0, 0] > 200 and hot[0, 0, 1] > 200 and hot[0, 0, 2] < 60
    assert hot[1, 1, 0] < 90 and hot[1, 1, 1] < 10 and hot[1, 1, 2] > 70
    # A CAM at another resolution is resized to the image.
    assert overlay(gray, np.ones((2, 2)), alpha=0.5).shape == (8, 8, 3)


def test_coarse_cam_grid_is_recorded_and_noticed():
    from cxrlab.explain.cam import record_cam_resolution

    model = create_classifier("small-cnn", ["a", "b"], image_size=64)
    fine, coarse, quiet = {}, {"notice": "Some masks are empty."}, {}
    record_cam_resolution(fine, model, "network.features.3.5", 64)
    record_cam_resolution(coarse, model, "network.features.3.5", 32)
    record_cam_resolution(quiet, model, "network.features.3.5", 32, notify=False)
    assert fine == {"cam_resolution": [8, 8]}
    assert coarse["cam_resolution"] == [4, 4]
    assert coarse["notice"].startswith("Some masks are empty. The CAM layer")
    assert "too coarse" in coarse["notice"]
    assert quiet == {"cam_resolution": [4, 4]}
