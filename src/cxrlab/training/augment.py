"""Batched augmentation on the training device: one fused affine warp plus intensity jitter.

Every sample gets its own random rotation, shift, scale and optional horizontal flip, applied to
the whole batch with a single ``affine_grid`` + ``grid_sample``, then brightness, contrast and
gamma jitter as tensor arithmetic: no Python loop per image, the same code on CPU and GPU. All
randomness comes from an explicit ``torch.Generator``, so a seed reproduces the augmentation.

We use PyTorch's own warp rather than kornia's ``RandomAffine`` because one fused call keeps the
GPU busy with a single kernel per batch and takes an explicit generator (kornia draws from the
global RNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms (0 disables one).

    Attributes:
        rotate: Maximum rotation in degrees (uniform in [-rotate, rotate]).
        shift: Maximum shift as a fraction of the side, per axis.
        scale: Maximum zoom as a fraction (uniform in [1 - scale, 1 + scale]).
        hflip: Flip horizontally with probability 0.5 (mirrors anatomy: off by default).
        brightness: Maximum additive brightness change, in [0, 1] intensity units.
        contrast: Maximum relative contrast change.
        gamma: Maximum relative gamma change (gamma in [1 - g, 1 + g]).
        fill: ``"zeros"`` fills uncovered pixels with black; ``"border"`` repeats the edge
            (Keras' ``fill_mode="nearest"``).
    """

    rotate: float = 10.0
    shift: float = 0.06
    scale: float = 0.1
    hflip: bool = False
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.1
    fill: Literal["zeros", "border"] = "zeros"


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def augment_batch(
    x: torch.Tensor, params: AugmentParams, generator: torch.Generator
) -> torch.Tensor:
    """Augment a batch.

    Args:
        x: (N, C, H, W) float in [0, 1], on any device.
        params: Transform ranges.
        generator: Random generator on ``x``'s device.

    Returns:
        (N, C, H, W) tensor of ``x``'s dtype, values in [0, 1].
    """
    n, device = x.shape[0], x.device
    if params.rotate or params.shift or params.scale or params.hflip:
        angle = _uniform(n, -params.rotate, params.rotate, generator, device) * (math.pi / 180)
        zoom = _uniform(n, 1 - params.scale, 1 + params.scale, generator, device)
        tx = _uniform(n, -params.shift, params.shift, generator, device) * 2  # grid units: [-1, 1]
        ty = _uniform(n, -params.shift, params.shift, generator, device) * 2
        flip = torch.ones(n, device=device)
        if params.hflip:
            flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # Output pixel -> input pixel (inverse map); the flip mirrors the input's x axis.
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin * flip, tx], dim=1),
                torch.stack([sin, cos, ty], dim=1),
            ],
            dim=1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=params.fill, align_corners=False)
    shape = (n,) + (1,) * (x.dim() - 1)
    if params.contrast:
        c = _uniform(n, 1 - params.contrast, 1 + params.contrast, generator, device).view(shape)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c.to(x.dtype) + mean
    if params.brightness:
        b = _uniform(n, -params.brightness, params.brightness, generator, device).view(shape)
        x = x + b.to(x.dtype)
    x = x.clamp(0, 1)
    if params.gamma:
        g = _uniform(n, 1 - params.gamma, 1 + params.gamma, generator, device).view(shape)
        x = x.clamp_min(1e-6).pow(g.to(x.dtype))
    return x
