"""A small, fast CNN for demos, smoke tests and CPU-only experiments."""

from __future__ import annotations

from torch import nn

from cxrlab.models.registry import register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Four conv blocks (16-32-64-128 channels), global average pooling, a linear head.

    About 0.3 M parameters; any input size that is a multiple of 16.
    """

    def __init__(self, num_classes: int, *, in_chans: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(in_chans, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 8 * w)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


@register_model(
    "small-cnn",
    image_size=64,
    cam_layer="features.3.5",  # last ReLU before the final pooling: 8x8 cells at 64 px
    recipe="modern",
    description="Small 4-block CNN for demos and CPU experiments (~0.3M parameters)",
    mean=0.5,
    std=0.25,
)
def small_cnn(num_classes: int, *, pretrained: bool = False, in_chans: int = 1, image_size=None):
    if pretrained:
        from cxrlab.errors import ConfigError

        raise ConfigError("small-cnn has no pretrained weights; drop --pretrained.")
    return SmallCNN(num_classes, in_chans=in_chans)
