"""Explanations and shortcut probes: does the model look at the lungs?

* :mod:`cxrlab.explain.cam`: CAMs through pytorch-grad-cam (:func:`compute_cams`, :func:`overlay`,
  :func:`resolve_layer`).
* :mod:`cxrlab.explain.attention`: lung attention ratio, pointing game and their summaries.
* :mod:`cxrlab.explain.regions`: lung masks on the model's grid, fallback lung region, border frame.
* :mod:`cxrlab.explain.run`: :func:`explain_run` (``cxrlab explain``).
* :mod:`cxrlab.explain.probes`: the shortcut probes as pure functions (model, images, lung
  fields in; scores out).
* :mod:`cxrlab.explain.shortcut_rules`: the rules that flag a shortcut and the plain summary.
* :mod:`cxrlab.explain.probe`: :func:`probe_run` (``cxrlab probe``), writing ``probe.json``, and
  :func:`probe_images` on in-memory images.

The CAM paper panel is drawn by :mod:`cxrlab.reports.panel`.
"""

from cxrlab.explain.attention import (
    attention_frame,
    lung_area_fraction,
    lung_attention_ratio,
    pointing_game,
    summarize_attention,
)
from cxrlab.explain.cam import CAM_METHODS, compute_cams, overlay, resolve_layer
from cxrlab.explain.probe import ProbeResult, probe_images, probe_run
from cxrlab.explain.probes import source_probe
from cxrlab.explain.regions import border_frame, central_lung_region, load_mask
from cxrlab.explain.run import ExplainResult, explain_run
from cxrlab.explain.shortcut_rules import shortcut_rules

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
    "probe_images",
    "probe_run",
    "resolve_layer",
    "shortcut_rules",
    "source_probe",
    "summarize_attention",
]
