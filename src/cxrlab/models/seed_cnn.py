"""The seed project's Keras CNN, reproduced layer for layer in PyTorch.

With 4 classes and a 299x299x1 input it has exactly the seed's 2,943,428 parameters: 2,900,868
trainable and 42,560 non-trainable (batch-norm running means and variances, as Keras counts them).
Batch norms use the Keras defaults: epsilon 1e-3, momentum 0.99 (PyTorch momentum 0.01).
"""

from __future__ import annotations

from torch import nn

from cxrlab.models.registry import register_model

_KERAS_BN = {"eps": 1e-3, "momentum": 0.01}


def _conv(cin: int, cout: int) -> list[nn.Module]:
    # Keras order: Conv2D(activation="relu") then BatchNormalization.
    return [
        nn.Conv2d(cin, cout, 3, padding="same"),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(cout, **_KERAS_BN),
    ]


def _down() -> list[nn.Module]:
    return [nn.AvgPool2d(2), nn.Dropout(0.25)]


class SeedCNN(nn.Module):
    """The seed CNN. Input (N, C, H, W); the flattened size follows from ``image_size``."""

    def __init__(self, num_classes: int, *, in_chans: int = 1, image_size: int = 299):
        super().__init__()
        self.features = nn.Sequential(
            *_conv(in_chans, 32),
            *_conv(32, 64), *_down(),
            *_conv(64, 64),
            *_conv(64, 64), *_down(),
            *_conv(64, 64), *_down(),
            *_conv(64, 64),
            *_conv(64, 64), *_down(),
        )  # fmt: skip
        side = image_size
        for _ in range(4):
            side //= 2
        flat = 64 * side * side
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.BatchNorm1d(flat, **_KERAS_BN),
            nn.Linear(flat, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.BatchNorm1d(128, **_KERAS_BN),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


@register_model(
    "seed-cnn",
    image_size=299,
    cam_layer="features.26",
    recipe="seed",
    description="The seed project's Keras CNN (2,943,428 parameters with 4 classes at 299x299)",
)
def seed_cnn(
    num_classes: int, *, pretrained: bool = False, in_chans: int = 1, image_size: int = 299
):
    if pretrained:
        from cxrlab.errors import ConfigError

        raise ConfigError("seed-cnn has no pretrained weights; drop --pretrained.")
    return SeedCNN(num_classes, in_chans=in_chans, image_size=image_size)
