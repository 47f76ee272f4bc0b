"""Explanations and shortcut probes: does the model look at the lungs?

* :mod:`cxrlab.explain.cam`: CAMs through pytorch-grad-cam (:func:`compute_cams`, :func:`overlay`,
  :func:`resolve_layer`).
* :mod:`cxrlab.explain.attention`: lung attention ratio, pointing game and their summaries.
* :mod:`cxrlab.explain.regions`: lung masks on the model's grid, fallback lung region, border frame.
* :mod:`cxrlab.explain.run`: :func:`explain_run` (``cxrlab explain``).
* :mod:`cxrlab.explain.probe`: :func:`probe_run` (``cxrlab probe``), writing ``probe.json``.
"""

from cxrlab.explain.attention import (
    attention_frame,
    lung_area_fraction,
    lung_attention_ratio,
    pointing_game,
    summarize_attention,
)
from cxrlab.explain.cam import CAM_METHODS, compute_cams, overlay, resolve_layer
from cxrlab.explain.probe import ProbeResult, probe_run, shortcut_rules, source_probe
from cxrlab.explain.regions import border_frame, central_lung_region, load_mask
from cxrlab.explain.run import ExplainResult, explain_run

__all__ = [
    "CAM_METHODS",
    "ExplainResult",
    "ProbeResult",
    "attention_frame",
    "border_frame",
    "central_lung_region",
    "compute_cams",
    "explain_run",
    "load_mask",
    "lung_area_fraction",
    "lung_attention_ratio",
    "overlay",
    "pointing_game",
    "probe_run",
    "resolve_layer",
    "shortcut_rules",
    "source_probe",
    "summarize_attention",
]
