"""Training: cached data, batched device augmentation, Lightning loop, run directories."""

from cxrlab.training.train import TrainResult, train

__all__ = ["TrainResult", "train"]
