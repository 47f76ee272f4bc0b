"""Test-time augmentation: average a predictor's probabilities over mild transforms of each image.

:class:`TTAPredictor` wraps any :class:`~cxrlab.inference.predictor.Predictor` (PyTorch, ONNX,
an ensemble). Each image is predicted as it is and under ``n - 1`` further transforms from a
fixed, deterministic list (:data:`TRANSFORMS`): small rotations (a few degrees), zooms of 0.95 to
1.05 and shifts of 2% of the side (4 px at 224), alone or combined. None flips the image or turns
it by 90 degrees: a chest radiograph has a side (the heart is on the patient's left, markers are
lettered), and the transforms stay within what positioning varies by. The warps use OpenCV
(``cv2.warpAffine``, bilinear, edges replicated), so the ONNX path imports no PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrlab.errors import ConfigError
from cxrlab.inference.predictor import DEFAULT_BATCH, Predictor


@dataclass(frozen=True)
class Transform:
    """One affine view of an image about its centre.

    Attributes:
        angle: Rotation in degrees (counter-clockwise).
        scale: Zoom factor (> 1 enlarges).
        dx: Horizontal shift as a fraction of the side (positive: right).
        dy: Vertical shift as a fraction of the side (positive: down).
    """

    angle: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.angle == 0 and self.scale == 1 and self.dx == 0 and self.dy == 0

    def describe(self) -> str:
        """E.g. ``"rotate +3 deg, zoom 1.03, shift (-2%, +2%)"``; ``"identity"``."""
        if self.is_identity:
            return "identity"
        parts = []
        if self.angle:
            parts.append(f"rotate {self.angle:+g} deg")
        if self.scale != 1:
            parts.append(f"zoom {self.scale:g}")
        if self.dx or self.dy:
            parts.append(f"shift ({100 * self.dx:+g}%, {100 * self.dy:+g}%)")
        return ", ".join(parts)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 or float32 -> the same shape and dtype, each image warped."""
        if self.is_identity:
            return images
        import cv2

        images = np.ascontiguousarray(images)
        n, h, w = images.shape
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), self.angle, self.scale)
        matrix[0, 2] += self.dx * w
        matrix[1, 2] += self.dy * h
        out = np.empty_like(images)
        for i in range(n):
            out[i] = cv2.warpAffine(
                images[i], matrix, (w, h), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )  # fmt: skip
        return out


#: The views, in order; ``tta=n`` uses the first ``n`` (identity first, so n = 1 is plain).
TRANSFORMS: tuple[Transform, ...] = (
    Transform(),
    Transform(angle=3.0),
    Transform(angle=-3.0),
    Transform(scale=1.05),
    Transform(scale=0.95),
    Transform(dx=0.02, dy=0.02),
    Transform(dx=-0.02, dy=-0.02),
    Transform(angle=2.0, scale=1.03, dx=-0.02, dy=0.02),
    Transform(angle=-2.0, scale=0.97, dx=0.02, dy=-0.02),
    Transform(angle=5.0, scale=1.02),
    Transform(angle=-5.0, scale=0.98),
    Transform(dx=0.02, dy=-0.02),
)

#: Largest ``tta``.
MAX_TTA = len(TRANSFORMS)


def tta_transforms(n: int) -> tuple[Transform, ...]:
    """The first ``n`` of :data:`TRANSFORMS` (ConfigError unless 1 <= n <= :data:`MAX_TTA`)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_TTA:
        raise ConfigError(
            f"--tta must be a whole number from 1 (off) to {MAX_TTA}, got {n!r}: it is how many "
            "views of each image (identity, small rotations, zooms, shifts) are averaged."
        )
    return TRANSFORMS[: int(n)]


def describe_tta(n: int) -> list[str]:
    """The views ``tta=n`` averages, in words (for metrics.json and logs)."""
    return [t.describe() for t in tta_transforms(n)]


class TTAPredictor:
    """A :class:`~cxrlab.inference.predictor.Predictor` averaging ``base`` over ``n`` views.

    The mean of the float64 probabilities of the views (rows still sum to 1). ``n = 1`` returns
    ``base``'s probabilities unchanged. Class names, input size, channels, preprocessing and
    back-end are ``base``'s.

    Args:
        base: Any predictor (torch, ONNX, ensemble).
        n: Views per image, 1 to :data:`MAX_TTA`.
    """

    def __init__(self, base: Predictor, n: int):
        self.transforms = tta_transforms(n)
        self.base = base
        self.tta = len(self.transforms)
        self.classes = tuple(base.classes)
        self.image_size = int(base.image_size)
        self.in_chans = int(base.in_chans)
        self.model_name = base.model_name
        self.backend = base.backend
        self.preprocess: dict[str, Any] | None = base.preprocess

    def predict_images(
        self, images: np.ndarray, *, batch_size: int = DEFAULT_BATCH, features: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, S, S) uint8 -> ((N, K) float64 mean probabilities over the views, None).

        Raises:
            ConfigError: ``features`` with more than one view (features of augmented views are
                not averaged; ask for them with ``tta = 1``).
        """
        if self.tta == 1:
            return self.base.predict_images(images, batch_size=batch_size, features=features)
        if features:
            raise ConfigError(
                "Penultimate features are not defined under test-time augmentation (the views "
                "would have to be averaged); request features with --tta 1."
            )
        total = None
        for t in self.transforms:
            probs, _ = self.base.predict_images(t.apply(images), batch_size=batch_size)
            total = probs if total is None else total + probs
        return total / self.tta, None

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 in [0, 1] -> (N, K) float64 mean probabilities over the views."""
        x = np.asarray(x, dtype=np.float32)
        total = None
        for t in self.transforms:
            view = x if t.is_identity else t.apply(x[:, 0])[:, None]
            probs = self.base.predict_proba(view)
            total = probs if total is None else total + probs
        return total / self.tta


def with_tta(predictor: Predictor, n: int) -> Predictor:
    """``predictor`` itself when ``n == 1``, else a :class:`TTAPredictor` (checks ``n``)."""
    tta_transforms(n)
    return predictor if n == 1 else TTAPredictor(predictor, n)
