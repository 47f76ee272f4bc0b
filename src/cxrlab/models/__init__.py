"""Model registry, the classifier wrapper and checkpoint loading."""

from cxrlab.models.checkpoint import load_classifier, resolve_checkpoint, save_classifier
from cxrlab.models.classifier import CxrClassifier, ModelMeta, count_parameters, create_classifier
from cxrlab.models.registry import get_spec, list_models, register_model

__all__ = [
    "CxrClassifier",
    "ModelMeta",
    "count_parameters",
    "create_classifier",
    "get_spec",
    "list_models",
    "load_classifier",
    "register_model",
    "resolve_checkpoint",
    "save_classifier",
]
