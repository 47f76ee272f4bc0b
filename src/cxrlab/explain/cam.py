"""Class activation maps through pytorch-grad-cam, and their overlay on the radiograph.

:func:`compute_cams` runs Grad-CAM, Grad-CAM++, Score-CAM or Eigen-CAM in batches on the model's
device and returns maps at the input resolution, each scaled to [0, 1] by pytorch-grad-cam (min-max
per image). Hooks are always released, the model's in-place activations are switched off while the
hooks are on (an in-place ReLU after the hooked layer would overwrite the saved activation, and
DenseNet's in-place ReLUs break gradient hooks), and the model's flags are restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.config import CAM_METHODS, CamMethod
from cxrlab.errors import ConfigError, suggest

logger = logging.getLogger(__name__)


def layer_names(model: nn.Module, *, max_depth: int | None = None) -> list[str]:
    """Dotted names of the model's sub-modules, in definition order.

    Args:
        model: Any module (usually a :class:`~cxrlab.models.CxrClassifier`).
        max_depth: Keep names with at most this many dots plus one components (None: all).
    """
    names = [n for n, _ in model.named_modules() if n]
    if max_depth is not None:
        names = [n for n in names if n.count(".") < max_depth]
    return names


def resolve_layer(model: nn.Module, dotted_name: str) -> nn.Module:
    """Return the sub-module called ``dotted_name`` (e.g. ``"network.layer4"``).

    Raises:
        ConfigError: No such layer; the message suggests close matches and lists the model's
            layers down to three levels.
    """
    try:
        return model.get_submodule(dotted_name)
    except AttributeError:
        pass
    all_names = layer_names(model)
    shallow = layer_names(model, max_depth=3)
    listed = ", ".join(shallow[:40]) + (
        f", ... ({len(shallow) - 40} more)" if len(shallow) > 40 else ""
    )
    default = getattr(getattr(model, "meta", None), "cam_layer", "")
    hint = f" The model's default CAM layer is {default!r}." if default else ""
    raise ConfigError(
        f"Layer {dotted_name!r} does not exist in {type(model).__name__}."
        f"{suggest(dotted_name, all_names)}{hint} Pass a dotted module name such as: {listed}."
    )


#: Below this many cells on a side, a CAM is too coarse to tell lungs from borders.
MIN_CAM_CELLS = 7


def layer_resolution(model: nn.Module, layer: str, image_size: int) -> tuple[int, int]:
    """Spatial (H, W) of ``layer``'s output for one (1, C, S, S) input: the CAM's native grid."""
    module = resolve_layer(model, layer)
    shape: list[int] = []
    handle = module.register_forward_hook(lambda _m, _a, out: shape.extend(out.shape))
    meta = getattr(model, "meta", None)
    chans = getattr(meta, "in_chans", 1)
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, chans, image_size, image_size, device=param.device))
    finally:
        handle.remove()
        model.train(was_training)
    return (int(shape[-2]), int(shape[-1])) if len(shape) >= 4 else (1, 1)


def resolution_notice(resolution: tuple[int, int], layer: str) -> str | None:
    """A sentence warning that a CAM grid is too coarse for lung attention, or None."""
    if min(resolution) >= MIN_CAM_CELLS:
        return None
    h, w = resolution
    return (
        f"the CAM layer {layer} outputs only {h}x{w} cells, too coarse to separate lungs from "
        "borders reliably; choose a finer layer (--layer / cam_layer) or a larger image size"
    )


def record_cam_resolution(
    summary: dict, model: nn.Module, layer: str, image_size: int, *, notify: bool = True
) -> None:
    """Store ``layer``'s CAM grid in a lung-attention ``summary`` as ``cam_resolution``; when it
    is too coarse (and ``notify``), add :func:`resolution_notice` to its ``notice`` and log it."""
    from cxrlab.explain.attention import add_notice

    resolution = layer_resolution(model, layer, image_size)
    summary["cam_resolution"] = list(resolution)
    coarse = resolution_notice(resolution, layer)
    if coarse and notify:
        add_notice(summary, coarse)
        logger.warning("Lung attention: %s.", coarse)


def class_index(classes: Sequence[str], target: str | int) -> int:
    """Turn a class name or index into an output index, validating it against ``classes``."""
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= int(target) < len(classes):
            raise ConfigError(
                f"Target class index {target} is out of range for {len(classes)} classes "
                f"({', '.join(classes)}); use 0..{len(classes) - 1} or a class name."
            )
        return int(target)
    if target in classes:
        return list(classes).index(target)
    raise ConfigError(
        f"Unknown target class {target!r}.{suggest(str(target), classes)} The model's classes "
        f"are {', '.join(classes)}; or use 'predicted' or 'true'."
    )


def resolve_targets(
    logits: np.ndarray,
    *,
    classes: Sequence[str],
    target: str | int = "predicted",
    labels: Sequence[str | int] | None = None,
) -> np.ndarray:
    """Output index each CAM explains, one per image.

    Args:
        logits: (N, K) model outputs.
        classes: Class names in output order.
        target: ``"predicted"`` (argmax), ``"true"`` (needs ``labels``), a class name or an index.
        labels: True labels (names or indices), required for ``target="true"``.

    Returns:
        (N,) int64 indices.
    """
    n = len(logits)
    if isinstance(target, str) and target == "predicted":
        return np.asarray(logits).argmax(axis=1).astype(np.int64)
    if isinstance(target, str) and target == "true":
        if labels is None:
            raise ConfigError(
                "target='true' needs the images' true labels; pass labels= (one per image) or use "
                "target='predicted'."
            )
        if len(labels) != n:
            raise ConfigError(
                f"labels has {len(labels)} entries for {n} images; pass one per image."
            )
        return np.array([class_index(classes, lab) for lab in labels], dtype=np.int64)
    return np.full(n, class_index(classes, target), dtype=np.int64)


@contextlib.contextmanager
def _hook_safe(model: nn.Module) -> Iterator[None]:
    """Temporarily switch off in-place ops, parameter gradients and training mode.

    In-place activations (nn.ReLU/SiLU(inplace=True), timm's BatchNormAct2d act layers) can
    overwrite a hooked layer's output after it was saved, or invalidate gradient hooks. Parameters
    need no gradients for CAM (the input carries ``requires_grad``), which saves memory and leaves
    no ``.grad`` behind. Everything is restored on exit, exceptions included.
    """
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for m in inplace:
            m.inplace = False
        for p, _ in grads:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for m in inplace:
            m.inplace = True
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train(was_training)


def _continue_on_copy(module: nn.Module, args, output):
    return output.clone() if isinstance(output, torch.Tensor) else None


def _make_cam(method: str, model: nn.Module, layer: nn.Module):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM

    if method == "gradcam":
        return GradCAM(model=model, target_layers=[layer])
    if method == "gradcam++":
        return GradCAMPlusPlus(model=model, target_layers=[layer])
    if method == "eigencam":
        return EigenCAM(model=model, target_layers=[layer])
    if method == "scorecam":

        class _QuietScoreCAM(ScoreCAM):
            """Score-CAM with batched masked forwards and no tqdm bar on stderr."""

            batch_size = 64

            def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
                with torch.no_grad():
                    act = torch.from_numpy(activations).to(self.device)
                    up = F.interpolate(
                        act, size=input_tensor.shape[-2:], mode="bilinear", align_corners=True
                    )
                    flat = up.flatten(2)
                    lo = flat.min(dim=-1).values[..., None, None]
                    hi = flat.max(dim=-1).values[..., None, None]
                    up = (up - lo) / (hi - lo + 1e-8)
                    scores = []
                    for img, tgt, masks in zip(input_tensor, targets, up, strict=True):
                        for i in range(0, masks.shape[0], self.batch_size):
                            batch = img[None] * masks[i : i + self.batch_size, None]
                            scores.append(tgt(self.model(batch)).float().cpu())
                            # The forward hooks record every masked batch; nothing reads them.
                            self.activations_and_grads.activations.clear()
                    scores = torch.cat(scores).view(act.shape[0], act.shape[1])
                    return torch.softmax(scores, dim=-1).numpy()

        return _QuietScoreCAM(model=model, target_layers=[layer])
    raise ConfigError(
        f"Unknown CAM method {method!r}.{suggest(method, CAM_METHODS)} "
        f"Choose one of {', '.join(CAM_METHODS)}."
    )


def compute_cams(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    *,
    method: CamMethod = "gradcam",
    target: str | int = "predicted",
    labels: Sequence[str | int] | None = None,
    layer: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Class activation maps for a batch of images.

    Args:
        model: A :class:`~cxrlab.models.CxrClassifier` (or any classifier; then ``layer`` is
            required and class names are ``0..K-1``). It runs on its own device: move it to the GPU
            first to compute there.
        x: (N, C, S, S) float32 in [0, 1] (a (N, S, S) array is given a channel axis).
        method: ``"gradcam"``, ``"gradcam++"``, ``"scorecam"`` or ``"eigencam"`` (Eigen-CAM is
            class-agnostic: the first principal component of the layer's activations).
        target: Class each map explains: ``"predicted"``, ``"true"`` (needs ``labels``), a class
            name or an output index.
        labels: True labels (names or indices), one per image.
        layer: Dotted module name to hook; default ``model.meta.cam_layer``.
        batch_size: Images per forward/backward pass.

    Returns:
        (N, S, S) float32 in [0, 1], one map per image at the input's resolution.

    Raises:
        ConfigError: Unknown method, layer or target class.
    """
    if method not in CAM_METHODS:
        _make_cam(method, model, model)  # raises ConfigError with suggestions
    meta = getattr(model, "meta", None)
    layer = layer or getattr(meta, "cam_layer", "")
    if not layer:
        raise ConfigError("No CAM layer given and the model carries no default; pass layer=.")
    target_layer = resolve_layer(model, layer)
    x = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, S, S) or (N, S, S); got shape {tuple(x.shape)}.")
    n, _, h, w = x.shape
    if n == 0:
        return np.zeros((0, h, w), dtype=np.float32)
    device = next(model.parameters()).device
    classes = list(getattr(meta, "classes", ()) or [])

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    out = np.empty((n, h, w), dtype=np.float32)
    with _hook_safe(model):
        cam = _make_cam(method, model, target_layer)
        # Registered after pytorch-grad-cam's hooks: they save the layer's own output, the network
        # continues on a copy, so a later in-place op (``x += shortcut``, ReLU(inplace=True))
        # cannot overwrite the saved activation; gradients flow back through the copy unchanged.
        detach_handle = target_layer.register_forward_hook(_continue_on_copy)
        try:
            for start in range(0, n, batch_size):
                xb = x[start : start + batch_size].to(device)
                with torch.no_grad():
                    logits = model(xb).float().cpu().numpy()
                if not classes:
                    classes = [str(i) for i in range(logits.shape[1])]
                lab = None if labels is None else list(labels)[start : start + batch_size]
                idx = resolve_targets(logits, classes=classes, target=target, labels=lab)
                targets = [ClassifierOutputTarget(int(i)) for i in idx]
                with torch.enable_grad():
                    maps = cam(
                        input_tensor=xb.detach().clone().requires_grad_(True), targets=targets
                    )
                out[start : start + len(xb)] = maps
        finally:
            detach_handle.remove()
            cam.activations_and_grads.release()
    np.nan_to_num(out, copy=False, nan=0.0)
    np.clip(out, 0.0, 1.0, out=out)
    logger.debug("computed %d %s maps on layer %s", n, method, layer)
    return out


def overlay(
    gray: np.ndarray, cam: np.ndarray, *, alpha: float = 0.4, colormap: str = "viridis"
) -> np.ndarray:
    """Blend a CAM over a grayscale radiograph.

    Args:
        gray: (S, S) uint8 image.
        cam: (S, S) float in [0, 1] (resized bilinearly if its shape differs).
        alpha: Weight of the heat map (0: image only, 1: heat map only).
        colormap: A matplotlib colormap name.

    Returns:
        (S, S, 3) uint8 RGB.
    """
    from matplotlib import colormaps

    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"gray must be (S, S); got shape {gray.shape}.")
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != gray.shape:
        t = torch.from_numpy(cam)[None, None]
        cam = F.interpolate(t, size=gray.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    cam = np.clip(np.nan_to_num(cam), 0.0, 1.0)
    heat = colormaps[colormap](cam)[..., :3]
    base = (gray.astype(np.float32) / 255.0)[..., None]
    rgb = (1.0 - alpha) * base + alpha * heat
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
